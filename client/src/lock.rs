//! The Lock service's typed client: one-shot leases, leases held by a stream ([`LockClient::hold`]
//! and [`LockClient::with_lock`]), semaphores, and leader election as Rust streams.
//!
//! A held lock is watched by a task that reads the `Hold` stream. The lock counts as lost when
//! the server says so, when the stream breaks, or when no renewal has arrived for a whole lease
//! TTL (the server or the network may be gone) — whichever comes first. Code that writes under a
//! lock should pass the fencing token to the resource, and can also stop early by watching
//! [`LockContext::lost`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

use crate::ClientChannel;
use crate::convert::{duration, from_duration, from_timestamp};
use crate::pb;
use crate::pb::lock_client::LockClient as RawLockClient;

/// How to acquire a lock.
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// Lease TTL (server default when `None`). For a held lock, how long it outlives a server
    /// that stopped renewing it.
    pub ttl: Option<Duration>,
    /// How long to wait while others hold it (`None`: try once).
    pub wait: Option<Duration>,
    /// Permits: more than 1 makes a counting semaphore.
    pub limit: u32,
    /// A label shown to operators by `inspect`.
    pub owner: String,
}

impl LockOptions {
    /// Options with a lease TTL, trying once.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl: Some(ttl), ..Self::default() }
    }

    /// Waits up to `wait` for the lock.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Lets up to `limit` holders in at once.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Labels the holder for operators.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }
}

/// A lease granted by [`LockClient::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder's secret, for `release` and `extend`. Never log it.
    pub token: String,
    /// The grant's fencing token: pass it to the protected resource.
    pub fence: u64,
    /// When the lease ends, on Redis's clock.
    pub expires_at: SystemTime,
    /// The lease's time left when the server answered.
    pub ttl: Duration,
}

/// Why a held lock (or leadership) was lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockLost {
    /// The server found the lease gone from Redis (expired, released, deleted, data lost).
    #[error("lease revoked: {0}")]
    Revoked(String),
    /// The server could not reach Redis to renew the lease before it expired.
    #[error("lease could not be renewed: {0}")]
    Unreachable(String),
    /// Redis refused the renewals for lack of memory until the lease expired.
    #[error("lease could not be renewed, Redis is out of memory: {0}")]
    RedisOutOfMemory(String),
    /// The stream to the server broke or ended.
    #[error("the hold stream ended: {0}")]
    StreamEnded(String),
    /// No renewal arrived for a whole lease TTL.
    #[error("no renewal arrived within the lease TTL")]
    Silent,
    /// The lock was released by this holder.
    #[error("released")]
    Released,
}

/// Lets code running under a lock see whether it still holds it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LockContext {
    fence: u64,
    lost: watch::Receiver<Option<LockLost>>,
}

impl LockContext {
    /// The fencing token of this grant: pass it with every write to the protected resource.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Whether the lock is still held, as far as this client knows.
    pub fn is_held(&self) -> bool {
        self.lost.borrow().is_none()
    }

    /// Resolves when the lock is lost, with the reason.
    pub async fn lost(&self) -> LockLost {
        let mut lost = self.lost.clone();
        let reason = match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        // The sender lives as long as the `HeldLock`: dropping it released the lock.
        reason.unwrap_or(LockLost::Released)
    }
}

/// A lock held by a `Hold` stream: renewed by the server while this value lives, released when
/// it is dropped (the stream closes) or by [`HeldLock::release`].
#[derive(Debug)]
pub struct HeldLock {
    client: LockClient,
    name: String,
    token: String,
    context: LockContext,
    lost: Arc<watch::Sender<Option<LockLost>>>,
    watcher: JoinHandle<()>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // Dropping the stream cancels the call; the server then releases the lease.
        self.watcher.abort();
    }
}

impl HeldLock {
    /// The fencing token of this grant.
    pub fn fence(&self) -> u64 {
        self.context.fence
    }

