//! Near-cache invalidation feeds (`Cache.Track`): which cache entries changed, sent to the
//! clients that keep copies of values in their own memory, with heartbeats that bound how stale
//! those copies can be.
//!
//! Every write script (`set.lua`, `delete.lua`, `fill.lua`) publishes the entry's value key on
//! its namespace's changes channel (`keys::cache_changes_channel`) in the same script as the
//! write; a Set marked with a near cache's origin publishes `<origin>|<value key>` instead, and
//! the origin travels on to the streams (cache.proto, Track step 6). Replicas of different
//! versions share these channels during a rolling update, so a new form of message must be one
//! that older replicas still read: one they skip is a change lost without a gap. A replica with near-cache streams in a namespace holds one [`Feed`] for it: one
//! subscription on the replica's pub/sub connection (the hub), and one task that hands each
//! change to the streams tracking the key's bucket, looked up in a bucket index, so a change
//! costs nothing for streams that never asked for its bucket.
//!
//! Heartbeats and probes. Every `cache.near_heartbeat_interval` the replica publishes the time
//! on its own heartbeat channel, which every feed's subscription includes. Redis sends a
//! subscriber its messages in the order it executed the publishes, so when a heartbeat comes
//! back, every change written before it was published has arrived before it, in the same
//! mailbox. A client's probe is confirmed by the first heartbeat published after the probe
//! arrived: every change made before the client sent it has then been queued for the client
//! ahead of the confirmation. If the pub/sub connection stalls or breaks, confirmations stop,
//! and clients stop serving their copies once their bound passes; a reconnection is a gap
//! (messages were lost), as is a stream's queue overflowing.
//!
//! Streams never block the feed: each has a bounded set of pending parts (changed keys up to
//! `cache.near_queue_keys`, acknowledged buckets as a bit set, one probe) that its gRPC
//! response stream takes whole. Overflow replaces the pending keys by one gap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::hub::{self, Item, Subscription, Topic};
use crate::redis::{RedisPool, keys, timed};

/// How many buckets keys hash into. A power of two; clients learn it from the first response.
pub const BUCKETS: u32 = 4096;

/// Messages a feed's hub mailbox holds before later ones count as missed (a gap for every
/// stream of the namespace).
const FEED_BUFFER: usize = 65_536;

/// How long a new feed waits for Redis to confirm its subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The bucket of a cache key: FNV-1a 32-bit of its UTF-8 bytes, modulo [`BUCKETS`]. Part of
/// the protocol (cache.proto), so every client language computes the same.
pub fn bucket_of(key: &str) -> u32 {
    let mut hash: u32 = 2_166_136_261;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(16_777_619);
    }
    hash % BUCKETS
}

/// One replica's near-cache feeds, one per namespace with streams, and its heartbeat.
pub struct NearFeeds {
    redis: Arc<RedisPool>,
    /// This replica's heartbeat channel.
    heartbeat_channel: String,
    interval: Duration,
    queue_keys: usize,
    /// Heartbeats carry the nanoseconds since this instant, so the replica reads back when it
    /// published each one on its own monotonic clock.
    epoch: Instant,
    feeds: Arc<Mutex<HashMap<Namespace, Weak<Feed>>>>,
    /// Serializes feed creation, so two first streams of a namespace share one subscription.
    creating: tokio::sync::Mutex<()>,
    heartbeat: JoinHandle<()>,
}

impl std::fmt::Debug for NearFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearFeeds")
            .field("heartbeat_channel", &self.heartbeat_channel)
            .finish_non_exhaustive()
    }
}

