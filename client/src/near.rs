//! The near cache: copies of cache values in this process's memory, kept coherent by the
//! server's invalidation stream (`Cache.Track`; the protocol is in cache.proto), with a stated
//! staleness bound.
//!
//! A hit costs a lookup in a bounded in-memory cache (quick_cache: sharded, lock-light reads,
//! S3-FIFO-like eviction by weight) and a clock read; nothing leaves the process. Coherence
//! rests on three rules:
//!
//! - Only a value read after its key's bucket was confirmed tracked is kept, so every change
//!   made after the read is reported on the stream.
//! - A read in flight while its bucket changed, or while the stream reported a gap or was lost,
//!   is not kept (except across a change of this cache's own answered write, below). Each
//!   bucket has an epoch, bumped before a change's copy is dropped and when an own write is
//!   answered; a reader keeps its value only if the epoch is still the one it saw at the
//!   start, checked and kept under the bucket's guard, which the bump and drop also hold:
//!   either the reader sees the bump, or the drop comes after its insert and removes it.
//! - Copies are served only while the newest confirmed probe was sent less than
//!   `max_staleness` ago: the server confirms a probe once every change made before the probe
//!   reached it has been sent, and changes are applied before the confirmation that follows
//!   them. Both ends of the bound are this process's own clock readings, so a stalled or
//!   delayed stream, server, Redis connection or runtime makes every read go to the server
//!   after at most the bound; a lost stream or a gap drops every copy.
//!
//! A write through this near cache replaces or drops its own copy once answered
//! (read-your-writes), bumping the bucket's epoch so that no read that raced it keeps the old
//! value. A stored value with a TTL becomes the copy when nothing else touched its bucket
//! while the write was in flight (cache.proto, Track step 7), so the writer's next read stays
//! in memory. A Set is marked with a random origin that the server sends back with its change;
//! when the change arrives after the Set answered, it is not applied (Track step 6): every
//! read started after the answer sees the write already, and would otherwise often be lost to
//! its own write's late change. Concurrent misses of one key share one read to the server
//! while its answer is as fresh as a held copy, so a hot key that just changed costs one round
//! trip, not one per waiting caller.
//!
//! The coherence state and its rules are in `near/coherence.rs`; the stream's task in
//! `near/stream.rs`; the own-write marks in `near/own_writes.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Status;

use crate::cache::{CacheClient, Entry, GetOrLoadError, LoadOptions, SetOptions};
use coherence::{Copy, FinishRead, Shared};
use stream::{Follower, follow};

mod coherence;
mod own_writes;
mod stream;

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
        let shared = Arc::new(Shared::new(&options));
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

    /// Writes a key through to the server. Until the write is answered, reads may still
    /// return the old copy (the write has not completed). Once it is, a stored value with a
    /// TTL becomes this cache's copy (its TTL counted from before the write was sent), unless
    /// something else touched the key's bucket meanwhile (another change, a local write or
    /// drop, a gap or a new stream); otherwise the copy is dropped.
    /// Either way a read of this process that raced the write cannot keep the old value, so a
    /// read after this returns sees the write (read-your-writes) even before the stream reports
    /// it, and the write's own change, arriving after this returned, is not applied (see the
    /// module docs).
    pub async fn set(&self, key: &str, value: Vec<u8>, options: SetOptions) -> Result<bool, Status> {
        // Only a key of a tracked bucket has its change delivered, so only such a write is
        // marked: a mark of any other would wait for a change that never comes.
        let mark = self.shared.tracked(key).then(|| self.shared.own_writes.mark());
        let origin = mark.as_ref().map_or(0, |mark| mark.origin());
        // Without a TTL the server's default applies, which this process does not know: such
        // a value is not kept.
        let written = match (&mark, options.ttl) {
            (Some(_), Some(ttl)) => self.shared.ticket(key).and_then(|ticket| {
                // The server keeps whole milliseconds (and adds any jitter): the copy must not
                // outlive its value. A TTL too long to add to a clock reading is refused by the
                // server anyway.
                let stored_ttl = Duration::from_millis(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
                let expires = Some(ticket.started.checked_add(stored_ttl)?);
                Some((ticket, Copy { value: Bytes::from(value.clone()), expires }))
            }),
            _ => None,
        };
        if written.is_none() {
            self.shared.drop_key(key);
        }
        let stored = self.client.set_marked(key, value, options, origin).await;
        match (written, &mark, &stored) {
            (Some((ticket, copy)), Some(mark), Ok(true)) => {
                self.shared.keep_written(key, &ticket, copy, mark)
            }
            _ => self.shared.drop_key(key),
        }
        if let Some(mark) = mark {
            mark.answered(matches!(stored, Ok(true)));
        }
        stored
    }

    /// Deletes keys on the server, dropping the local copies before and after: once this
    /// returns, no read that raced it keeps an older value.
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
