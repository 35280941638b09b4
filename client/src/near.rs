//! The near cache: copies of cache values in this process's memory, kept coherent by the
//! server's invalidation stream (`Cache.Track`; the protocol is in cache.proto), with a stated
//! staleness bound.
//!
//! A hit costs a lookup in a bounded in-memory cache (quick_cache: sharded, lock-light reads,
//! S3-FIFO-like eviction by weight) and a clock read; nothing leaves the process. Coherence rests on three rules:
//!
//! - Only a value read after its key's bucket was confirmed tracked is kept, so every change
//!   made after the read is reported on the stream.
//! - A read in flight while its bucket changed, or while the stream reported a gap or was lost,
//!   is not kept (except across a change of this cache's own answered write, below). Each
//!   bucket has an epoch, bumped before a change's copy is dropped; a reader keeps its value
//!   only if the epoch is still the one it saw at the start, checked and kept under the
//!   bucket's guard, which the bump and drop also hold: either the reader sees the bump, or
//!   the drop comes after its insert and removes it.
//! - Copies are served only while the newest confirmed probe was sent less than
//!   `max_staleness` ago: the server confirms a probe once every change made before the probe
//!   reached it has been sent, and changes are applied before the confirmation that follows
//!   them. Both ends of the bound are this process's own clock readings, so a stalled or
//!   delayed stream, server, Redis connection or runtime makes every read go to the server
//!   after at most the bound; a lost stream or a gap drops every copy.
//!
//! A write through this near cache drops its own copy before and after (read-your-writes).
//! A Set is marked with a random origin that the server sends back with its change; when the
//! change arrives after the Set answered, it is not applied (cache.proto, Track step 6): every
//! read started after the answer sees the write already, and would otherwise often be lost to
//! its own write's late change. Concurrent
//! misses of one key share one read to the server while its answer is as fresh as a held copy,
//! so a hot key that just changed costs one round trip, not one per waiting caller.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::Weighter;
use tokio::sync::mpsc;
use tonic::Status;

use crate::cache::{CacheClient, Entry, GetOrLoadError, LoadOptions, SetOptions};
use crate::pb;
use own_writes::OwnWrites;
use stream::{Follower, follow};

mod own_writes;
mod stream;

/// Bytes counted per entry besides its key and value, for the capacity bound.
const ENTRY_OVERHEAD: u64 = 96;

/// Options of a near cache.
#[derive(Debug, Clone)]
pub struct NearOptions {
    /// Most bytes of keys and values (plus 96 bytes per entry) kept in memory.
    pub capacity_bytes: u64,
    /// The staleness bound: a cached value is never served later than this after a write that
    /// made it old. Cached values are served only while the newest probe the server confirmed
    /// was sent less than this long ago. A probe takes up to the server's heartbeat interval
    /// (100 ms by default) and a round trip to be confirmed; a few intervals rides out a
    /// scheduling hiccup without falling back to the server.
    pub max_staleness: Duration,
}

impl Default for NearOptions {
    fn default() -> Self {
        Self { capacity_bytes: 64 << 20, max_staleness: Duration::from_millis(500) }
    }
}

/// Counters of a near cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NearStats {
    /// Reads answered from memory.
    pub hits: u64,
    /// Reads that went to the server.
    pub misses: u64,
    /// Keys dropped because the server reported a change.
    pub invalidations: u64,
    /// Times every copy was dropped: a gap, or the stream lost.
    pub resets: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now, as counted against `capacity_bytes`.
    pub weighted_bytes: u64,
}

/// A held value. Stored by value, not behind an `Arc`: a hit then costs one reference count
/// (the value's), not three, on memory that every core reading a hot key shares.
#[derive(Debug, Clone)]
struct Copy {
    value: Bytes,
    /// When the server's copy expires, seen from here: the read's start plus the TTL it
    /// reported, so a copy never outlives the server's. An expired copy is dropped when next
    /// looked up, or evicted like any other.
    expires: Option<Instant>,
}

/// Counts a copy's key and value bytes, plus a fixed overhead, against the capacity.
#[derive(Debug, Clone, Copy)]
struct CopyWeight;

