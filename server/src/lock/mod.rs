//! The Lock service's domain logic over Redis; `grpc.rs` adapts it to the generated API.
//!
//! Data model, per lock, semaphore or election (all keys share one hash tag, see
//! `redis::keys::LockKeys`): a sorted set of holder tokens scored by lease expiry in Redis
//! milliseconds, a hash of grant details, the last fencing token, and for elections a short
//! history of terms. Every decision runs in one Lua script on Redis's clock (`TIME`), so the
//! server replicas agree on who holds what without trusting their own clocks.
//!
//! Waiting never polls. A waiter registers in [`Wakeups`] before it asks Redis; the attempt that
//! tells it to wait also marks the lock as waited for, and from then on until the lock is free
//! every release PUBLISHes the lock's key, which wakes the waiters on every replica (elections
//! announce every grant and release, for observers). Locks nobody waits for cost no PUBLISH. A
//! waiter that finds the lock held also sleeps no longer than the earliest lease's end, so a
//! holder that vanished without releasing costs at most its lease. Waiters for a permit queue
//! per replica: each announced release wakes one of them (see `redis::wakeups`), so a release
//! costs one retry per replica, not one per waiter.
//!
//! Grants the caller can no longer receive are given back ([`Locks::give_back`]): `Acquire`
//! runs in a task of its own and releases a grant whose caller went away before it arrived, an
//! attempt whose reply was lost releases its token on the same connection, and `Hold`/`Campaign`
//! release when their stream closes; a release Redis did not answer is retried with backoff for
//! as long as the lease could last. Each stream task renews its lease every third of the TTL and
//! reports `Lost` as soon as a renewal finds the lease gone, or, when Redis does not answer,
//! before the lease's end as measured on this server's clock from the moment the last
//! successful renewal was *sent* (which can only be earlier than Redis's own expiry) less
//! [`safety_margin`].
//!
//! One room on purpose, past 600 lines: acquiring, waiting, renewing, giving back and losing a
//! lease share one lease life cycle and its failure rules (no ghost grants, `lost` before the
//! lease can have ended), which are checked together more easily than across files; the gRPC
//! adapter and the scripts live beside it.

mod grpc;

pub use grpc::LockApi;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{LimitsConfig, LockConfig};
use crate::convert::{millis, wait_within};
use crate::drain::{Drain, SHUTDOWN_MESSAGE};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::keys::{self, LockKeys};
use crate::redis::scripts::{self, evalsha};
use crate::redis::wakeups::{QueuedWaiter, Wakeups};
use crate::redis::{RedisConn, RedisPool, timed};
use crate::telemetry::GaugeGuard;

/// The most permits a semaphore may have.
pub const MAX_LIMIT: u32 = 1000;
/// The shortest TTL of a lease held by a stream: renewals need room to happen.
pub const MIN_STREAM_TTL: Duration = Duration::from_millis(100);
/// Longest `owner` label.
const MAX_OWNER_BYTES: usize = 256;
/// Longest election candidate value.
const MAX_CANDIDATE_BYTES: usize = 4096;
/// How long Redis keeps the last fencing token (and an election's history) after the last
/// grant. Tokens stay increasing without it (see `acquire.lua`); it guards against a clock
/// that steps back while the lock is in use.
const FENCE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often an observer re-reads an election while Redis is unreachable.
const OBSERVE_RETRY: Duration = Duration::from_millis(250);
/// The first pause before a failed give-back of an abandoned lease is tried again; it doubles
/// up to [`GIVE_BACK_MAX_RETRY`].
const GIVE_BACK_FIRST_RETRY: Duration = Duration::from_millis(50);
/// The longest pause between attempts to give back an abandoned lease.
const GIVE_BACK_MAX_RETRY: Duration = Duration::from_secs(1);
/// Events buffered per stream before the stream task waits for the client.
const STREAM_BUFFER: usize = 4;

/// Which family an object belongs to: locks and elections of one name are distinct objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A lock or semaphore.
    Lock,
    /// A leader election.
    Election,
}

impl Kind {
    fn keys(self, ns: &Namespace, name: &str) -> LockKeys {
        match self {
            Self::Lock => keys::lock(ns.as_str(), name),
            Self::Election => keys::election(ns.as_str(), name),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Lock => "lock",
            Self::Election => "election",
        }
    }
}

