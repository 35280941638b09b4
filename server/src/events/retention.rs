//! How much Redis memory a namespace's streams may hold: every stream expires when idle, and a
//! namespace has at most `events.max_streams_per_namespace` streams at once.
//!
//! Idle expiry. Every append (and group creation) starts the stream's TTL,
//! `events.stream_idle_ttl`, again, and the TTLs of its companions with it: its dead letters,
//! its groups' settings hash and (shorter) its idempotency markers. Entries that move to the
//! dead letters take the stream's remaining TTL. So a stream nobody appends to for the idle
//! TTL is deleted with everything that belongs to it, and no stream key lives without a TTL.
//! Consuming does not count as activity: a backlog nobody appends to for the idle TTL is gone.
//!
//! The cap, on a Cluster. A namespace's streams are counted in one sorted set per namespace,
//! its stream index (`keys::event_stream_index`): stream name -> the time after which that
//! stream has surely expired. The index has its own hash tag, so on a Redis Cluster it lives in
//! another slot, often on another node, than the streams: no script can touch a stream and the
//! index together. Rather than a second round trip per append, each stream carries a
//! registration mark beside it (`keys::event_stream_mark`, same slot as the stream), which
//! lives a quarter of the idle TTL (at most an hour). An append that finds the mark appends as
//! usual, in one round trip. One that finds none writes nothing and answers "register": the
//! server then registers the stream in the index (`register.lua`, which drops entries of
//! expired streams and refuses a new name at the cap) and appends again, setting the mark. So
//! the index costs two extra round trips per stream per mark life, not per append.
//!
//! The index never under-counts: a registration holds for the idle TTL plus twice the mark's
//! life (the mark's life is shortened by the time from the registration to the append that
//! sets it, as this replica measures it), and a stream whose mark has gone registers again
//! before it is written to, so a live stream's entry cannot have expired. Each holds from the
//! index node's own clock, so nodes' clocks need not agree. It may over-count: a stream that
//! went idle keeps its place until its registration ends, up to the idle TTL plus two mark
//! lives after its last registration; and a registration whose append then failed holds a
//! place as long. The index holds at most the cap's names and expires with its last entry.
//! A stream that existed before streams expired (no mark, no TTL) registers, and takes a TTL,
//! at its next append.
//!
//! The alternative, a per-namespace counter incremented when a stream is created and
//! decremented when it expires, needs expiry notifications (keyspace events are neither
//! reliable nor delivered across a Cluster's nodes): a lost one would leak a place for ever.
//! The index's entries expire by themselves.

use std::time::{Duration, Instant};

use super::Events;
use crate::convert::millis;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::scripts::{self, evalsha};
use crate::redis::{keys, timed};

/// Longest life of a stream's registration mark: an idle stream frees its place in the cap
/// within the idle TTL plus two of these after its last append.
const MAX_MARK_LIFE: Duration = Duration::from_secs(3600);

/// What an append or group creation tells its script about the stream's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Registration {
    /// Not just registered: the script asks for a registration if the stream has no mark.
    Unknown,
    /// Just registered: the script sets the mark, for this long (none when zero).
    Done(Duration),
}

impl Registration {
    /// The script's two arguments: whether the stream was just registered, and for how many
    /// ms its mark lives (`0`: set none, so the next write registers again).
    pub(super) fn args(self) -> (&'static str, u64) {
        match self {
            Self::Unknown => ("0", 0),
            Self::Done(life) if life < Duration::from_millis(1) => ("1", 0),
            Self::Done(life) => ("1", millis(life)),
        }
    }
}

impl Events {
    /// The idle TTL, in ms, that appends and group creations give a stream and its companions.
    pub(super) fn idle_ttl_ms(&self) -> u64 {
        millis(self.config.stream_idle_ttl)
    }

    /// How long a stream's registration mark lives: a quarter of the idle TTL, at most
    /// [`MAX_MARK_LIFE`].
    fn mark_life(&self) -> Duration {
        (self.config.stream_idle_ttl / 4).min(MAX_MARK_LIFE)
    }

    /// Counts `stream` in `ns`'s stream index; RESOURCE_EXHAUSTED when the namespace already
    /// has as many other streams as it may. Returns the registration to pass to the write that
    /// follows: the mark's life less the time this call took, so that the mark never outlives
    /// the index entry's margin.
    pub(super) async fn register_stream(&self, ns: &Namespace, stream: &str) -> Result<Registration> {
        let sent = Instant::now();
        let life = self.mark_life();
        let hold = self.config.stream_idle_ttl + life * 2;
        let cap = self.config.max_streams_per_namespace;
        let index = keys::event_stream_index(ns.as_str());
        let cmd =
            evalsha(&scripts::EVENTS_REGISTER, &[&index]).arg(stream).arg(cap).arg(millis(hold)).to_owned();
        let counted: i64 =
            timed("events.register", scripts::run(&mut self.redis.conn(), &scripts::EVENTS_REGISTER, &cmd))
                .await
                .map_err(Error::from_write)?;
        if counted != 1 {
            return Err(Error::ResourceExhausted(format!(
                "this namespace has {cap} streams, the most it may have (events.max_streams_per_namespace); \
                 write to an existing stream, or wait until an idle one expires (events.stream_idle_ttl, {:?})",
                self.config.stream_idle_ttl
            )));
        }
        Ok(Registration::Done(life.saturating_sub(sent.elapsed())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_arguments() {
        assert_eq!(Registration::Unknown.args(), ("0", 0));
        assert_eq!(Registration::Done(Duration::ZERO).args(), ("1", 0));
        assert_eq!(Registration::Done(Duration::from_micros(300)).args(), ("1", 0));
        assert_eq!(Registration::Done(Duration::from_millis(1500)).args(), ("1", 1500));
    }
}