impl Weighter<String, Copy> for CopyWeight {
    fn weight(&self, key: &String, copy: &Copy) -> u64 {
        (key.len() + copy.value.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// The copies held, by key.
type Copies = quick_cache::sync::Cache<String, Copy, CopyWeight>;

/// What one stream connection established: the bucket layout, each bucket's tracking state
/// and epoch, and the way to ask for more buckets.
#[derive(Debug)]
struct Link {
    bucket_count: u32,
    /// Whether tracking of each bucket was asked for (it is never given up on a link).
    asked: Vec<AtomicBool>,
    /// Whether tracking of each bucket was confirmed.
    tracked: Vec<AtomicBool>,
    /// Bumped before a change to a key of the bucket drops its copy.
    epochs: Vec<AtomicU64>,
    /// Held while a bucket's epoch is bumped and its changed copy dropped, and while a read
    /// checks the epoch and keeps its copy: once a drop returns, no read that started before it
    /// can still insert an older value, not even for an instant.
    guards: Vec<std::sync::Mutex<()>>,
    requests: mpsc::UnboundedSender<pb::CacheTrackRequest>,
}

impl Link {
    fn guard(&self, bucket: usize) -> std::sync::MutexGuard<'_, ()> {
        self.guards[bucket].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops `key`'s copy ahead of or after a change: bumps its bucket's epoch, then removes
    /// the copy, under the bucket's guard.
    fn drop_copy(&self, copies: &Copies, key: &str) {
        let bucket = self.bucket(key);
        let _guard = self.guard(bucket);
        self.epochs[bucket].fetch_add(1, Ordering::SeqCst);
        copies.remove(key);
    }

    fn bucket(&self, key: &str) -> usize {
        let mut hash: u32 = 2_166_136_261;
        for byte in key.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(16_777_619);
        }
        (hash % self.bucket_count) as usize
    }
}

/// The state shared by the handles and the stream task.
#[derive(Debug)]
struct Shared {
    copies: Copies,
    link: RwLock<Option<Arc<Link>>>,
    /// Bumped whenever every copy is dropped (gap, lost stream, wide invalidation).
    generation: AtomicU64,
    /// Nanoseconds after `base` at which the newest confirmed probe was sent; 0 for none.
    confirmed: AtomicU64,
    base: Instant,
    max_staleness: Duration,
    /// Reads to the server in flight, by key, that concurrent misses of the key may share.
    reads: std::sync::Mutex<HashMap<String, Arc<Read>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    resets: AtomicU64,
    /// This cache's marked Sets (cache.proto, Track step 6).
    own_writes: OwnWrites,
}

/// One read of a key to the server, shared by the misses of the key that arrive while it is in
/// flight and while nothing says its answer is old (see [`Shared::join`]).
struct Read {
    /// Where the key's bucket and the cache stood when it started; `None` if it will not be
    /// kept, and then it is not shared either.
    ticket: Option<Ticket>,
    answer: tokio::sync::OnceCell<Result<Option<Entry>, Status>>,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Read").finish_non_exhaustive()
    }
}

/// A read's claim to keep what it reads: where its key's bucket and the cache stood when it
/// started.
struct Ticket {
    link: Arc<Link>,
    bucket: usize,
    epoch: u64,
    generation: u64,
    started: Instant,
}

impl Shared {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether copies may be served at `now`.
    fn fresh(&self, now: Instant) -> bool {
        let confirmed = self.confirmed.load(Ordering::SeqCst);
        confirmed != 0 && self.nanos(now).saturating_sub(confirmed) < self.max_staleness.as_nanos() as u64
    }

    fn lookup(&self, key: &str) -> Option<Entry> {
        let now = Instant::now();
        if !self.fresh(now) {
            return None;
        }
        let copy = self.copies.get(key)?;
        let ttl = match copy.expires {
            Some(at) if at <= now => {
                self.copies.remove(key);
                return None;
            }
            Some(at) => Some(at - now),
            None => None,
        };
        Some(Entry { value: copy.value, ttl })
    }

