//! A near cache's own Sets and the changes they cause (cache.proto, Track step 6): which
//! changes arriving on the stream need not be applied because they are this cache's own
//! writes, answered and dropped locally already.
//!
//! A change may arrive before or after its Set's answer. Before, it is applied as any change
//! (the read it discards raced the write anyway). After, skipping it is safe because the copy
//! was dropped or replaced by the written value once the answer came, bumping the bucket's
//! epoch: a read that started earlier keeps nothing, and a read that started later was sent
//! after Redis ran the write. A Set that failed, stored nothing or was abandoned (its future
//! dropped) is forgotten at once, so a change of it, if any, is applied.
//!
//! Memory: a near cache marks only Sets of keys in buckets it tracks, whose changes the stream
//! delivers; answered writes whose change may never come (a gap, a new stream) are forgotten,
//! and so are the oldest ones past [`MAX_ANSWERED`]. Forgetting is always safe: the change is
//! then applied, as it would be without marks.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most writes kept answered, waiting for their change; past it, all of them are forgotten.
const MAX_ANSWERED: usize = 10_000;

/// Where a marked Set of this cache stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Sent, not answered: its change is applied as any other.
    InFlight,
    /// Its change arrived before its answer (and was applied).
    Seen,
    /// Answered stored, its copy dropped or replaced after: its change, when it comes, is
    /// skipped.
    Answered,
}

/// The marked Sets of one near cache whose change is still to come, by origin.
#[derive(Debug, Default)]
pub(super) struct OwnWrites {
    writes: Mutex<HashMap<u64, State>>,
    /// Makes origins: randomly keyed, so other writers' origins do not collide with ours.
    origins: RandomState,
    made: AtomicU64,
}

impl OwnWrites {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, State>> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new non-zero origin for a Set about to be sent, registered in flight until the
    /// returned mark is answered or dropped.
    pub(super) fn mark(&self) -> Mark<'_> {
        let origin = self.origins.hash_one(self.made.fetch_add(1, Ordering::Relaxed)).max(1);
        let mut writes = self.lock();
        if writes.len() >= MAX_ANSWERED {
            writes.retain(|_, state| *state != State::Answered);
        }
        writes.insert(origin, State::InFlight);
        Mark { own: self, origin, open: true }
    }

    /// A change with `origin` (0: none) arrived: whether to skip it, being the change of an
    /// answered write of this cache (which is then forgotten).
    pub(super) fn arrived(&self, origin: u64) -> bool {
        if origin == 0 {
            return false;
        }
        let mut writes = self.lock();
        match writes.get(&origin) {
            Some(State::Answered) => {
                writes.remove(&origin);
                true
            }
            Some(State::InFlight) => {
                writes.insert(origin, State::Seen);
                false
            }
            Some(State::Seen) | None => false,
        }
    }

    /// Forgets the answered writes: after a gap or a lost stream their changes may never come.
    pub(super) fn forget_answered(&self) {
        self.lock().retain(|_, state| *state != State::Answered);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One marked Set in flight; dropped unanswered (the Set's future abandoned), it is forgotten.
#[derive(Debug)]
pub(super) struct Mark<'a> {
    own: &'a OwnWrites,
    origin: u64,
    open: bool,
}

impl Mark<'_> {
    /// The origin to send with the Set.
    pub(super) fn origin(&self) -> u64 {
        self.origin
    }

    /// Whether the Set's change has arrived (and was applied) before its answer.
    pub(super) fn seen(&self) -> bool {
        self.own.lock().get(&self.origin) == Some(&State::Seen)
    }

    /// Records how the Set ended, once its copy was dropped or replaced after the answer: only
    /// a stored write whose change is still to come lets that change be skipped.
    pub(super) fn answered(mut self, stored: bool) {
        self.open = false;
        let mut writes = self.own.lock();
        if stored && writes.get(&self.origin) == Some(&State::InFlight) {
            writes.insert(self.origin, State::Answered);
        } else {
            writes.remove(&self.origin);
        }
    }
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        if self.open {
            self.own.lock().remove(&self.origin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_after_the_answer_is_skipped_once() {
        let own = OwnWrites::default();
        let mark = own.mark();
        let origin = mark.origin();
        assert_ne!(origin, 0);
        mark.answered(true);
        assert!(own.arrived(origin));
        assert!(!own.arrived(origin), "a second change with the origin is applied");
        assert_eq!(own.len(), 0);
    }

    #[test]
    fn a_change_before_the_answer_is_applied() {
        let own = OwnWrites::default();
        let mark = own.mark();
        assert!(!mark.seen());
        assert!(!own.arrived(mark.origin()));
        assert!(mark.seen());
        mark.answered(true);
        assert_eq!(own.len(), 0);
    }

    #[test]
    fn changes_of_failed_or_unstored_writes_and_of_others_are_applied() {
        let own = OwnWrites::default();
        let failed = own.mark();
        let failed_origin = failed.origin();
        failed.answered(false);
        assert!(!own.arrived(failed_origin));
        assert!(!own.arrived(0));
        let others = OwnWrites::default();
        assert!(!own.arrived(others.mark().origin()));
        assert_ne!(own.mark().origin(), own.mark().origin(), "every write has its own origin");
        let abandoned = own.mark().origin(); // the mark is dropped unanswered
        assert!(!own.arrived(abandoned));
        assert_eq!(own.len(), 0);
    }

    #[test]
    fn a_gap_forgets_answered_writes_but_not_those_in_flight() {
        let own = OwnWrites::default();
        let answered = own.mark();
        let answered_origin = answered.origin();
        answered.answered(true);
        let in_flight = own.mark();
        own.forget_answered();
        assert!(!own.arrived(answered_origin));
        assert!(!own.arrived(in_flight.origin()));
        in_flight.answered(true);
        assert_eq!(own.len(), 0);
    }

    #[test]
    fn answered_writes_whose_change_never_comes_are_bounded() {
        let own = OwnWrites::default();
        for _ in 0..3 * MAX_ANSWERED {
            own.mark().answered(true);
        }
        assert!(own.len() <= MAX_ANSWERED, "{} held", own.len());
    }
}
