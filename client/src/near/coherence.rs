//! The near cache's coherence state, shared by its handles and its stream task: the copies,
//! the current stream connection's buckets (tracking, epochs, guards), the reads in flight
//! that misses share, and the rules by which a read or an own write may keep a copy. The
//! rules are stated in the parent module's docs; here they are code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::Weighter;
use tokio::sync::mpsc;
use tonic::Status;

use super::NearOptions;
use super::own_writes::{Mark, OwnWrites};
use crate::cache::Entry;
use crate::pb;

/// Bytes counted per entry besides its key and value, for the capacity bound.
pub(super) const ENTRY_OVERHEAD: u64 = 96;

/// A held value. Stored by value, not behind an `Arc`: a hit then costs one reference count
/// (the value's), not three, on memory that every core reading a hot key shares.
#[derive(Debug, Clone)]
pub(super) struct Copy {
    pub(super) value: Bytes,
    /// When the server's copy expires, seen from here: the read's start plus the TTL it
    /// reported, or for an own write, the time before it was sent plus its TTL in whole
    /// milliseconds (without jitter), so a copy never outlives the server's. An expired copy is
    /// dropped when next looked up, or evicted like any other.
    pub(super) expires: Option<Instant>,
}

/// Counts a copy's key and value bytes, plus a fixed overhead, against the capacity.
#[derive(Debug, Clone, Copy)]
pub(super) struct CopyWeight;