    /// The holder's secret (works with `release` and `extend` too). Never log it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A handle for code running under the lock.
    pub fn context(&self) -> LockContext {
        self.context.clone()
    }

    /// Whether the lock is still held, as far as this client knows.
    pub fn is_held(&self) -> bool {
        self.context.is_held()
    }

    /// Resolves when the lock is lost, with the reason.
    pub async fn lost(&self) -> LockLost {
        self.context.lost().await
    }

    /// Releases the lock now and waits for the server's confirmation; returns whether the
    /// lease was still held.
    pub async fn release(self) -> Result<bool, Status> {
        set_lost(&self.lost, LockLost::Released);
        // Release by token before closing the stream, so the answer says whether the lease was
        // still held (closing first would race the server's own release).
        let released = self.client.release(self.name.clone(), self.token.clone()).await;
        self.watcher.abort();
        released
    }
}

/// Why [`LockClient::with_lock`] did not run its closure.
#[derive(Debug, thiserror::Error)]
pub enum WithLockError {
    /// The lock was still held by others after the wait.
    #[error("the lock is held by others")]
    NotAcquired,
    /// A call to the server failed.
    #[error("lock call failed: {0}")]
    Rpc(#[from] Status),
}

/// An event of a [`LockClient::campaign`] stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignEvent {
    /// This candidate leads.
    Elected(Lease),
    /// Leadership is lost; the stream ends.
    Lost(LockLost),
}

/// The stream of [`LockClient::campaign`]; dropping it resigns.
pub type CampaignStream = Pin<Box<dyn Stream<Item = Result<CampaignEvent, Status>> + Send>>;

/// The stream of [`LockClient::observe`].
pub type LeaderStream = Pin<Box<dyn Stream<Item = Result<Option<Leader>, Status>> + Send>>;

/// A leader seen by [`LockClient::observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// Its candidate value.
    pub candidate: String,
    /// Its term's fencing token.
    pub fence: u64,
    /// When it was elected, on Redis's clock.
    pub elected_at: SystemTime,
}

fn lost_reason(lost: pb::LockLost) -> LockLost {
    match pb::LockLostReason::try_from(lost.reason) {
        Ok(pb::LockLostReason::Unreachable) => LockLost::Unreachable(lost.message),
        Ok(pb::LockLostReason::RedisOutOfMemory) => LockLost::RedisOutOfMemory(lost.message),
        _ => LockLost::Revoked(lost.message),
    }
}

fn lease(
    token: String,
    fence: u64,
    expires_at: Option<prost_types::Timestamp>,
    ttl: Option<prost_types::Duration>,
) -> Lease {
    Lease {
        token,
        fence,
        expires_at: from_timestamp(expires_at),
        ttl: from_duration(ttl).unwrap_or_default(),
    }
}

/// Typed calls to `rookery.v1.Lock`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LockClient {
    raw: RawLockClient<ClientChannel>,
}

impl LockClient {
    pub(crate) fn new(channel: ClientChannel) -> Self {
        Self { raw: RawLockClient::new(channel) }
    }

    /// The generated stub, for calls with options this API does not expose.
    pub fn raw(&self) -> RawLockClient<ClientChannel> {
        self.raw.clone()
    }

    /// Acquires a lease (waiting up to `options.wait`); `None` if others still hold the lock.
    pub async fn acquire(
        &self,
        name: impl Into<String>,
        options: &LockOptions,
    ) -> Result<Option<Lease>, Status> {
        let pb::LockAcquireResponse { acquired, token, fence, expires_at, ttl } = self
            .raw
            .clone()
            .acquire(pb::LockAcquireRequest {
                name: name.into(),
                ttl: options.ttl.map(duration),
                wait: options.wait.map(duration),
                limit: options.limit,
                owner: options.owner.clone(),
            })
            .await?
            .into_inner();
        Ok(acquired.then(|| lease(token, fence, expires_at, ttl)))
    }

