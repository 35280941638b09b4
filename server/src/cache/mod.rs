//! The Cache service's domain logic over Redis; `grpc.rs` adapts it to the generated API.
//!
//! Data model, per entry (all keys of an entry share one hash tag, see `redis::keys`):
//! - the value key, a string with a TTL: the cached bytes;
//! - the lease key, a string with a TTL: the token of the one caller allowed to fill or
//!   refresh the entry right now.
//!
//! And per tag, an index of entry names (`keys::cache_tag_keys`) with a TTL at least that of its
//! longest-lived entry: buckets (sets) of at most [`TAG_BUCKET`] names, a sorted set listing
//! the live buckets, and the number of the bucket being filled. One set per tag grew with what
//! a namespace stored, and Redis frees an expiring set in one step (200,000 names: ~70 ms
//! during which every namespace's calls waited); a bucket costs a bounded time to free, to pop
//! and to fill. Each replica remembers which bucket it believes is being filled, so a tagged
//! write stays one script call (plus one more when another replica opened a new bucket).
//!
//! The lease protocol (`Fetch`/`Fill`/`ReleaseLease`) follows memcache leases: a miss grants
//! one caller a lease, other callers wait. Waiting uses no polling: a waiter registers in
//! [`Waiters`] *before* it asks Redis, and every fill, release, write or delete of a leased
//! entry is published on one pub/sub channel, which each replica's single subscriber turns into
//! a wake-up of its local waiters; they then ask Redis again (one round trip). Writes and
//! deletes cancel an outstanding lease, so a loader that read data before the write cannot
//! overwrite it. A waiter never waits past the lease's own expiry, so a lease holder that
//! vanished, or a wake-up lost while the pub/sub connection was down, costs at most one lease
//! TTL; after every pub/sub reconnect all waiters are woken to re-check.
//!
//! Every write script also publishes the entry on its namespace's changes channel, in the same
//! script, for near caches in clients (`near.rs`, `Cache.Track`).

mod grpc;
mod near;
mod read;
mod tags;

pub use grpc::CacheApi;
pub use near::{BUCKETS, Changes, NearFeeds, Watch, bucket_of};
pub use tags::TAG_BUCKET;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use redis::{FromRedisValue, Value};
use tokio::time::Instant;

use crate::config::{CacheConfig, LimitsConfig};
use crate::convert::{millis, wait_within};
use crate::drain::{Drain, SHUTDOWN_MESSAGE};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::keys::{self, CacheKeys};
use crate::redis::scripts::{self, evalsha};
use crate::redis::wakeups::Wakeups;
use crate::redis::{RedisPool, timed};
use crate::telemetry::GaugeGuard;

/// Keys examined per SCAN round trip during prefix invalidation.
const SCAN_BATCH: usize = 1000;

/// A value read from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Time left to live (`None` only for a key written without a TTL by something else).
    pub ttl: Option<Duration>,
}

/// When a write takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Whether or not the key exists.
    Always,
    /// Only if the key does not exist.
    IfAbsent,
    /// Only if the key exists.
    IfPresent,
}

impl Condition {
    fn redis_flag(self) -> &'static str {
        match self {
            Self::Always => "",
            Self::IfAbsent => "NX",
            Self::IfPresent => "XX",
        }
    }
}

/// How a write expires and is indexed.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Time to live; `None` takes `cache.default_ttl`.
    pub ttl: Option<Duration>,
    /// Random extra TTL, up to this.
    pub ttl_jitter: Option<Duration>,
    /// Tags to index the entry under.
    pub tags: Vec<String>,
    /// A near cache's mark on its own write, published with the change (0: none); see
    /// `near`.
    pub origin: u64,
}

/// A lease granted by [`Cache::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The token to present to [`Cache::fill`] or [`Cache::release_lease`].
    pub token: String,
    /// How long the lease stays valid.
    pub ttl: Duration,
}

/// What [`Cache::fetch`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The entry exists.
    Hit(Entry),
    /// The entry exists and is close to expiry; the caller should refresh it with the lease.
    Refresh(Entry, Lease),
    /// The entry is missing; the caller must load it and fill it with the lease.
    Fill(Lease),
    /// The entry is missing and another caller's fill did not arrive within the wait.
    WaitExpired,
}