/// What a caller asks for when acquiring.
#[derive(Debug, Clone, Default)]
pub struct LeaseRequest {
    /// The lock's (or election's) name.
    pub name: String,
    /// Lease TTL; `None` takes `lock.default_ttl`.
    pub ttl: Option<Duration>,
    /// How long to wait for a permit; `None` or zero tries once.
    pub wait: Option<Duration>,
    /// Permits; 0 and 1 both mean a mutual-exclusion lock.
    pub limit: u32,
    /// The operator-facing label (an election's candidate value).
    pub owner: String,
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The holder's secret.
    pub token: String,
    /// The grant's fencing token.
    pub fence: u64,
    /// The lease's end (Redis's clock) and remaining time.
    pub lease: LeaseTime,
}

/// When a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTime {
    /// The lease's end on Redis's clock.
    pub expires_at: SystemTime,
    /// The time the lease had left when Redis answered.
    pub ttl: Duration,
}

/// One event of a held lease's life (`Hold`, `Campaign`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldEvent {
    /// The lease was granted.
    Acquired(Grant),
    /// The lease was renewed.
    Renewed(LeaseTime),
    /// The lease is gone; the stream ends.
    Lost(LostReason),
    /// The wait ended without a grant; the stream ends.
    NotAcquired,
}

/// How long before the end of a lease, as last confirmed by Redis, a Hold that cannot renew
/// it tells its holder `lost`: a twentieth of the TTL, at least 50 ms and at most a quarter of
/// it (0.5 s for a 10 s lease). It covers the `lost` message's way to the holder and any drift
/// between Redis's clock and this replica's over one TTL; the delay of the renewal itself needs
/// no margin, since the lease is counted from when the renewal was sent, not answered.
pub fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 20).max(Duration::from_millis(50)).min(ttl / 4)
}

/// Why a held lease was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The lease was no longer in Redis at renewal.
    Revoked,
    /// Redis could not be reached to renew it before it expired.
    Unreachable,
    /// Redis refused the renewals for lack of memory until the lease expired.
    OutOfMemory,
}

impl LostReason {
    /// A sentence for humans.
    pub fn message(self) -> &'static str {
        match self {
            Self::Revoked => {
                "the lease is no longer held: it expired, was released or deleted, or Redis lost it"
            }
            Self::Unreachable => "Redis could not be reached to renew the lease before it expired",
            Self::OutOfMemory => {
                "Redis refused to renew the lease for lack of memory (maxmemory) until it expired"
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Unreachable => "unreachable",
            Self::OutOfMemory => "redis_out_of_memory",
        }
    }

    /// Why a lease was lost when its last renewal failed with `e`.
    fn after_failed_renewal(e: &Error) -> Self {
        if e.is_out_of_memory() { Self::OutOfMemory } else { Self::Unreachable }
    }
}

/// One holder, as shown to operators (never with its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's label.
    pub owner: String,
    /// Its grant's fencing token.
    pub fence: u64,
    /// When it was granted (Redis's clock).
    pub acquired_at: SystemTime,
    /// When its lease ends (Redis's clock).
    pub expires_at: SystemTime,
}

/// A lock's state, for `Inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inspection {
    /// Live holders, oldest grant first.
    pub holders: Vec<Holder>,
    /// Permits while held; 0 when free.
    pub limit: u32,
    /// The last fencing token granted, or 0 if Redis no longer has it.
    pub last_fence: u64,
}

/// One term of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The candidate value.
    pub candidate: String,
    /// The term's fencing token.
    pub fence: u64,
    /// When it was elected (Redis's clock).
    pub elected_at: SystemTime,
}

/// A stream of events produced by a task; an `Err` is the stream's last item.
pub type EventStream<T> = mpsc::Receiver<Result<T>>;

/// A validated lease request with its keys.
#[derive(Debug, Clone)]
struct Lease {
    kind: Kind,
    keys: LockKeys,
    ttl: Duration,
    wait: Duration,
    limit: u32,
    owner: String,
}

/// What one acquisition attempt found.
enum Attempt {
    /// Granted, with this many permits still free.
    Granted(Grant, u32),
    /// No permit free; the earliest lease ends in this long.
    Busy(Duration),
}

/// How a wait for a grant ended.
enum Waited {
    Granted(Grant),
    TimedOut,
    /// The caller went away.
    Gone,
}

/// The Lock service's domain logic.
pub struct Locks {
    redis: Arc<RedisPool>,
    limits: LimitsConfig,
    config: LockConfig,
    wakeups: Wakeups,
    drain: Drain,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks").field("redis", &self.redis).finish_non_exhaustive()
    }
}

/// A Redis millisecond timestamp as a time.
fn redis_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A lease's end from a script's `(expires_ms, now_ms)`.
fn lease_time(expires_ms: i64, now_ms: i64) -> LeaseTime {
    LeaseTime {
        expires_at: redis_time(expires_ms),
        ttl: Duration::from_millis(u64::try_from(expires_ms - now_ms).unwrap_or(0)),
    }
}