    /// Releases a lease; `false` if the token held no live lease.
    pub async fn release(&self, name: impl Into<String>, token: impl Into<String>) -> Result<bool, Status> {
        let request = pb::LockReleaseRequest { name: name.into(), token: token.into() };
        Ok(self.raw.clone().release(request).await?.into_inner().released)
    }

    /// Sets a live lease's remaining time to `ttl`; the new expiry, or `None` if it had expired.
    pub async fn extend(
        &self,
        name: impl Into<String>,
        token: impl Into<String>,
        ttl: Duration,
    ) -> Result<Option<SystemTime>, Status> {
        let request =
            pb::LockExtendRequest { name: name.into(), token: token.into(), ttl: Some(duration(ttl)) };
        let pb::LockExtendResponse { extended, expires_at } =
            self.raw.clone().extend(request).await?.into_inner();
        Ok(extended.then(|| from_timestamp(expires_at)))
    }

    /// A lock's holders and last fencing token.
    pub async fn inspect(&self, name: impl Into<String>) -> Result<pb::LockInspectResponse, Status> {
        Ok(self.raw.clone().inspect(pb::LockInspectRequest { name: name.into() }).await?.into_inner())
    }

    /// Holds a lock for as long as the returned value lives (see [`HeldLock`]); `None` if others
    /// still hold it after `options.wait`.
    pub async fn hold(
        &self,
        name: impl Into<String>,
        options: &LockOptions,
    ) -> Result<Option<HeldLock>, Status> {
        use pb::lock_hold_response::Event;
        let name = name.into();
        let mut stream = self
            .raw
            .clone()
            .hold(pb::LockHoldRequest {
                name: name.clone(),
                ttl: options.ttl.map(duration),
                wait: options.wait.map(duration),
                limit: options.limit,
                owner: options.owner.clone(),
            })
            .await?
            .into_inner();
        let first = stream.message().await?;
        let received = Instant::now();
        let pb::LockAcquired { token, fence, ttl, .. } = match first.and_then(|m| m.event) {
            Some(Event::Acquired(acquired)) => acquired,
            Some(Event::NotAcquired(_)) => return Ok(None),
            Some(Event::Lost(lost)) => return Err(Status::aborted(lost.message)),
            Some(Event::Renewed(_)) | None => {
                return Err(Status::internal("the hold stream did not start with a grant"));
            }
        };
        let (lost_tx, lost) = watch::channel(None);
        let lost_tx = Arc::new(lost_tx);
        let lease_ttl = from_duration(ttl).unwrap_or_default();
        let margin = safety_margin(lease_ttl);
        let valid_until = received + lease_ttl.saturating_sub(margin);
        let watcher = tokio::spawn(watch_hold(stream, valid_until, margin, lost_tx.clone()));
        Ok(Some(HeldLock {
            client: self.clone(),
            name,
            token,
            context: LockContext { fence, lost },
            lost: lost_tx,
            watcher,
        }))
    }