/// Options of [`Cache::fetch`].
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// How long to wait for another caller's fill; `None` takes `cache.max_fetch_wait`.
    pub wait: Option<Duration>,
    /// Lifetime of a lease granted to this caller; `None` takes `cache.lease_ttl`.
    pub lease_ttl: Option<Duration>,
    /// Grant a refresh lease when the entry has less than this left to live.
    pub refresh_ahead: Option<Duration>,
    /// Time left before the caller's own deadline: the wait ends early enough to answer
    /// WAIT_EXPIRED before it (rather than the call failing with a timeout).
    pub deadline: Option<Duration>,
}

/// What [`Cache::invalidate`] removes.
#[derive(Debug, Clone)]
pub enum InvalidateTarget {
    /// Every entry written with any of these tags.
    Tags(Vec<String>),
    /// Every entry whose name starts with this.
    Prefix(String),
}

/// The Cache service's domain logic.
pub struct Cache {
    redis: Arc<RedisPool>,
    limits: LimitsConfig,
    config: CacheConfig,
    wakeups: Wakeups,
    near: NearFeeds,
    drain: Drain,
    /// The bucket each tag index (by its head key) is believed to be filling.
    tag_heads: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("redis", &self.redis).finish_non_exhaustive()
    }
}

/// Converts a PTTL reply (negative when the key has no TTL) to a duration.
fn ttl_from_pttl(pttl: i64) -> Option<Duration> {
    u64::try_from(pttl).ok().map(Duration::from_millis)
}

impl Cache {
    /// Builds the service and starts its pub/sub subscriber, waiting (up to `startup_wait`)
    /// for the subscription to be live, so that waiters are woken from the first call on.
    pub async fn start(
        redis: Arc<RedisPool>,
        limits: LimitsConfig,
        config: CacheConfig,
        drain: Drain,
        startup_wait: Duration,
    ) -> Self {
        let wakeups =
            Wakeups::start(redis.hub(), keys::CACHE_WAKE_CHANNEL, startup_wait, "Fetch waiters").await;
        let near = NearFeeds::start(redis.clone(), &config);
        Self { redis, limits, config, wakeups, near, drain, tag_heads: Default::default() }
    }

    /// Whether this service's Redis answers and its wake-up subscription is live.
    pub async fn is_healthy(&self) -> bool {
        self.wakeups.is_connected() && self.redis.ping().await
    }

    /// The near-cache feeds (`Cache.Track`).
    pub fn near(&self) -> &NearFeeds {
        &self.near
    }

    /// Resolves when the server starts shutting down.
    pub async fn draining(&self) {
        self.drain.draining().await;
    }

    /// The Redis this service uses.
    pub fn redis(&self) -> &Arc<RedisPool> {
        &self.redis
    }

    fn check_key(&self, key: &str) -> Result<()> {
        self.limits.check_name("key", key)
    }