impl Drop for NearFeeds {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl NearFeeds {
    /// Starts the replica's heartbeat (it publishes only while some feed is open).
    pub fn start(redis: Arc<RedisPool>, config: &CacheConfig) -> Self {
        let replica = uuid::Uuid::new_v4().simple().to_string();
        let heartbeat_channel = keys::cache_heartbeat_channel(&replica);
        let epoch = Instant::now();
        let feeds: Arc<Mutex<HashMap<Namespace, Weak<Feed>>>> = Arc::default();
        let heartbeat = tokio::spawn(publish_heartbeats(
            redis.clone(),
            heartbeat_channel.clone(),
            config.near_heartbeat_interval,
            epoch,
            Arc::downgrade(&feeds),
        ));
        Self {
            redis,
            heartbeat_channel,
            interval: config.near_heartbeat_interval,
            queue_keys: config.near_queue_keys,
            epoch,
            feeds,
            creating: tokio::sync::Mutex::new(()),
            heartbeat,
        }
    }

    /// How often heartbeats are published.
    pub fn heartbeat_interval(&self) -> Duration {
        self.interval
    }

    /// Opens a stream's watch on `ns`, subscribing the namespace's feed if it is the first.
    pub async fn watch(&self, ns: &Namespace) -> Result<Watch> {
        if self.redis.is_cluster() {
            return Err(Error::FailedPrecondition(
                "near caches need a single Redis (or one behind Sentinel): on Redis Cluster, \
                 changes and heartbeats travel through different nodes in no common order, so no \
                 staleness bound could be kept"
                    .into(),
            ));
        }
        let feed = match self.live_feed(ns) {
            Some(feed) => feed,
            None => {
                let _creating = self.creating.lock().await;
                match self.live_feed(ns) {
                    Some(feed) => feed,
                    None => {
                        let feed = self.open_feed(ns).await?;
                        self.lock_feeds().insert(ns.clone(), Arc::downgrade(&feed));
                        feed
                    }
                }
            }
        };
        Ok(feed.join(self.queue_keys))
    }

    fn lock_feeds(&self) -> std::sync::MutexGuard<'_, HashMap<Namespace, Weak<Feed>>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live_feed(&self, ns: &Namespace) -> Option<Arc<Feed>> {
        let mut feeds = self.lock_feeds();
        let feed = feeds.get(ns).and_then(Weak::upgrade);
        if feed.is_none() {
            feeds.remove(ns);
        }
        feed
    }

    async fn open_feed(&self, ns: &Namespace) -> Result<Arc<Feed>> {
        let topics = vec![
            Topic::Channel(keys::cache_changes_channel(ns.as_str())),
            Topic::Channel(self.heartbeat_channel.clone()),
        ];
        let subscription =
            self.redis.hub().subscribe_for_server(topics, FEED_BUFFER, SUBSCRIBE_TIMEOUT).await.map_err(
                |e| match e {
                    hub::SubscribeError::NotConnected => Error::Unavailable(format!("{e}; retry shortly")),
                    hub::SubscribeError::Refused(_) => Error::FailedPrecondition(format!(
                        "{e}; the server's Redis user must be allowed the channels rk1:* (ACL &rk1:*)"
                    )),
                },
            )?;
        let index: Arc<Mutex<Index>> = Arc::default();
        let task = tokio::spawn(dispatch(
            subscription,
            index.clone(),
            ns.clone(),
            self.heartbeat_channel.clone(),
            self.epoch,
        ));
        Ok(Arc::new(Feed { index, task }))
    }
}

/// Publishes a heartbeat every `interval` while any feed of this replica is open. A failed
/// publish is only logged: without heartbeats, clients stop serving their copies, which is the
/// safe side.
async fn publish_heartbeats(
    redis: Arc<RedisPool>,
    channel: String,
    interval: Duration,
    epoch: Instant,
    feeds: Weak<Mutex<HashMap<Namespace, Weak<Feed>>>>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(feeds) = feeds.upgrade() else { return };
        let any_open = feeds.lock().unwrap_or_else(|e| e.into_inner()).values().any(|f| f.strong_count() > 0);
        drop(feeds);
        if !any_open {
            continue;
        }
        // Taken before the publish leaves: the age a client computes can only be too long.
        let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut conn = redis.conn();
        let published: redis::RedisResult<i64> = timed(
            "cache.near_heartbeat",
            redis::cmd("PUBLISH").arg(&channel).arg(nanos).query_async(&mut conn),
        )
        .await;
        if let Err(e) = published {
            tracing::debug!(error = %e, "near-cache heartbeat not published");
        }
    }
}