impl Weighter<String, Copy> for CopyWeight {
    fn weight(&self, key: &String, copy: &Copy) -> u64 {
        (key.len() + copy.value.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// The copies held, by key.
pub(super) type Copies = quick_cache::sync::Cache<String, Copy, CopyWeight>;

/// What one stream connection established: the bucket layout, each bucket's tracking state
/// and epoch, and the way to ask for more buckets.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) bucket_count: u32,
    /// Whether tracking of each bucket was asked for (it is never given up on a link).
    pub(super) asked: Vec<AtomicBool>,
    /// Whether tracking of each bucket was confirmed.
    pub(super) tracked: Vec<AtomicBool>,
    /// Bumped before a change to a key of the bucket drops its copy, and when this cache's own
    /// write of such a key is answered (whether its value is kept or dropped).
    pub(super) epochs: Vec<AtomicU64>,
    /// Held while a bucket's epoch is bumped and its changed copy dropped, and while a read
    /// checks the epoch and keeps its copy: once a drop returns, no read that started before it
    /// can still insert an older value, not even for an instant.
    pub(super) guards: Vec<std::sync::Mutex<()>>,
    pub(super) requests: mpsc::UnboundedSender<pb::CacheTrackRequest>,
}

impl Link {
    /// The state of a new stream connection with `bucket_count` buckets, none tracked yet,
    /// whose requests (tracking, probes) go to `requests`.
    pub(super) fn new(bucket_count: u32, requests: mpsc::UnboundedSender<pb::CacheTrackRequest>) -> Self {
        Self {
            bucket_count,
            asked: (0..bucket_count).map(|_| AtomicBool::new(false)).collect(),
            tracked: (0..bucket_count).map(|_| AtomicBool::new(false)).collect(),
            epochs: (0..bucket_count).map(|_| AtomicU64::new(0)).collect(),
            guards: (0..bucket_count).map(|_| std::sync::Mutex::new(())).collect(),
            requests,
        }
    }

    pub(super) fn guard(&self, bucket: usize) -> std::sync::MutexGuard<'_, ()> {
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

    pub(super) fn bucket(&self, key: &str) -> usize {
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
pub(super) struct Shared {
    pub(super) copies: Copies,
    pub(super) link: RwLock<Option<Arc<Link>>>,
    /// Bumped whenever every copy is dropped (gap, lost stream, wide invalidation).
    pub(super) generation: AtomicU64,
    /// Nanoseconds after `base` at which the newest confirmed probe was sent; 0 for none.
    pub(super) confirmed: AtomicU64,
    pub(super) base: Instant,
    pub(super) max_staleness: Duration,
    /// Reads to the server in flight, by key, that concurrent misses of the key may share.
    pub(super) reads: std::sync::Mutex<HashMap<String, Arc<Read>>>,
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) invalidations: AtomicU64,
    pub(super) resets: AtomicU64,
    /// This cache's marked Sets (cache.proto, Track step 6).
    pub(super) own_writes: OwnWrites,
}

/// One read of a key to the server, shared by the misses of the key that arrive while it is in
/// flight and while nothing says its answer is old (see [`Shared::join`]).
pub(super) struct Read {
    /// Where the key's bucket and the cache stood when it started; `None` if it will not be
    /// kept, and then it is not shared either.
    pub(super) ticket: Option<Ticket>,
    pub(super) answer: tokio::sync::OnceCell<Result<Option<Entry>, Status>>,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Read").finish_non_exhaustive()
    }
}

/// A read's claim to keep what it reads: where its key's bucket and the cache stood when it
/// started.
pub(super) struct Ticket {
    pub(super) link: Arc<Link>,
    pub(super) bucket: usize,
    pub(super) epoch: u64,
    pub(super) generation: u64,
    pub(super) started: Instant,
}

impl Shared {
    /// An empty near cache's state, with no stream connection yet.
    pub(super) fn new(options: &NearOptions) -> Self {
        // The item estimate only sizes the tables up front; the weight bounds the memory.
        let estimated_items = usize::try_from(options.capacity_bytes / 256).unwrap_or(usize::MAX).max(64);
        Self {
            copies: Copies::with_weighter(estimated_items, options.capacity_bytes, CopyWeight),
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
        }
    }

    pub(super) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether copies may be served at `now`.
    pub(super) fn fresh(&self, now: Instant) -> bool {
        let confirmed = self.confirmed.load(Ordering::SeqCst);
        confirmed != 0 && self.nanos(now).saturating_sub(confirmed) < self.max_staleness.as_nanos() as u64
    }

    pub(super) fn lookup(&self, key: &str) -> Option<Entry> {
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

    pub(super) fn link(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A ticket if `key`'s bucket is tracked; otherwise asks for it (once) and returns none:
    /// this read will not be kept.
    pub(super) fn ticket(&self, key: &str) -> Option<Ticket> {
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
    pub(super) fn tracked(&self, key: &str) -> bool {
        self.link().is_some_and(|link| link.tracked[link.bucket(key)].load(Ordering::SeqCst))
    }

    /// Keeps what a ticketed read found, unless its bucket or the cache changed meanwhile.
    pub(super) fn keep(&self, key: &str, ticket: &Ticket, entry: &Entry) {
        if !self.unchanged(ticket) {
            return;
        }
        // A TTL too long to add to a clock reading (only a faulty server sends one) is not kept.
        let expires = match entry.ttl {
            Some(ttl) => match ticket.started.checked_add(ttl) {
                Some(at) => Some(at),
                None => return,
            },
            None => None,
        };
        let copy = Copy { value: entry.value.clone(), expires };
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

    /// Once this cache's Set of `key` is answered stored: makes the written value the copy if
    /// nothing else changed in the bucket since `ticket` was taken before the Set was sent (the
    /// Set's own change, applied before its answer, bumps once) and the cache was not reset or
    /// relinked; otherwise drops the copy, as [`Self::drop_key`] does. Either way the epoch of
    /// the bucket on the current link is bumped, so that no read that raced the write keeps
    /// what it found. A kept value is then like a kept read: every later change is reported.
    pub(super) fn keep_written(&self, key: &str, ticket: &Ticket, written: Copy, mark: &Mark<'_>) {
        {
            let _guard = ticket.link.guard(ticket.bucket);
            let before = ticket.link.epochs[ticket.bucket].fetch_add(1, Ordering::SeqCst);
            let only_own = before == ticket.epoch || (before == ticket.epoch + 1 && mark.seen());
            if only_own && self.same_cache(ticket) {
                self.copies.insert(key.to_owned(), written);
                // As in `keep`: a reset or a new link (not under the guard) is seen here, or
                // drops the copy after this insert.
                if self.same_cache(ticket) {
                    return;
                }
            }
        }
        // On whichever link is current now: a read on a new link must not keep an old value
        // either, since this write's own change will be skipped.
        self.drop_key(key);
    }

    /// Whether the cache is as `ticket` saw it: no reset and no new link since.
    fn same_cache(&self, ticket: &Ticket) -> bool {
        self.generation.load(Ordering::SeqCst) == ticket.generation
            && self.link().is_some_and(|now| Arc::ptr_eq(&now, &ticket.link))
    }

    /// Whether what `ticket`'s read finds would still be kept: no change to its bucket, no
    /// reset and no new link since it started.
    pub(super) fn unchanged(&self, ticket: &Ticket) -> bool {
        ticket.link.epochs[ticket.bucket].load(Ordering::SeqCst) == ticket.epoch && self.same_cache(ticket)
    }

    /// The read of `key` this miss should await: one in flight whose answer is still as fresh
    /// as a held copy would be (it started after its bucket was tracked, nothing changed in the
    /// bucket since, and copies are being served), or else a new one. A miss that joined a read
    /// gets the same answer as if the copy had been kept a moment earlier.
    pub(super) fn join(&self, key: &str) -> Arc<Read> {
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
    pub(super) fn finish(&self, key: &str, read: &Arc<Read>) {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if reads.get(key).is_some_and(|current| Arc::ptr_eq(current, read)) {
            reads.remove(key);
        }
    }

    /// Drops the copy of `key` ahead of a change to it.
    pub(super) fn drop_key(&self, key: &str) {
        match self.link() {
            Some(link) => link.drop_copy(&self.copies, key),
            // No link, no tickets: no read can keep a copy until a new link is confirmed.
            None => {
                self.copies.remove(key);
            }
        }
    }

    /// Drops every copy, and every read in flight's claim to keep its result.
    pub(super) fn reset(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.copies.clear();
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies one stream message, in the protocol's order; returns whether it confirmed a
    /// probe.
    pub(super) fn apply(&self, link: &Link, message: pb::CacheTrackResponse) -> bool {
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
    pub(super) fn probe(&self, link: &Link) {
        let probe = self.nanos(Instant::now());
        let _ = link.requests.send(pb::CacheTrackRequest { track: Vec::new(), probe });
    }

    /// Forgets the link: nothing is served or kept until a new one is confirmed.
    pub(super) fn unlink(&self) {
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.confirmed.store(0, Ordering::SeqCst);
        self.reset();
        self.own_writes.forget_answered();
    }
}

/// Forgets a shared read when its last waiter is done with it, answered or cancelled.
pub(super) struct FinishRead<'a> {
    pub(super) shared: &'a Shared,
    pub(super) key: &'a str,
    pub(super) read: &'a Arc<Read>,
}

impl Drop for FinishRead<'_> {
    fn drop(&mut self) {
        self.shared.finish(self.key, self.read);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A near cache's state on a stream connection of one bucket, tracked and confirmed now.
    fn linked() -> (Shared, Arc<Link>) {
        let shared = Shared::new(&NearOptions::default());
        let link = relink(&shared);
        (shared, link)
    }

    /// Installs a new stream connection of one bucket, tracked and confirmed now.
    fn relink(shared: &Shared) -> Arc<Link> {
        let (requests, _) = mpsc::unbounded_channel();
        let link = Arc::new(Link::new(1, requests));
        link.tracked[0].store(true, Ordering::SeqCst);
        *shared.link.write().unwrap() = Some(link.clone());
        shared.confirmed.store(shared.nanos(Instant::now()), Ordering::SeqCst);
        link
    }

    fn written(value: &'static [u8]) -> Copy {
        Copy { value: Bytes::from_static(value), expires: None }
    }

    fn held(shared: &Shared, key: &str) -> Option<Bytes> {
        shared.lookup(key).map(|entry| entry.value)
    }

    /// The stream reports a change of `key` made by the write marked `origin` (0: another's).
    fn change(shared: &Shared, link: &Link, key: &str, origin: u64) {
        let message =
            pb::CacheTrackResponse { keys: vec![key.into()], origins: vec![origin], ..Default::default() };
        shared.apply(link, message);
    }

    #[test]
    fn an_own_write_is_kept_when_nothing_else_changed_its_bucket() {
        let (shared, _link) = linked();
        let mark = shared.own_writes.mark();
        let ticket = shared.ticket("k").unwrap();
        shared.keep_written("k", &ticket, written(b"new"), &mark);
        assert_eq!(held(&shared, "k").as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn an_own_write_whose_own_change_came_before_its_answer_is_kept() {
        let (shared, link) = linked();
        shared.copies.insert("k".into(), written(b"old"));
        let mark = shared.own_writes.mark();
        let ticket = shared.ticket("k").unwrap();
        change(&shared, &link, "k", mark.origin());
        assert_eq!(held(&shared, "k"), None, "the change drops the old copy");
        shared.keep_written("k", &ticket, written(b"new"), &mark);
        assert_eq!(held(&shared, "k").as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn an_own_write_is_dropped_when_another_change_of_its_bucket_came_first() {
        // Another writer's change, of the key or of another key in its bucket.
        for other in ["k", "other"] {
            let (shared, link) = linked();
            let mark = shared.own_writes.mark();
            let ticket = shared.ticket("k").unwrap();
            change(&shared, &link, other, 0);
            shared.keep_written("k", &ticket, written(b"new"), &mark);
            assert_eq!(held(&shared, "k"), None, "after a change of {other:?}");
        }
        // The same, with the write's own change too.
        let (shared, link) = linked();
        let mark = shared.own_writes.mark();
        let ticket = shared.ticket("k").unwrap();
        change(&shared, &link, "k", mark.origin());
        change(&shared, &link, "k", 0);
        shared.keep_written("k", &ticket, written(b"new"), &mark);
        assert_eq!(held(&shared, "k"), None, "after its own change and another");
    }

    #[test]
    fn of_two_own_writes_answered_out_of_order_neither_is_left_held() {
        // Redis may have run the first-answered write first or last: once both answered, the
        // later answer drops the copy rather than guess.
        let (shared, _link) = linked();
        let (first, second) = (shared.own_writes.mark(), shared.own_writes.mark());
        let (first_ticket, second_ticket) = (shared.ticket("k").unwrap(), shared.ticket("k").unwrap());
        shared.keep_written("k", &second_ticket, written(b"second"), &second);
        assert_eq!(held(&shared, "k").as_deref(), Some(&b"second"[..]));
        shared.keep_written("k", &first_ticket, written(b"first"), &first);
        assert_eq!(held(&shared, "k"), None);
    }

    #[test]
    fn an_own_write_answered_on_a_new_link_stops_the_new_links_reads_keeping_old_values() {
        let (shared, old_link) = linked();
        let mark = shared.own_writes.mark();
        let ticket = shared.ticket("k").unwrap();
        // The stream is lost and comes back while the write is in flight; a read on the new
        // link starts before the write ran in Redis, so it finds the old value.
        shared.unlink();
        relink(&shared);
        let read = shared.ticket("k").unwrap();
        assert!(!Arc::ptr_eq(&read.link, &old_link));
        shared.keep_written("k", &ticket, written(b"new"), &mark);
        mark.answered(true);
        // The write's own change will be skipped: the racing read must not keep what it found.
        shared.keep("k", &read, &Entry { value: Bytes::from_static(b"old"), ttl: None });
        assert_eq!(held(&shared, "k"), None);
    }

    #[test]
    fn an_own_write_is_dropped_after_a_reset() {
        let (shared, _link) = linked();
        let mark = shared.own_writes.mark();
        let ticket = shared.ticket("k").unwrap();
        shared.reset();
        shared.keep_written("k", &ticket, written(b"new"), &mark);
        assert_eq!(held(&shared, "k"), None);
    }
}