    fn check_keys(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Err(Error::InvalidArgument("at least one key is required".into()));
        }
        if keys.len() > self.limits.max_batch_keys {
            return Err(Error::InvalidArgument(format!(
                "{} keys in one call; the limit is {} (limits.max_batch_keys)",
                keys.len(),
                self.limits.max_batch_keys
            )));
        }
        keys.iter().try_for_each(|k| self.check_key(k))
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.limits.max_value_bytes {
            return Err(Error::InvalidArgument(format!(
                "value is {} bytes; the limit is {} (limits.max_value_bytes)",
                value.len(),
                self.limits.max_value_bytes
            )));
        }
        Ok(())
    }

    fn check_tags(&self, tags: &[String]) -> Result<()> {
        for tag in tags {
            if tag.is_empty() || tag.len() > self.limits.max_key_bytes {
                return Err(Error::InvalidArgument(format!(
                    "tags must be 1 to {} bytes (limits.max_key_bytes)",
                    self.limits.max_key_bytes
                )));
            }
        }
        Ok(())
    }

    /// The TTL a write gets: its own or the default, validated, plus random jitter.
    fn effective_ttl(&self, ttl: Option<Duration>, jitter: Option<Duration>) -> Result<Duration> {
        let ttl = ttl.or(self.config.default_ttl).ok_or_else(|| {
            Error::InvalidArgument("ttl is required (this server has no cache.default_ttl)".into())
        })?;
        if ttl < Duration::from_millis(1) {
            return Err(Error::InvalidArgument("ttl must be at least 1ms".into()));
        }
        if ttl > self.config.max_ttl {
            return Err(Error::InvalidArgument(format!(
                "ttl {ttl:?} exceeds the limit {:?} (cache.max_ttl)",
                self.config.max_ttl
            )));
        }
        let jitter = match jitter {
            Some(j) if j > ttl => {
                return Err(Error::InvalidArgument("ttl_jitter must not exceed ttl".into()));
            }
            Some(j) if !j.is_zero() => Duration::from_millis(rand::rng().random_range(0..=millis(j))),
            _ => Duration::ZERO,
        };
        Ok(ttl + jitter)
    }

    /// Builds the script call of one write.
    fn set_command(
        &self,
        keys: &CacheKeys,
        value: &[u8],
        ttl: Duration,
        condition: Condition,
        changes: &str,
        origin: u64,
    ) -> redis::Cmd {
        let mut cmd = evalsha(&scripts::CACHE_SET, &[&keys.value, &keys.lease]);
        cmd.arg(value)
            .arg(millis(ttl))
            .arg(condition.redis_flag())
            .arg(keys::CACHE_WAKE_CHANNEL)
            .arg(changes)
            .arg(origin);
        cmd
    }

    /// Writes one entry; returns whether it was written (the condition held).
    pub async fn set(
        &self,
        ns: &Namespace,
        key: String,
        value: Vec<u8>,
        condition: Condition,
        options: &WriteOptions,
    ) -> Result<bool> {
        let stored = self.set_many(ns, &[(key, value, None)], condition, options).await?;
        Ok(stored[0])
    }

    /// Writes many entries, each `(name, value, own TTL)`, in one pipelined round trip (plus one
    /// for the tag indexes when tags are given); returns per entry whether it was written.
    ///
    /// Tags are recorded after the values: a crash in between leaves a value without its tag
    /// entry (an invalidation by tag would miss it until it expires), never a tag index without
    /// a TTL.
    pub async fn set_many(
        &self,
        ns: &Namespace,
        entries: &[(String, Vec<u8>, Option<Duration>)],
        condition: Condition,
        options: &WriteOptions,
    ) -> Result<Vec<bool>> {
        if entries.is_empty() {
            return Err(Error::InvalidArgument("at least one entry is required".into()));
        }
        if entries.len() > self.limits.max_batch_keys {
            return Err(Error::InvalidArgument(format!(
                "{} entries in one call; the limit is {} (limits.max_batch_keys)",
                entries.len(),
                self.limits.max_batch_keys
            )));
        }
        self.check_tags(&options.tags)?;
        let mut cmds = Vec::with_capacity(entries.len());
        let mut longest = Duration::ZERO;
        let changes = keys::cache_changes_channel(ns.as_str());
        for (name, value, own_ttl) in entries {
            self.check_key(name)?;
            self.check_value(value)?;
            let ttl = self.effective_ttl(own_ttl.or(options.ttl), options.ttl_jitter)?;
            longest = longest.max(ttl);
            cmds.push(self.set_command(
                &keys::cache(ns.as_str(), name),
                value,
                ttl,
                condition,
                &changes,
                options.origin,
            ));
        }
        let replies = timed("cache.set", scripts::run_batch(&self.redis, &cmds, &[&scripts::CACHE_SET]))
            .await
            .map_err(Error::from_write)?;
        // Record the tags of every entry that was written before reporting any failure, so a
        // partly failed batch leaves no written entry out of its tag indexes.
        let mut first_error = None;
        let mut stored = Vec::with_capacity(replies.len());
        for reply in replies {
            let written = reply
                .and_then(|value| i64::from_redis_value(value).map_err(redis::RedisError::from))
                .map_err(Error::from_write);
            match written {
                Ok(n) => stored.push(n == 1),
                Err(e) => {
                    stored.push(false);
                    first_error.get_or_insert(e);
                }
            }
        }
        let written: Vec<&str> = entries
            .iter()
            .zip(&stored)
            .filter(|(_, stored)| **stored)
            .map(|((name, _, _), _)| name.as_str())
            .collect();
        self.record_tags(ns, &options.tags, &written, longest).await?;
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(stored)
    }

    /// Deletes entries (cancelling their leases); returns how many existed.
    pub async fn delete(&self, ns: &Namespace, names: &[String]) -> Result<u64> {
        self.check_keys(names)?;
        self.delete_entries(ns, names.iter().map(|name| keys::cache(ns.as_str(), name)).collect()).await
    }

    async fn delete_entries(&self, ns: &Namespace, entries: Vec<CacheKeys>) -> Result<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let changes = keys::cache_changes_channel(ns.as_str());
        let cmds: Vec<redis::Cmd> = entries
            .iter()
            .map(|keys| {
                let mut cmd = evalsha(&scripts::CACHE_DELETE, &[&keys.value, &keys.lease]);
                cmd.arg(keys::CACHE_WAKE_CHANNEL).arg(&changes);
                cmd
            })
            .collect();
        let replies =
            timed("cache.delete", scripts::run_batch(&self.redis, &cmds, &[&scripts::CACHE_DELETE]))
                .await
                .map_err(Error::from_write)?;
        let mut deleted = 0;
        for reply in replies {
            let reply = reply.map_err(Error::from_write)?;
            deleted += u64::from_redis_value(reply).map_err(redis::RedisError::from)?;
        }
        Ok(deleted)
    }

    /// Removes entries by tag or by name prefix; returns how many were removed.
    pub async fn invalidate(&self, ns: &Namespace, target: &InvalidateTarget) -> Result<u64> {
        match target {
            InvalidateTarget::Tags(tags) => {
                if tags.is_empty() {
                    return Err(Error::InvalidArgument("at least one tag is required".into()));
                }
                self.check_tags(tags)?;
                let mut removed = 0;
                for tag in tags {
                    removed += self.invalidate_tag(ns, tag).await?;
                }
                Ok(removed)
            }
            InvalidateTarget::Prefix(prefix) => {
                if prefix.is_empty() {
                    return Err(Error::InvalidArgument(
                        "prefix must not be empty (to drop a whole namespace, use a tag)".into(),
                    ));
                }
                self.check_key(prefix)?;
                self.invalidate_prefix(ns, prefix).await
            }
        }
    }

    /// SCANs every node (the one Redis, or each Cluster master) for the prefix's keys (value
    /// and lease keys, so fills in flight are cancelled too) and deletes the entries found,
    /// batch by batch.
    async fn invalidate_prefix(&self, ns: &Namespace, prefix: &str) -> Result<u64> {
        let pattern = keys::cache_prefix_pattern(ns.as_str(), prefix);
        let mut removed = 0;
        for node in self.redis.nodes().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_BATCH);
                let (next, found): (u64, Vec<String>) =
                    timed("cache.scan", self.redis.query_node(&node, &scan)).await?;
                let mut entries: Vec<CacheKeys> =
                    found.iter().filter_map(|k| keys::cache_keys_from_scanned(k)).collect();
                entries.sort_by(|a, b| a.value.cmp(&b.value));
                entries.dedup();
                removed += self.delete_entries(ns, entries).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// Reads an entry with the lease protocol (see the module docs).
    pub async fn fetch(&self, ns: &Namespace, key: &str, options: &FetchOptions) -> Result<FetchOutcome> {
        self.check_key(key)?;
        let mut wait = options.wait.unwrap_or(self.config.max_fetch_wait).min(self.config.max_fetch_wait);
        if let Some(deadline) = options.deadline {
            // Keep a margin for the answer to travel back.
            wait = wait.min(wait_within(deadline));
        }
        let lease_ttl = options.lease_ttl.unwrap_or(self.config.lease_ttl);
        if lease_ttl < Duration::from_millis(1) || lease_ttl > self.config.max_ttl {
            return Err(Error::InvalidArgument(format!(
                "lease_ttl must be between 1ms and {:?} (cache.max_ttl)",
                self.config.max_ttl
            )));
        }
        let refresh_window = options.refresh_ahead.map_or(0, millis);
        let deadline = Instant::now() + wait;
        let keys = keys::cache(ns.as_str(), key);
        let started = Instant::now();
        loop {
            // Register before asking Redis: a fill that lands between the script and the wait
            // below still wakes us.
            let mut waiter = self.wakeups.register(&keys.value);
            let token = uuid::Uuid::new_v4().simple().to_string();
            let mut cmd = evalsha(&scripts::CACHE_FETCH, &[&keys.value, &keys.lease]);
            cmd.arg(&token).arg(millis(lease_ttl)).arg(refresh_window);
            let mut conn = self.redis.conn();
            let reply: Vec<Value> =
                timed("cache.fetch", scripts::run(&mut conn, &scripts::CACHE_FETCH, &cmd))
                    .await
                    .map_err(Error::from_write)?;
            let lease = || Lease { token: token.clone(), ttl: lease_ttl };
            let outcome = match reply.as_slice() {
                [Value::Int(0), value, Value::Int(pttl)] => Some(FetchOutcome::Hit(entry(value, *pttl)?)),
                [Value::Int(1), value, Value::Int(pttl)] => {
                    Some(FetchOutcome::Refresh(entry(value, *pttl)?, lease()))
                }
                [Value::Int(2)] => Some(FetchOutcome::Fill(lease())),
                [Value::Int(3), Value::Int(lease_pttl)] => {
                    let now = Instant::now();
                    if now >= deadline {
                        Some(FetchOutcome::WaitExpired)
                    } else {
                        // Wake on a fill/release/write, or when the holder's lease runs out
                        // (it may have died), whichever comes first.
                        let lease_end =
                            now + ttl_from_pttl(*lease_pttl).unwrap_or_default() + Duration::from_millis(1);
                        let _waiting = GaugeGuard::new(metrics::gauge!("rookery_cache_fetch_waiting"));
                        tokio::select! {
                            () = waiter.changed() => {}
                            () = tokio::time::sleep_until(lease_end.min(deadline)) => {}
                            () = self.drain.draining() => {
                                return Err(Error::Unavailable(SHUTDOWN_MESSAGE.into()));
                            }
                        }
                        None
                    }
                }
                _ => return Err(Error::unexpected("cache fetch", &Value::Array(reply))),
            };
            if let Some(outcome) = outcome {
                record_fetch(&outcome, started.elapsed());
                return Ok(outcome);
            }
        }
    }

    /// Stores a value under a lease; fails with FAILED_PRECONDITION if the lease is not current.
    pub async fn fill(
        &self,
        ns: &Namespace,
        key: &str,
        token: &str,
        value: &[u8],
        options: &WriteOptions,
    ) -> Result<()> {
        self.check_key(key)?;
        self.check_value(value)?;
        self.check_tags(&options.tags)?;
        check_token(token)?;
        let ttl = self.effective_ttl(options.ttl, options.ttl_jitter)?;
        let keys = keys::cache(ns.as_str(), key);
        let mut cmd = evalsha(&scripts::CACHE_FILL, &[&keys.value, &keys.lease]);
        cmd.arg(token)
            .arg(value)
            .arg(millis(ttl))
            .arg(keys::CACHE_WAKE_CHANNEL)
            .arg(keys::cache_changes_channel(ns.as_str()));
        let mut conn = self.redis.conn();
        let filled: i64 = timed("cache.fill", scripts::run(&mut conn, &scripts::CACHE_FILL, &cmd))
            .await
            .map_err(Error::from_write)?;
        if filled != 1 {
            return Err(Error::FailedPrecondition(
                "the lease is no longer valid (it expired, was released, or the key was written or \
                 deleted since); nothing was stored. Use your value for this request only, or \
                 Fetch again"
                    .into(),
            ));
        }
        self.record_tags(ns, &options.tags, &[key], ttl).await
    }

    /// Gives a lease back; returns false if it was no longer current.
    pub async fn release_lease(&self, ns: &Namespace, key: &str, token: &str) -> Result<bool> {
        self.check_key(key)?;
        check_token(token)?;
        let keys = keys::cache(ns.as_str(), key);
        let mut cmd = evalsha(&scripts::CACHE_RELEASE, &[&keys.value, &keys.lease]);
        cmd.arg(token).arg(keys::CACHE_WAKE_CHANNEL);
        let mut conn = self.redis.conn();
        let released: i64 = timed("cache.release", scripts::run(&mut conn, &scripts::CACHE_RELEASE, &cmd))
            .await
            .map_err(Error::from_write)?;
        Ok(released == 1)
    }
}