/// The streams of one namespace on this replica, by id and by tracked bucket.
#[derive(Debug, Default)]
struct Index {
    next_id: u64,
    watchers: HashMap<u64, Arc<Watcher>>,
    by_bucket: HashMap<u32, Vec<u64>>,
}

/// One namespace's feed: its subscription's dispatch task and its streams.
#[derive(Debug)]
struct Feed {
    index: Arc<Mutex<Index>>,
    task: JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        // The task owns the subscription: ending it unsubscribes.
        self.task.abort();
    }
}

fn lock_index(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

impl Feed {
    fn join(self: Arc<Self>, queue_keys: usize) -> Watch {
        let watcher = Arc::new(Watcher::new(queue_keys));
        let id = {
            let mut index = lock_index(&self.index);
            index.next_id += 1;
            let id = index.next_id;
            index.watchers.insert(id, watcher.clone());
            id
        };
        metrics::gauge!("rookery_cache_near_streams").increment(1.0);
        Watch { feed: self, id, watcher, tracked: Mutex::new(vec![0; BUCKETS as usize / 64]) }
    }
}

/// Hands every message of a feed's subscription to the streams concerned, in order.
async fn dispatch(
    subscription: Subscription,
    index: Arc<Mutex<Index>>,
    ns: Namespace,
    heartbeat_channel: String,
    epoch: Instant,
) {
    loop {
        match subscription.recv().await {
            Item::Message(message) if *message.channel == *heartbeat_channel => {
                let Some(published) = std::str::from_utf8(&message.payload)
                    .ok()
                    .and_then(|n| n.parse::<u64>().ok())
                    .map(|nanos| epoch + Duration::from_nanos(nanos))
                else {
                    continue;
                };
                for watcher in lock_index(&index).watchers.values() {
                    watcher.heartbeat(published);
                }
            }
            Item::Message(message) => {
                let Some((origin, name)) =
                    std::str::from_utf8(&message.payload).ok().and_then(|payload| change_of(&ns, payload))
                else {
                    continue;
                };
                let index = lock_index(&index);
                if let Some(ids) = index.by_bucket.get(&bucket_of(&name)) {
                    for id in ids {
                        if let Some(watcher) = index.watchers.get(id) {
                            watcher.changed(&name, origin);
                        }
                    }
                }
            }
            Item::Missed(_) | Item::Reconnected => {
                for watcher in lock_index(&index).watchers.values() {
                    watcher.gap();
                }
            }
        }
    }
}

/// The origin (0: none) and key name of a change message: a value key, or `<origin>|<value
/// key>` from a marked Set. A value key starts with the keys' prefix, never a digit, so the two
/// cannot be confused.
fn change_of(ns: &Namespace, payload: &str) -> Option<(u64, String)> {
    if let Some(name) = keys::cache_name_from_value_key(ns.as_str(), payload) {
        return Some((0, name));
    }
    let (origin, key) = payload.split_once('|')?;
    Some((origin.parse().ok()?, keys::cache_name_from_value_key(ns.as_str(), key)?))
}

/// What a stream has not sent yet.
#[derive(Debug, Default)]
struct Pending {
    gap: bool,
    keys: Vec<String>,
    /// The origin of each of `keys`, by position; empty while none has one.
    origins: Vec<u64>,
    /// Buckets whose tracking is to be acknowledged, one bit each (empty when none).
    tracked: Vec<u64>,
    /// The newest probe not yet confirmed, and when it arrived.
    probe: Option<(Instant, u64)>,
    /// A confirmed probe not yet sent.
    confirmed: Option<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.gap && self.keys.is_empty() && self.tracked.is_empty() && self.confirmed.is_none()
    }
}