/// Parses grant details `fence:acquired_ms:owner`.
fn parse_term(details: &str) -> Option<(u64, SystemTime, String)> {
    let mut parts = details.splitn(3, ':');
    let fence = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    Some((fence, redis_time(at), parts.next()?.to_owned()))
}

/// The script call releasing `token`'s lease; elections announce every release to observers.
fn release_command(kind: Kind, keys: &LockKeys, token: &str) -> redis::Cmd {
    let mut cmd = evalsha(&scripts::LOCK_RELEASE, &[&keys.holders, &keys.info]);
    cmd.arg(token).arg(keys::LOCK_WAKE_CHANNEL).arg(if kind == Kind::Election { "1" } else { "0" });
    cmd
}

/// Runs one release by token (a give-back's attempt).
async fn release_by_token(conn: &mut RedisConn, cmd: &redis::Cmd) -> redis::RedisResult<()> {
    timed("lock.release", scripts::run::<i64>(conn, &scripts::LOCK_RELEASE, cmd)).await.map(drop)
}

fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn check_token(token: &str) -> Result<()> {
    if token.is_empty() || token.len() > 64 {
        return Err(Error::InvalidArgument("token must be the token of the grant".into()));
    }
    Ok(())
}

impl Locks {
    /// Builds the service and subscribes to lock wake-ups (waiting up to `startup_wait`).
    pub async fn start(
        redis: Arc<RedisPool>,
        limits: LimitsConfig,
        config: LockConfig,
        drain: Drain,
        startup_wait: Duration,
    ) -> Self {
        let wakeups =
            Wakeups::start(redis.hub(), keys::LOCK_WAKE_CHANNEL, startup_wait, "lock waiters").await;
        Self { redis, limits, config, wakeups, drain }
    }

    /// The Redis this service uses.
    pub fn redis(&self) -> &Arc<RedisPool> {
        &self.redis
    }

    /// Whether Redis answers and the wake-up subscription is live.
    pub async fn is_healthy(&self) -> bool {
        self.wakeups.is_connected() && self.redis.ping().await
    }

    fn check_name(&self, field: &str, name: &str) -> Result<()> {
        self.limits.check_name(field, name)
    }

    fn ttl(&self, ttl: Option<Duration>, min: Duration) -> Result<Duration> {
        check_ttl(ttl.unwrap_or(self.config.default_ttl), min, self.config.max_ttl)
    }

    /// Validates a request for a lease on a `kind` object; `min_ttl` is higher for streams.
    fn lease(&self, kind: Kind, ns: &Namespace, request: LeaseRequest, min_ttl: Duration) -> Result<Lease> {
        let LeaseRequest { name, ttl, wait, limit, owner } = request;
        let (field, max_owner) = match kind {
            Kind::Lock => ("name", MAX_OWNER_BYTES),
            Kind::Election => ("election", MAX_CANDIDATE_BYTES),
        };
        self.check_name(field, &name)?;
        let wait = wait.unwrap_or_default();
        if wait > self.config.max_wait {
            return Err(Error::InvalidArgument(format!(
                "wait {wait:?} exceeds the server's lock.max_wait of {:?}",
                self.config.max_wait
            )));
        }
        if limit > MAX_LIMIT {
            return Err(Error::InvalidArgument(format!("limit must be at most {MAX_LIMIT}, got {limit}")));
        }
        if owner.len() > max_owner {
            let what = if kind == Kind::Lock { "owner" } else { "candidate" };
            return Err(Error::InvalidArgument(format!("{what} must be at most {max_owner} bytes")));
        }
        Ok(Lease {
            kind,
            keys: kind.keys(ns, &name),
            ttl: self.ttl(ttl, min_ttl)?,
            wait,
            limit: limit.max(1),
            owner,
        })
    }