/// Counts `Fetch` callers waiting for someone else's fill right now
/// (`rookery_cache_fetch_waiting`), including when the wait is cancelled.
fn check_token(token: &str) -> Result<()> {
    if token.is_empty() || token.len() > 64 {
        return Err(Error::InvalidArgument("lease_token must be the token Fetch returned".into()));
    }
    Ok(())
}

fn entry(value: &Value, pttl: i64) -> Result<Entry> {
    match value {
        Value::BulkString(bytes) => Ok(Entry { value: bytes.clone(), ttl: ttl_from_pttl(pttl) }),
        other => Err(Error::unexpected("cache fetch value", other)),
    }
}

fn record_fetch(outcome: &FetchOutcome, waited: Duration) {
    let label = match outcome {
        FetchOutcome::Hit(_) => "hit",
        FetchOutcome::Refresh(..) => "refresh",
        FetchOutcome::Fill(_) => "fill",
        FetchOutcome::WaitExpired => "wait_expired",
    };
    metrics::counter!("rookery_cache_fetch_total", "outcome" => label).increment(1);
    metrics::histogram!("rookery_cache_fetch_wait_seconds").record(waited.as_secs_f64());
    let lookup =
        if matches!(outcome, FetchOutcome::Hit(_) | FetchOutcome::Refresh(..)) { "hit" } else { "miss" };
    metrics::counter!("rookery_cache_lookups_total", "outcome" => lookup).increment(1);
}
