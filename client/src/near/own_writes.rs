//! A near cache's own Sets and the changes they cause (cache.proto, Track step 6): which
//! changes arriving on the stream need not be applied because they are this cache's own
//! writes, answered and dropped locally already.
//!
//! A change may arrive before or after its Set's answer. Before, it is applied as any change
//! (the read it discards raced the write anyway). After, skipping it is safe because the copy
//! was dropped again once the answer came: a read that started earlier is discarded by that
//! drop, and a read that started later was sent after Redis ran the write. A Set that failed or
//! stored nothing is forgotten at once, so a change of it, if any, is applied.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a marked Set of this cache stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Sent, not answered: its change is applied as any other.
    InFlight,
    /// Its change arrived before its answer (and was applied).
    Seen,
    /// Answered stored, its copy dropped after: its change, when it comes, is skipped.
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

    /// A new non-zero origin for a Set about to be sent, registered in flight.
    pub(super) fn mark(&self) -> u64 {
        let origin = self.origins.hash_one(self.made.fetch_add(1, Ordering::Relaxed)).max(1);
        self.lock().insert(origin, State::InFlight);
        origin
    }

    /// Records how the Set marked `origin` ended, once its copy was dropped after the answer:
    /// only a stored write whose change is still to come lets that change be skipped.
    pub(super) fn answered(&self, origin: u64, stored: bool) {
        let mut writes = self.lock();
        if stored && writes.get(&origin) == Some(&State::InFlight) {
            writes.insert(origin, State::Answered);
        } else {
            writes.remove(&origin);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_after_the_answer_is_skipped_once() {
        let own = OwnWrites::default();
        let origin = own.mark();
        assert_ne!(origin, 0);
        own.answered(origin, true);
        assert!(own.arrived(origin));
        assert!(!own.arrived(origin), "a second change with the origin is applied");
        assert_eq!(own.len(), 0);
    }

    #[test]
    fn a_change_before_the_answer_is_applied() {
        let own = OwnWrites::default();
        let origin = own.mark();
        assert!(!own.arrived(origin));
        own.answered(origin, true);
        assert_eq!(own.len(), 0);
    }

    #[test]
    fn changes_of_failed_or_unstored_writes_and_of_others_are_applied() {
        let own = OwnWrites::default();
        let failed = own.mark();
        own.answered(failed, false);
        assert!(!own.arrived(failed));
        assert!(!own.arrived(0));
        let other = OwnWrites::default().mark();
        assert!(!own.arrived(other));
        assert_ne!(own.mark(), own.mark(), "every write has its own origin");
    }

    #[test]
    fn a_gap_forgets_answered_writes_but_not_those_in_flight() {
        let own = OwnWrites::default();
        let answered = own.mark();
        own.answered(answered, true);
        let in_flight = own.mark();
        own.forget_answered();
        assert!(!own.arrived(answered));
        assert!(!own.arrived(in_flight));
        own.answered(in_flight, true);
        assert_eq!(own.len(), 0);
    }
}