/// One stream's pending parts, filled by the feed and emptied by the stream.
#[derive(Debug)]
struct Watcher {
    pending: Mutex<Pending>,
    ready: Notify,
    max_keys: usize,
}

impl Watcher {
    fn new(max_keys: usize) -> Self {
        Self { pending: Mutex::default(), ready: Notify::new(), max_keys }
    }

    fn update(&self, change: impl FnOnce(&mut Pending)) {
        let something_to_send = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut pending);
            !pending.is_empty()
        };
        if something_to_send {
            // Stores a permit when the stream is not waiting, so no wake-up is lost.
            self.ready.notify_one();
        }
    }

    fn changed(&self, name: &str, origin: u64) {
        let max_keys = self.max_keys;
        self.update(|pending| {
            if pending.gap {
                // The gap already drops every copy.
            } else if pending.keys.len() >= max_keys {
                pending.keys = Vec::new();
                pending.origins = Vec::new();
                pending.gap = true;
                metrics::counter!("rookery_cache_near_gaps_total", "cause" => "slow_client").increment(1);
            } else {
                if origin != 0 && pending.origins.len() < pending.keys.len() {
                    pending.origins.resize(pending.keys.len(), 0);
                }
                pending.keys.push(name.to_owned());
                if !pending.origins.is_empty() || origin != 0 {
                    pending.origins.push(origin);
                }
            }
        });
    }

    fn gap(&self) {
        self.update(|pending| {
            pending.keys = Vec::new();
            pending.origins = Vec::new();
            pending.gap = true;
        });
        metrics::counter!("rookery_cache_near_gaps_total", "cause" => "pubsub").increment(1);
    }

    /// A heartbeat published at `published` came back: it confirms a probe that arrived
    /// before then.
    fn heartbeat(&self, published: Instant) {
        self.update(|pending| {
            if let Some((arrived, probe)) = pending.probe
                && arrived < published
            {
                pending.confirmed = Some(probe);
                pending.probe = None;
            }
        });
    }
}

/// What a stream sends next: see `CacheTrackResponse`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Changes may have been lost: drop every copy.
    pub gap: bool,
    /// Changed keys in tracked buckets.
    pub keys: Vec<String>,
    /// The origin of each of `keys` (0: none), by position; empty when none has one.
    pub origins: Vec<u64>,
    /// Buckets whose tracking has started.
    pub tracked: Vec<u32>,
    /// A probe confirmed: every change before it arrived is in this or an earlier message.
    pub confirmed: Option<u64>,
}

/// One near-cache stream's membership in its namespace's feed; dropping it leaves.
#[derive(Debug)]
pub struct Watch {
    feed: Arc<Feed>,
    id: u64,
    watcher: Arc<Watcher>,
    /// The buckets this stream tracks (one bit each), to leave the index cleanly.
    tracked: Mutex<Vec<u64>>,
}