    fn link(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A ticket if `key`'s bucket is tracked; otherwise asks for it (once) and returns none:
    /// this read will not be kept.
    fn ticket(&self, key: &str) -> Option<Ticket> {
        let link = self.link()?;
        let bucket = link.bucket(key);
        if !link.tracked[bucket].load(Ordering::SeqCst) {
            if !link.asked[bucket].swap(true, Ordering::SeqCst) {
                let _ = link.requests.send(pb::CacheTrackRequest { track: vec![bucket as u32], probe: 0 });
            }
            return None;
        }
        Some(Ticket {
            epoch: link.epochs[bucket].load(Ordering::SeqCst),
            generation: self.generation.load(Ordering::SeqCst),
            started: Instant::now(),
            link,
            bucket,
        })
    }

    /// Whether changes of `key` are delivered now: its bucket is tracked on the current link.
    fn tracked(&self, key: &str) -> bool {
        self.link().is_some_and(|link| link.tracked[link.bucket(key)].load(Ordering::SeqCst))
    }

    /// Keeps what a ticketed read found, unless its bucket or the cache changed meanwhile.
    fn keep(&self, key: &str, ticket: &Ticket, entry: &Entry) {
        if !self.unchanged(ticket) {
            return;
        }
        let copy = Copy { value: entry.value.clone(), expires: entry.ttl.map(|ttl| ticket.started + ttl) };
        let _guard = ticket.link.guard(ticket.bucket);
        if !self.unchanged(ticket) {
            return;
        }
        self.copies.insert(key.to_owned(), copy);
        // Insert first, then check again: a reset or a new link (not under the guard) either
        // came before this check (seen here) or drops the copy after this insert.
        if !self.unchanged(ticket) {
            self.copies.remove(key);
        }
    }

    /// Whether what `ticket`'s read finds would still be kept: no change to its bucket, no
    /// reset and no new link since it started.
    fn unchanged(&self, ticket: &Ticket) -> bool {
        ticket.link.epochs[ticket.bucket].load(Ordering::SeqCst) == ticket.epoch
            && self.generation.load(Ordering::SeqCst) == ticket.generation
            && self.link().is_some_and(|now| Arc::ptr_eq(&now, &ticket.link))
    }

    /// The read of `key` this miss should await: one in flight whose answer is still as fresh
    /// as a held copy would be (it started after its bucket was tracked, nothing changed in the
    /// bucket since, and copies are being served), or else a new one. A miss that joined a read
    /// gets the same answer as if the copy had been kept a moment earlier.
    fn join(&self, key: &str) -> Arc<Read> {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(read) = reads.get(key)
            && read.ticket.as_ref().is_some_and(|t| self.unchanged(t))
            && self.fresh(Instant::now())
        {
            return read.clone();
        }
        let read = Arc::new(Read { ticket: self.ticket(key), answer: tokio::sync::OnceCell::new() });
        if read.ticket.is_some() {
            reads.insert(key.to_owned(), read.clone());
        }
        read
    }

    /// Forgets `read` once answered, unless a newer read of the key replaced it.
    fn finish(&self, key: &str, read: &Arc<Read>) {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if reads.get(key).is_some_and(|current| Arc::ptr_eq(current, read)) {
            reads.remove(key);
        }
    }

    /// Drops the copy of `key` ahead of a change to it.
    fn drop_key(&self, key: &str) {
        match self.link() {
            Some(link) => link.drop_copy(&self.copies, key),
            // No link, no tickets: no read can keep a copy until a new link is confirmed.
            None => {
                self.copies.remove(key);
            }
        }
    }

    /// Drops every copy, and every read in flight's claim to keep its result.
    fn reset(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.copies.clear();
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies one stream message, in the protocol's order; returns whether it confirmed a
    /// probe.
    fn apply(&self, link: &Link, message: pb::CacheTrackResponse) -> bool {
        let pb::CacheTrackResponse { gap, keys, origins, tracked, confirmed, .. } = message;
        if gap {
            self.reset();
            self.own_writes.forget_answered();
        }
        for (at, key) in keys.into_iter().enumerate() {
            if self.own_writes.arrived(origins.get(at).copied().unwrap_or(0)) {
                continue;
            }
            link.drop_copy(&self.copies, &key);
            self.invalidations.fetch_add(1, Ordering::Relaxed);
        }
        for bucket in tracked {
            if let Some(state) = link.tracked.get(bucket as usize) {
                state.store(true, Ordering::SeqCst);
            }
        }
        // Last: the changes before the confirmation are applied by now.
        if confirmed != 0 {
            self.confirmed.fetch_max(confirmed, Ordering::SeqCst);
        }
        confirmed != 0
    }

    /// Sends a probe stamped now, to be confirmed by the server.
    fn probe(&self, link: &Link) {
        let probe = self.nanos(Instant::now());
        let _ = link.requests.send(pb::CacheTrackRequest { track: Vec::new(), probe });
    }

    /// Forgets the link: nothing is served or kept until a new one is confirmed.
    fn unlink(&self) {
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.confirmed.store(0, Ordering::SeqCst);
        self.reset();
        self.own_writes.forget_answered();
    }
}

/// Forgets a shared read when its last waiter is done with it, answered or cancelled.
struct FinishRead<'a> {
    shared: &'a Shared,
    key: &'a str,
    read: &'a Arc<Read>,
}

impl Drop for FinishRead<'_> {
    fn drop(&mut self) {
        self.shared.finish(self.key, self.read);
    }
}

/// A near cache over a [`CacheClient`]: reads answered from memory while coherent (see the
/// module docs), writes through to the server. Cheap to clone; the clones share one cache and
/// one stream, which ends when the last clone is dropped. Make it inside a Tokio runtime.
#[derive(Debug, Clone)]
pub struct NearCache {
    client: CacheClient,
    shared: Arc<Shared>,
    _follower: Arc<Follower>,
}

impl CacheClient {
    /// A near cache of this namespace's entries in this process, opening its invalidation
    /// stream now; see [`NearCache`].
    pub fn near(&self, options: NearOptions) -> NearCache {
        // The item estimate only sizes the tables up front; the weight bounds the memory.
        let estimated_items = usize::try_from(options.capacity_bytes / 256).unwrap_or(usize::MAX).max(64);
        let copies = Copies::with_weighter(estimated_items, options.capacity_bytes, CopyWeight);
        let shared = Arc::new(Shared {
            copies,
            link: RwLock::new(None),
            generation: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            base: Instant::now(),
            max_staleness: options.max_staleness,
            reads: std::sync::Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            own_writes: OwnWrites::default(),
        });
        let follower = tokio::spawn(follow(self.clone(), Arc::downgrade(&shared)));
        NearCache { client: self.clone(), shared, _follower: Arc::new(Follower(follower)) }
    }
}

impl NearCache {
    /// Whether cached values are being served now: the stream is up and its newest heartbeat
    /// is within the staleness bound.
    pub fn is_coherent(&self) -> bool {
        self.shared.fresh(Instant::now())
    }