    /// One acquisition attempt: one script call.
    /// `others_waiting`: other callers on this replica wait for the lock (the grant must keep
    /// releases announced for them); `will_wait`: this caller waits if the lock is held.
    async fn try_acquire(
        &self,
        lease: &Lease,
        token: &str,
        others_waiting: bool,
        will_wait: bool,
    ) -> Result<Attempt> {
        let keys = &lease.keys;
        let mut cmd =
            evalsha(&scripts::LOCK_ACQUIRE, &[&keys.holders, &keys.info, &keys.fence, &keys.history]);
        let announce = if lease.kind == Kind::Election { keys::LOCK_WAKE_CHANNEL } else { "" };
        cmd.arg(token)
            .arg(millis(lease.ttl))
            .arg(lease.limit)
            .arg(&lease.owner)
            .arg(announce)
            .arg(millis(FENCE_TTL.max(lease.ttl * 2)))
            .arg(if others_waiting { "1" } else { "0" })
            .arg(if will_wait { "1" } else { "0" });
        let mut conn = self.redis.conn();
        let sent = Instant::now();
        let reply: Result<Vec<Value>> =
            timed("lock.acquire", scripts::run(&mut conn, &scripts::LOCK_ACQUIRE, &cmd))
                .await
                .map_err(Error::from_write);
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // If the script was sent, it may have run or may still run: give back a grant
                // nobody will ever learn of, on the same connection, so that on one Redis the
                // release runs after the grant whatever the network did to the reply.
                if matches!(e, Error::WriteOutcomeUnknown(_)) {
                    tokio::spawn(self.give_back(conn, lease.kind, keys, token, sent + lease.ttl));
                }
                return Err(e);
            }
        };
        let kind = lease.kind.label();
        match reply.as_slice() {
            [Value::Int(1), Value::Int(fence), Value::Int(expires), Value::Int(now), Value::Int(free)] => {
                metrics::counter!("rookery_lock_grants_total", "kind" => kind).increment(1);
                let grant = Grant {
                    token: token.to_owned(),
                    fence: u64::try_from(*fence).unwrap_or(0),
                    lease: lease_time(*expires, *now),
                };
                Ok(Attempt::Granted(grant, u32::try_from(*free).unwrap_or(0)))
            }
            [Value::Int(0), Value::Int(wait_ms)] => {
                metrics::counter!("rookery_lock_busy_total", "kind" => kind).increment(1);
                Ok(Attempt::Busy(Duration::from_millis(u64::try_from(*wait_ms).unwrap_or(0))))
            }
            [Value::Int(-1), Value::Int(held_limit)] => Err(Error::FailedPrecondition(format!(
                "this lock is held with limit {held_limit}, and this call asked for {}; every holder \
                 of one name must use the same limit",
                lease.limit
            ))),
            _ => Err(Error::unexpected("lock acquire", &Value::Array(reply))),
        }
    }

    /// Tries to acquire until granted, until `until` passes, or until `gone` resolves (the
    /// caller left). Never abandons a script call half-way: `gone` is only heeded while waiting.
    async fn acquire_waiting(
        &self,
        lease: &Lease,
        until: Option<Instant>,
        gone: impl Future<Output = ()>,
    ) -> Result<Waited> {
        tokio::pin!(gone);
        // Registered before the first attempt, so a release between an attempt and the wait
        // still wakes this waiter; a caller that only tries once never waits.
        let may_wait = until.is_none_or(|until| until > Instant::now());
        let mut waiter = may_wait.then(|| self.wakeups.queue(&lease.keys.holders));
        let token = new_token();
        loop {
            let others_waiting = waiter.as_ref().is_some_and(QueuedWaiter::others_waiting);
            let retry_in = match self.try_acquire(lease, &token, others_waiting, waiter.is_some()).await? {
                Attempt::Granted(grant, free) => {
                    // A release wakes one waiter per replica; if permits are left (several
                    // were freed), the next local waiter may take one too.
                    if let Some(waiter) = waiter.take().filter(|_| free > 0) {
                        waiter.leave_waking_next();
                    }
                    return Ok(Waited::Granted(grant));
                }
                Attempt::Busy(retry_in) => retry_in,
            };
            let now = Instant::now();
            let lease_end = now + retry_in + Duration::from_millis(1);
            let wake_at = match until {
                Some(until) if now >= until => return Ok(Waited::TimedOut),
                Some(until) => lease_end.min(until),
                None => lease_end,
            };
            let Some(waiter) = waiter.as_mut() else { return Ok(Waited::TimedOut) };
            let _waiting = GaugeGuard::new(metrics::gauge!("rookery_lock_waiting"));
            tokio::select! {
                () = waiter.changed() => {}
                () = tokio::time::sleep_until(wake_at) => {}
                () = &mut gone => return Ok(Waited::Gone),
                () = self.drain.draining() => return Err(Error::Unavailable(SHUTDOWN_MESSAGE.into())),
            }
        }
    }

    /// Acquires a lease on a lock, waiting up to the request's `wait` and never past
    /// `deadline` (the caller's time left). `Ok(None)`: still held by others after the wait.
    ///
    /// The attempt runs in a task of its own: if the caller goes away (its future is dropped)
    /// the task stops waiting, and gives back a grant that arrives after the caller left.
    pub async fn acquire(
        self: &Arc<Self>,
        ns: &Namespace,
        request: LeaseRequest,
        deadline: Option<Duration>,
    ) -> Result<Option<Grant>> {
        let lease = self.lease(Kind::Lock, ns, request, Duration::ZERO)?;
        let started = Instant::now();
        let (wait_until, deadline_first) = match (lease.wait, deadline) {
            (wait, _) if wait.is_zero() => (Some(started), false),
            (wait, Some(deadline)) if wait_within(deadline) < wait => {
                (Some(started + wait_within(deadline)), true)
            }
            (wait, _) => (Some(started + wait), false),
        };
        let (mut tx, rx) = oneshot::channel();
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = this.acquire_waiting(&lease, wait_until, tx.closed()).await;
            let answer = match outcome {
                Ok(Waited::Granted(grant)) => Ok(Some(grant)),
                Ok(Waited::TimedOut) if deadline_first => Err(Error::DeadlineExceeded(
                    "the lock was still held when the call's deadline came".into(),
                )),
                Ok(Waited::TimedOut) => Ok(None),
                Ok(Waited::Gone) => return,
                Err(e) => Err(e),
            };
            if let Err(Ok(Some(grant))) = tx.send(answer) {
                this.release_quietly(lease.kind, &lease.keys, &grant.token, lease.ttl).await;
            }
        });
        rx.await.map_err(|_| Error::Internal("the acquire task ended without an answer".into()))?
    }

    /// Releases a lease; `false` if the token held no live lease.
    pub async fn release(&self, kind: Kind, ns: &Namespace, name: &str, token: &str) -> Result<bool> {
        self.check_name(if kind == Kind::Lock { "name" } else { "election" }, name)?;
        check_token(token)?;
        self.release_keys(kind, &kind.keys(ns, name), token).await
    }

    async fn release_keys(&self, kind: Kind, keys: &LockKeys, token: &str) -> Result<bool> {
        let cmd = release_command(kind, keys, token);
        let mut conn = self.redis.conn();
        let released: i64 = timed("lock.release", scripts::run(&mut conn, &scripts::LOCK_RELEASE, &cmd))
            .await
            .map_err(Error::from_write)?;
        Ok(released == 1)
    }

    /// Gives back a lease nobody will use: the grant of a caller that was told it failed or went
    /// away, or the lease of a Hold that ended. The first attempt runs on `conn` before this
    /// returns; if Redis does not answer it, the attempt is repeated with backoff in a task of
    /// its own until Redis answers or until `until`, this replica's latest possible end of the
    /// lease. A release that only reached a Redis that was hanging, cut off or failing over
    /// would otherwise leave the lock to its TTL. Releasing by token is idempotent, so repeats
    /// are harmless.
    fn give_back(
        &self,
        mut conn: RedisConn,
        kind: Kind,
        keys: &LockKeys,
        token: &str,
        until: Instant,
    ) -> impl Future<Output = ()> + Send + 'static {
        let cmd = release_command(kind, keys, token);
        async move {
            if release_by_token(&mut conn, &cmd).await.is_ok() {
                return;
            }
            tokio::spawn(async move {
                let mut retry_in = GIVE_BACK_FIRST_RETRY;
                while Instant::now() + retry_in < until {
                    tokio::time::sleep(retry_in).await;
                    match release_by_token(&mut conn, &cmd).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::debug!(error = %e, "giving back an abandoned lease failed; retrying")
                        }
                    }
                    retry_in = (retry_in * 2).min(GIVE_BACK_MAX_RETRY);
                }
                // Counted rather than logged each time: an outage abandons many leases at once,
                // and each has ended by itself by now.
                metrics::counter!("rookery_lock_give_back_failures_total").increment(1);
                tracing::debug!(
                    "could not give back an abandoned lease while it lasted; it ended at its TTL"
                );
            });
        }
    }

    /// [`Self::give_back`] of a lease of `ttl` on any connection: a grant that reached its
    /// caller, or a Hold's, ran on Redis already.
    async fn release_quietly(&self, kind: Kind, keys: &LockKeys, token: &str, ttl: Duration) {
        self.give_back(self.redis.conn(), kind, keys, token, Instant::now() + ttl).await;
    }

    /// Moves a live lease's end to `ttl` from now; `None` if the lease was not live.
    pub async fn extend(
        &self,
        ns: &Namespace,
        name: &str,
        token: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<LeaseTime>> {
        self.check_name("name", name)?;
        check_token(token)?;
        let ttl = self.ttl(ttl, Duration::ZERO)?;
        self.extend_keys(&Kind::Lock.keys(ns, name), token, ttl).await
    }

    async fn extend_keys(&self, keys: &LockKeys, token: &str, ttl: Duration) -> Result<Option<LeaseTime>> {
        let mut cmd = evalsha(&scripts::LOCK_EXTEND, &[&keys.holders, &keys.info]);
        cmd.arg(token).arg(millis(ttl));
        let mut conn = self.redis.conn();
        let reply: Vec<Value> = timed("lock.extend", scripts::run(&mut conn, &scripts::LOCK_EXTEND, &cmd))
            .await
            .map_err(Error::from_write)?;
        match reply.as_slice() {
            [Value::Int(1), Value::Int(expires), Value::Int(now)] => Ok(Some(lease_time(*expires, *now))),
            [Value::Int(0)] => Ok(None),
            _ => Err(Error::unexpected("lock extend", &Value::Array(reply))),
        }
    }

    /// Holds a lease for as long as the returned stream's receiver lives (see the module doc).
    /// `Campaign` is a hold on an election that waits as long as it takes.
    pub fn hold(
        self: &Arc<Self>,
        kind: Kind,
        ns: &Namespace,
        request: LeaseRequest,
    ) -> Result<EventStream<HoldEvent>> {
        let lease = self.lease(kind, ns, request, MIN_STREAM_TTL)?;
        let until = match kind {
            Kind::Lock => Some(Instant::now() + lease.wait),
            Kind::Election => None,
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(self.clone().run_hold(lease, until, tx));
        Ok(rx)
    }

    async fn run_hold(
        self: Arc<Self>,
        lease: Lease,
        until: Option<Instant>,
        tx: mpsc::Sender<Result<HoldEvent>>,
    ) {
        let _open =
            GaugeGuard::new(metrics::gauge!("rookery_lock_held_streams", "kind" => lease.kind.label()));
        let sent = Instant::now();
        let grant = match self.acquire_waiting(&lease, until, tx.closed()).await {
            Ok(Waited::Granted(grant)) => grant,
            Ok(Waited::TimedOut) => {
                let _ = tx.send(Ok(HoldEvent::NotAcquired)).await;
                return;
            }
            Ok(Waited::Gone) => return,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let token = grant.token.clone();
        // The lease surely lasts until this instant on our clock: the request was sent no later.
        let mut valid_until = sent + grant.lease.ttl;
        if tx.send(Ok(HoldEvent::Acquired(grant))).await.is_err() {
            self.release_quietly(lease.kind, &lease.keys, &token, lease.ttl).await;
            return;
        }
        let renew_every = lease.ttl / 3;
        let retry_every = (lease.ttl / 10).max(Duration::from_millis(10));
        let margin = safety_margin(lease.ttl);
        let mut next_renewal = Instant::now() + renew_every;
        // A release by token elsewhere (always announced for elections: Resign) may publish on
        // this key: check at once rather than at the next renewal.
        let mut waiter = self.wakeups.register(&lease.keys.holders);
        loop {
            tokio::select! {
                () = tx.closed() => {
                    self.release_quietly(lease.kind, &lease.keys, &token, lease.ttl).await;
                    return;
                }
                () = self.drain.draining() => {
                    self.release_quietly(lease.kind, &lease.keys, &token, lease.ttl).await;
                    let _ = tx.send(Err(Error::Unavailable(SHUTDOWN_MESSAGE.into()))).await;
                    return;
                }
                () = waiter.changed() => {}
                () = tokio::time::sleep_until(next_renewal) => {}
            }
            let sent = Instant::now();
            // A renewal may take only until the lease's last confirmed end less the margin:
            // a Redis that hangs must not keep the holder believing in a lease that may be over.
            let believe_until = valid_until.checked_sub(margin).unwrap_or(sent);
            let renewal =
                tokio::time::timeout_at(believe_until, self.extend_keys(&lease.keys, &token, lease.ttl))
                    .await;
            let lost = match renewal.unwrap_or_else(|_| Err(Error::Unavailable("renewal timed out".into()))) {
                Ok(Some(renewed)) => {
                    valid_until = sent + renewed.ttl;
                    next_renewal = Instant::now() + renew_every;
                    if tx.send(Ok(HoldEvent::Renewed(renewed))).await.is_err() {
                        self.release_quietly(lease.kind, &lease.keys, &token, lease.ttl).await;
                        return;
                    }
                    continue;
                }
                Ok(None) => LostReason::Revoked,
                Err(e) if Instant::now() + retry_every < believe_until => {
                    tracing::warn!(error = %e, "lease renewal failed; retrying before it expires");
                    next_renewal = Instant::now() + retry_every;
                    continue;
                }
                Err(e) => LostReason::after_failed_renewal(&e),
            };
            metrics::counter!("rookery_lock_lost_total", "kind" => lease.kind.label(), "reason" => lost.label())
                .increment(1);
            if lost != LostReason::Revoked {
                // If Redis comes back before the lease ends there, free it for the next holder.
                tokio::spawn(self.give_back(self.redis.conn(), lease.kind, &lease.keys, &token, valid_until));
            }
            let _ = tx.send(Ok(HoldEvent::Lost(lost))).await;
            return;
        }
    }

    async fn read_state(&self, keys: &LockKeys) -> Result<(SystemTime, Inspection, Vec<Leader>)> {
        let cmd = evalsha(&scripts::LOCK_INSPECT, &[&keys.holders, &keys.info, &keys.fence, &keys.history]);
        let mut conn = self.redis.conn();
        let reply: Vec<Value> =
            timed("lock.inspect", scripts::run(&mut conn, &scripts::LOCK_INSPECT, &cmd)).await?;
        let bad = |reply: &[Value]| Error::unexpected("lock inspect", &Value::Array(reply.to_vec()));
        let [
            Value::Int(now),
            Value::Int(last_fence),
            Value::Int(limit),
            Value::Array(live),
            Value::Array(history),
        ] = reply.as_slice()
        else {
            return Err(bad(&reply));
        };
        let mut holders = Vec::with_capacity(live.len() / 2);
        for pair in live.chunks(2) {
            let [Value::BulkString(details), Value::Int(expires)] = pair else {
                return Err(bad(&reply));
            };
            let (fence, acquired_at, owner) =
                parse_term(&String::from_utf8_lossy(details)).ok_or_else(|| bad(&reply))?;
            holders.push(Holder { owner, fence, acquired_at, expires_at: redis_time(*expires) });
        }
        holders.sort_by_key(|h| h.fence);
        let mut terms = Vec::with_capacity(history.len());
        // Stored newest first; returned oldest first.
        for term in history.iter().rev() {
            let Value::BulkString(term) = term else {
                return Err(bad(&reply));
            };
            let (fence, elected_at, candidate) =
                parse_term(&String::from_utf8_lossy(term)).ok_or_else(|| bad(&reply))?;
            terms.push(Leader { candidate, fence, elected_at });
        }
        let inspection = Inspection {
            holders,
            limit: u32::try_from(*limit).unwrap_or(0),
            last_fence: u64::try_from(*last_fence).unwrap_or(0),
        };
        Ok((redis_time(*now), inspection, terms))
    }

    /// Describes a lock for operators.
    pub async fn inspect(&self, ns: &Namespace, name: &str) -> Result<Inspection> {
        self.check_name("name", name)?;
        Ok(self.read_state(&Kind::Lock.keys(ns, name)).await?.1)
    }

    /// Streams an election's leaders: the current state first, then every new term in order,
    /// and `None` whenever the election is found without a leader.
    pub fn observe(self: &Arc<Self>, ns: &Namespace, election: &str) -> Result<EventStream<Option<Leader>>> {
        self.check_name("election", election)?;
        let keys = Kind::Election.keys(ns, election);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(self.clone().run_observe(keys, tx));
        Ok(rx)
    }

    async fn run_observe(self: Arc<Self>, keys: LockKeys, tx: mpsc::Sender<Result<Option<Leader>>>) {
        let _open = GaugeGuard::new(metrics::gauge!("rookery_lock_observe_streams"));
        let mut waiter = self.wakeups.register(&keys.holders);
        // The fence of the last term reported, and whether "no leader" was the last report.
        let mut last_fence: Option<u64> = None;
        let mut reported_none = false;
        loop {
            let next_look = match self.read_state(&keys).await {
                Ok((now, state, terms)) => {
                    let current = state.holders.first();
                    let mut reports: Vec<Option<Leader>> = Vec::new();
                    match last_fence {
                        // First look: the current state only.
                        None => reports.push(current.map(|h| Leader {
                            candidate: h.owner.clone(),
                            fence: h.fence,
                            elected_at: h.acquired_at,
                        })),
                        Some(seen) => {
                            reports.extend(terms.into_iter().filter(|t| t.fence > seen).map(Some));
                            if let Some(h) = current.filter(|h| h.fence > seen)
                                && reports.last().and_then(|r| r.as_ref()).is_none_or(|r| r.fence < h.fence)
                            {
                                reports.push(Some(Leader {
                                    candidate: h.owner.clone(),
                                    fence: h.fence,
                                    elected_at: h.acquired_at,
                                }));
                            }
                        }
                    }
                    if current.is_none() && !reported_none && reports.last().is_none_or(Option::is_some) {
                        reports.push(None);
                    }
                    last_fence = Some(last_fence.unwrap_or(0).max(state.last_fence));
                    for report in reports {
                        reported_none = report.is_none();
                        if tx.send(Ok(report)).await.is_err() {
                            return;
                        }
                    }
                    // Look again when the leader's lease would end (it may vanish silently).
                    current.map(|h| {
                        let left = h.expires_at.duration_since(now).unwrap_or_default();
                        Instant::now() + left + Duration::from_millis(1)
                    })
                }
                Err(e) => {
                    tracing::debug!(error = %e, "observe: reading the election failed; retrying");
                    Some(Instant::now() + OBSERVE_RETRY)
                }
            };
            let sleep = async {
                match next_look {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = waiter.changed() => {}
                () = sleep => {}
                () = tx.closed() => return,
                () = self.drain.draining() => {
                    let _ = tx.send(Err(Error::Unavailable(SHUTDOWN_MESSAGE.into()))).await;
                    return;
                }
            }
        }
    }
}

/// Shortest lease of any kind: Redis counts expiries in whole milliseconds (PX), so anything
/// shorter would be rounded to a lease the caller did not ask for.
const MIN_TTL: Duration = Duration::from_millis(1);

/// `ttl` if it lies within [`MIN_TTL`] (or the caller's higher `min`) and `max`. The messages
/// name the bound in the units a user writes (`100ms`, `1h`), not Rust's debug form.
fn check_ttl(ttl: Duration, min: Duration, max: Duration) -> Result<Duration> {
    let min = min.max(MIN_TTL);
    if ttl < min {
        return Err(Error::InvalidArgument(format!(
            "ttl must be at least {}, got {}",
            humantime::format_duration(min),
            humantime::format_duration(ttl)
        )));
    }
    if ttl > max {
        return Err(Error::InvalidArgument(format!(
            "ttl {} exceeds the server's lock.max_ttl of {}",
            humantime::format_duration(ttl),
            humantime::format_duration(max)
        )));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds_are_named_in_human_units() {
        let hour = Duration::from_secs(3600);
        let message = |r: Result<Duration>| match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert_eq!(
            message(check_ttl(Duration::ZERO, Duration::ZERO, hour)),
            "ttl must be at least 1ms, got 0s"
        );
        assert_eq!(
            message(check_ttl(Duration::from_millis(20), MIN_STREAM_TTL, hour)),
            "ttl must be at least 100ms, got 20ms"
        );
        assert_eq!(
            message(check_ttl(Duration::from_secs(7200), Duration::ZERO, hour)),
            "ttl 2h exceeds the server's lock.max_ttl of 1h"
        );
        assert_eq!(check_ttl(MIN_TTL, Duration::ZERO, hour).unwrap(), MIN_TTL);
        assert_eq!(check_ttl(hour, MIN_STREAM_TTL, hour).unwrap(), hour);
    }

    #[test]
    fn terms_parse_with_colons_in_the_owner() {
        let (fence, at, owner) = parse_term("1764000000000001:1764000000000:host:8080").unwrap();
        assert_eq!(fence, 1_764_000_000_000_001);
        assert_eq!(at, UNIX_EPOCH + Duration::from_millis(1_764_000_000_000));
        assert_eq!(owner, "host:8080");
        assert_eq!(parse_term("1:2:").unwrap().2, "");
        assert!(parse_term("x:2:o").is_none());
        assert!(parse_term("1").is_none());
    }

    #[test]
    fn a_lease_lost_to_refused_renewals_says_whether_redis_was_out_of_memory() {
        let answer = |reply: &[u8]| redis::parse_redis_value(reply).unwrap().extract_error().unwrap_err();
        let oom = answer(b"-OOM command not allowed when used memory > 'maxmemory'.\r\n");
        assert_eq!(LostReason::after_failed_renewal(&Error::Redis(oom)), LostReason::OutOfMemory);
        let busy = answer(b"-BUSY Redis is busy running a script.\r\n");
        assert_eq!(LostReason::after_failed_renewal(&Error::Redis(busy)), LostReason::Unreachable);
        let timeout = Error::Unavailable("renewal timed out".into());
        assert_eq!(LostReason::after_failed_renewal(&timeout), LostReason::Unreachable);
    }

    #[test]
    fn lease_time_never_goes_negative() {
        let t = lease_time(1_000, 1_500);
        assert_eq!(t.ttl, Duration::ZERO);
        assert_eq!(lease_time(2_000, 1_500).ttl, Duration::from_millis(500));
    }
}