impl Watch {
    /// Starts sending changes of keys in `buckets`; the acknowledgement is queued after the
    /// index changed, so every change dispatched after it is sent.
    pub fn track(&self, buckets: &[u32]) -> Result<()> {
        if let Some(bad) = buckets.iter().find(|b| **b >= BUCKETS) {
            return Err(Error::InvalidArgument(format!("bucket {bad} is out of range: there are {BUCKETS}")));
        }
        if buckets.len() > BUCKETS as usize {
            return Err(Error::InvalidArgument(format!("at most {BUCKETS} buckets per request")));
        }
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut index = lock_index(&self.feed.index);
            for &bucket in buckets {
                let (word, bit) = (bucket as usize / 64, 1u64 << (bucket % 64));
                if tracked[word] & bit == 0 {
                    tracked[word] |= bit;
                    index.by_bucket.entry(bucket).or_default().push(self.id);
                }
            }
        }
        self.watcher.update(|pending| {
            if pending.tracked.is_empty() && !buckets.is_empty() {
                pending.tracked = vec![0; BUCKETS as usize / 64];
            }
            for &bucket in buckets {
                pending.tracked[bucket as usize / 64] |= 1 << (bucket % 64);
            }
        });
        Ok(())
    }

    /// Takes a client's probe (0: none), to be confirmed by the next heartbeat published after
    /// now; it replaces one not yet confirmed.
    pub fn probe(&self, probe: u64) {
        if probe != 0 {
            let arrived = Instant::now();
            self.watcher.update(|pending| pending.probe = Some((arrived, probe)));
        }
    }

    /// Waits for something to send, and takes all of it.
    pub async fn next(&self) -> Changes {
        loop {
            let taken = {
                let mut pending = self.watcher.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.is_empty() {
                    None
                } else {
                    let taken = std::mem::take(&mut *pending);
                    // The unconfirmed probe stays.
                    pending.probe = taken.probe;
                    Some(taken)
                }
            };
            if let Some(taken) = taken {
                let tracked = bits(&taken.tracked).collect();
                return Changes {
                    gap: taken.gap,
                    keys: taken.keys,
                    origins: taken.origins,
                    tracked,
                    confirmed: taken.confirmed,
                };
            }
            self.watcher.ready.notified().await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let tracked = std::mem::take(&mut *self.tracked.lock().unwrap_or_else(|e| e.into_inner()));
        let mut index = lock_index(&self.feed.index);
        index.watchers.remove(&self.id);
        for bucket in bits(&tracked) {
            if let Some(ids) = index.by_bucket.get_mut(&bucket) {
                ids.retain(|id| *id != self.id);
                if ids.is_empty() {
                    index.by_bucket.remove(&bucket);
                }
            }
        }
        metrics::gauge!("rookery_cache_near_streams").decrement(1.0);
    }
}

/// The buckets set in a bit set of [`BUCKETS`] bits (or none, if it is empty).
fn bits(set: &[u64]) -> impl Iterator<Item = u32> + '_ {
    (0..BUCKETS).filter(|b| set.get(*b as usize / 64).is_some_and(|word| word & (1 << (b % 64)) != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_fnv1a_as_the_protocol_states() {
        // FNV-1a 32-bit reference values: "" -> 0x811c9dc5, "a" -> 0xe40c292c,
        // "foobar" -> 0xbf9cf968.
        assert_eq!(bucket_of(""), 0x811c_9dc5 % BUCKETS);
        assert_eq!(bucket_of("a"), 0xe40c_292c % BUCKETS);
        assert_eq!(bucket_of("foobar"), 0xbf9c_f968 % BUCKETS);
        assert!(BUCKETS.is_power_of_two());
    }

    #[test]
    fn a_slow_stream_gets_one_gap_instead_of_unbounded_keys() {
        let watcher = Watcher::new(3);
        for n in 0..10 {
            watcher.changed(&format!("k{n}"), 0);
        }
        let pending = watcher.pending.lock().unwrap();
        assert!(pending.gap);
        assert!(pending.keys.is_empty());
    }

    #[test]
    fn origins_line_up_with_keys_once_any_change_has_one() {
        let watcher = Watcher::new(10);
        watcher.changed("a", 0);
        assert!(watcher.pending.lock().unwrap().origins.is_empty());
        watcher.changed("b", 7);
        watcher.changed("c", 0);
        let pending = watcher.pending.lock().unwrap();
        assert_eq!(pending.keys, ["a", "b", "c"]);
        assert_eq!(pending.origins, [0, 7, 0]);
    }

    #[test]
    fn a_change_message_is_a_value_key_or_an_origin_and_one() {
        let ns = Namespace::new("team-a").unwrap();
        let key = keys::cache("team-a", "x|y").value;
        assert_eq!(change_of(&ns, &key), Some((0, "x|y".to_owned())));
        assert_eq!(change_of(&ns, &format!("42|{key}")), Some((42, "x|y".to_owned())));
        assert_eq!(change_of(&ns, "42|elsewhere"), None);
        assert_eq!(change_of(&ns, &format!("x|{key}")), None);
    }
}