    /// Reads a key: from memory when a coherent copy is held, else from the server (keeping
    /// the value when the protocol allows).
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, Status> {
        if let Some(entry) = self.shared.lookup(key) {
            self.shared.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(entry));
        }
        // Boxed: a miss is a call to the server, whose future is large; this future, which
        // callers create (and move) for every hit, stays small.
        Box::pin(self.read_through(key)).await
    }

    /// A miss: reads `key` from the server, keeping the value when the protocol allows.
    async fn read_through(&self, key: &str) -> Result<Option<Entry>, Status> {
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        // Concurrent misses of one key (a hot key just changed) share one read.
        let read = self.shared.join(key);
        let _finish = FinishRead { shared: &self.shared, key, read: &read };
        read.answer
            .get_or_init(|| async {
                let entry = self.client.get(key).await;
                if let (Some(ticket), Ok(Some(entry))) = (&read.ticket, &entry) {
                    self.shared.keep(key, ticket, entry);
                }
                entry
            })
            .await
            .clone()
    }

    /// Reads many keys: those held from memory, the rest in one call; results in the order of
    /// `keys`.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, Status> {
        let mut results: Vec<Option<Entry>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (at, key) in keys.iter().enumerate() {
            let held = self.shared.lookup(key);
            if held.is_none() {
                missing.push((at, self.shared.ticket(key)));
            }
            results.push(held);
        }
        let hits = (keys.len() - missing.len()) as u64;
        self.shared.hits.fetch_add(hits, Ordering::Relaxed);
        self.shared.misses.fetch_add(missing.len() as u64, Ordering::Relaxed);
        if missing.is_empty() {
            return Ok(results);
        }
        let read = self.client.get_many(missing.iter().map(|(at, _)| keys[*at].clone())).await?;
        for ((at, ticket), entry) in missing.into_iter().zip(read) {
            if let (Some(ticket), Some(entry)) = (ticket, &entry) {
                self.shared.keep(&keys[at], &ticket, entry);
            }
            results[at] = entry;
        }
        Ok(results)
    }

    /// `CacheClient::get_or_load_with` behind the near cache: a held copy answers at once;
    /// otherwise the lease protocol loads once across every caller, and the next read keeps
    /// the value.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        options: LoadOptions,
        loader: F,
    ) -> Result<Vec<u8>, GetOrLoadError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        if let Some(entry) = self.shared.lookup(key) {
            self.shared.hits.fetch_add(1, Ordering::Relaxed);
            // A copy: the loader's contract is an owned value.
            return Ok(entry.value.to_vec());
        }
        // The lease protocol's answer carries no TTL for a loader's own value, so it is not
        // kept; the next `get` keeps the value with the server's TTL.
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        self.client.get_or_load_with(key, options, loader).await
    }

    /// Writes a key through to the server. The local copy is dropped before the write and
    /// again after it: a read of this process that raced the write and kept the old value is
    /// dropped too, so a read after this returns sees the write (read-your-writes) even before
    /// the stream reports it. The write's own change, arriving after this returned, is then
    /// not applied (see the module docs).
    pub async fn set(&self, key: &str, value: Vec<u8>, options: SetOptions) -> Result<bool, Status> {
        // Only a key of a tracked bucket has its change delivered, so only such a write is
        // marked: a mark of any other would wait for a change that never comes.
        let mark = self.shared.tracked(key).then(|| self.shared.own_writes.mark());
        let origin = mark.as_ref().map_or(0, |mark| mark.origin());
        self.shared.drop_key(key);
        let stored = self.client.set_marked(key, value, options, origin).await;
        self.shared.drop_key(key);
        if let Some(mark) = mark {
            mark.answered(matches!(stored, Ok(true)));
        }
        stored
    }

    /// Deletes keys on the server, dropping the local copies before and after (as [`Self::set`]).
    pub async fn delete(&self, keys: &[String]) -> Result<u64, Status> {
        keys.iter().for_each(|key| self.shared.drop_key(key));
        let deleted = self.client.delete(keys.iter().cloned()).await;
        keys.iter().for_each(|key| self.shared.drop_key(key));
        deleted
    }

    /// Invalidates by tag on the server. Every local copy is dropped before and after: this
    /// process does not know which keys carry the tags.
    pub async fn invalidate_tags(&self, tags: &[String]) -> Result<u64, Status> {
        self.shared.reset();
        let removed = self.client.invalidate_tags(tags.iter().cloned()).await;
        self.shared.reset();
        removed
    }

    /// Invalidates by prefix on the server; every local copy is dropped before and after.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, Status> {
        self.shared.reset();
        let removed = self.client.invalidate_prefix(prefix).await;
        self.shared.reset();
        removed
    }

    /// The counters, and the memory held now.
    pub fn stats(&self) -> NearStats {
        NearStats {
            hits: self.shared.hits.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            invalidations: self.shared.invalidations.load(Ordering::Relaxed),
            resets: self.shared.resets.load(Ordering::Relaxed),
            entries: self.shared.copies.len() as u64,
            weighted_bytes: self.shared.copies.weight(),
        }
    }

    /// The underlying client, for calls the near cache does not wrap.
    pub fn client(&self) -> &CacheClient {
        &self.client
    }
}