    /// Runs `work` while holding the lock `name`, then releases it. `work` gets a
    /// [`LockContext`] with the fencing token and a way to learn that the lock was lost meanwhile
    /// (it keeps running: it decides whether to stop). Fails with
    /// [`WithLockError::NotAcquired`] if others still hold the lock after `options.wait`.
    pub async fn with_lock<F, Fut, T>(
        &self,
        name: &str,
        options: &LockOptions,
        work: F,
    ) -> Result<T, WithLockError>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let held = self.hold(name, options).await?.ok_or(WithLockError::NotAcquired)?;
        let output = work(held.context()).await;
        // A failed release only delays the next holder until the lease's TTL; the work is done.
        let _ = held.release().await;
        Ok(output)
    }

    /// Campaigns for leadership of `election` as `candidate`: the stream yields
    /// [`CampaignEvent::Elected`] when this candidate leads and [`CampaignEvent::Lost`] if it
    /// stops leading. Dropping the stream resigns.
    pub async fn campaign(
        &self,
        election: impl Into<String>,
        candidate: impl Into<String>,
        ttl: Duration,
    ) -> Result<CampaignStream, Status> {
        use pb::lock_campaign_response::Event;
        let request = pb::LockCampaignRequest {
            election: election.into(),
            candidate: candidate.into(),
            ttl: Some(duration(ttl)),
        };
        let stream = self.raw.clone().campaign(request).await?.into_inner();
        Ok(Box::pin(stream.filter_map(|message| match message {
            Ok(pb::LockCampaignResponse { event: Some(Event::Elected(e)) }) => {
                Some(Ok(CampaignEvent::Elected(lease(e.token, e.fence, e.expires_at, e.ttl))))
            }
            Ok(pb::LockCampaignResponse { event: Some(Event::Lost(lost)) }) => {
                Some(Ok(CampaignEvent::Lost(lost_reason(lost))))
            }
            Ok(pb::LockCampaignResponse { event: None }) => None,
            Err(status) => Some(Err(status)),
        })))
    }

    /// Streams the leaders of `election`: the current state first, then every new leader;
    /// `None` when the election is found without one.
    pub async fn observe(&self, election: impl Into<String>) -> Result<LeaderStream, Status> {
        let stream = self
            .raw
            .clone()
            .observe(pb::LockObserveRequest { election: election.into() })
            .await?
            .into_inner();
        Ok(Box::pin(stream.map(|message| {
            message.map(|m| {
                m.leader.map(|l| Leader {
                    candidate: l.candidate,
                    fence: l.fence,
                    elected_at: from_timestamp(l.elected_at),
                })
            })
        })))
    }

    /// Gives up leadership; `false` if the token did not lead.
    pub async fn resign(
        &self,
        election: impl Into<String>,
        token: impl Into<String>,
    ) -> Result<bool, Status> {
        let request = pb::LockResignRequest { election: election.into(), token: token.into() };
        Ok(self.raw.clone().resign(request).await?.into_inner().resigned)
    }
}

/// How long before a lease's end, as last heard from the server, the client stops trusting it
/// when the server falls silent: the server's own margin (a twentieth of the TTL, at least
/// 50 ms, at most a quarter of it). It covers the delay of the message that carried the lease's
/// time left, which the arrival time cannot see, and clock drift over one TTL.
fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 20).max(Duration::from_millis(50)).min(ttl / 4)
}

/// Reads a `Hold` stream until the lock is lost, and says why through `lost`. Each message
/// moves the local deadline to its arrival plus the lease's time left, less `margin`; silence
/// past it counts as lost, so the holder stops trusting the lease before it can have ended on
/// Redis's clock.
async fn watch_hold(
    mut stream: Streaming<pb::LockHoldResponse>,
    mut valid_until: Instant,
    margin: Duration,
    lost: Arc<watch::Sender<Option<LockLost>>>,
) {
    use pb::lock_hold_response::Event;
    let reason = loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = tokio::time::sleep_until(valid_until) => break LockLost::Silent,
        };
        match message {
            Ok(Some(pb::LockHoldResponse { event: Some(Event::Renewed(renewed)) })) => {
                valid_until =
                    Instant::now() + from_duration(renewed.ttl).unwrap_or_default().saturating_sub(margin);
            }
            Ok(Some(pb::LockHoldResponse { event: Some(Event::Lost(reason)) })) => break lost_reason(reason),
            Ok(Some(_)) => {}
            Ok(None) => break LockLost::StreamEnded("the server ended the stream".into()),
            Err(status) => break LockLost::StreamEnded(status.message().to_owned()),
        }
    };
    set_lost(&lost, reason);
}

/// Records why the lock was lost, unless a reason was already recorded.
fn set_lost(lost: &watch::Sender<Option<LockLost>>, reason: LockLost) {
    lost.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(reason);
        true
    });
}
