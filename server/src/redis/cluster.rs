//! Redis Cluster specifics: how the slot-routing connection retries through a failover, and
//! whether every slot is served right now (what health reports).
//!
//! Retries. When a master dies, calls for its slots fail until a replica is promoted (the
//! node timeout, a gossip round and an election: typically a few seconds), and for part of
//! that time every node refuses every call with CLUSTERDOWN. redis-rs retries redirects
//! (MOVED, ASK), CLUSTERDOWN and TRYAGAIN, lost connections and missing nodes by itself,
//! refreshing its slot map on the way, but its default pause before a retry is at least
//! 1.28 s and grows to minutes: one pause used up a whole call's time, so calls failed
//! although the new master had long been serving. [`RETRY_WAIT`] keeps the pauses short,
//! [`RETRIES`] allows about as many retries as fit in the default command timeout, and every
//! call is bounded by `redis.command_timeout` overall (the connection's overall response
//! timeout, retries included) and by the caller's gRPC deadline (tonic drops the call, and
//! with it its retries, when that passes). A call still unanswered then fails with
//! UNAVAILABLE (see `error.rs`).
//!
//! Health. A Cluster serves a call only if the master of its key's slot does. So health asks
//! the cluster which masters serve which slots (CLUSTER SLOTS, from any node the connection
//! reaches), requires the ranges to cover all 16384 slots, and reads one key (EXISTS of a
//! probe key nobody writes) in a slot of every master through the same slot routing every
//! call takes. While a dead master still owns its slots its probe fails; once a replica took
//! them over, the probe reaches the new master (redirected by MOVED where the connection's
//! slot map is stale). A PING to every master would not do: redis-rs sends it only to the
//! masters it holds a connection to and skips one it cannot connect to, so health stayed
//! SERVING for the whole failover while a third of the slots were unserved (measured on three
//! masters with a replica each, one killed with SIGKILL).

use std::collections::BTreeMap;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

use super::keys;

/// Number of slots of a Redis Cluster.
const SLOTS: u32 = 16384;

/// How many times the connection may retry one call: about as many as fit in the default
/// `redis.command_timeout` (2 s) while a slot waits for its new master, where about every
/// third retry pauses (a lost connection and a MOVED to the dead master are retried at once;
/// the failed connection to it pauses).
pub const RETRIES: u32 = 60;

/// The pause before a retry that waits (CLUSTERDOWN, TRYAGAIN, a node that cannot be
/// reached), in milliseconds: random between these two. Short, so that a call notices within
/// a tenth of a second that its slot is served again; random, so that many waiting calls do
/// not come back at once.
pub const RETRY_WAIT: (u64, u64) = (10, 100);

/// redis-rs's pause formula, `rand(min .. min(max, factor * base^retry))` ms: factor 100 and
/// base 1 give [`RETRY_WAIT`] for every retry. Not an exponential backoff on purpose: redis-rs
/// computes `factor * base^retry` in a `u64` for every failed attempt (one past the last retry
/// too), which with base 2 overflows after 60 retries, a panic in a debug build that killed
/// the connection for good (and a wrapped, meaningless value in a release build).
pub const RETRY_WAIT_FORMULA: (u64, u64) = (100, 1);

/// Whether every slot of the Cluster behind `conn` is served now: CLUSTER SLOTS covers all
/// slots, and a read of a key in a slot of each master, routed as calls are, is answered.
/// Each probe is bounded by the connection's own timeouts; the caller bounds the whole.
pub async fn serves_every_slot<C: ConnectionLike + Clone + Send>(conn: &C) -> bool {
    let slots: RedisResult<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn.clone()).await;
    let Some(masters) = slots.ok().as_ref().and_then(masters_by_slot_range) else {
        return false;
    };
    let probes = masters.values().map(|ranges| {
        let mut conn = conn.clone();
        let key = probe_key(ranges);
        async move {
            let answer: RedisResult<Value> = redis::cmd("EXISTS").arg(key).query_async(&mut conn).await;
            if let Err(e) = &answer {
                tracing::debug!(error = %e, "a Redis Cluster master does not serve its slots");
            }
            answer.is_ok()
        }
    });
    futures::future::join_all(probes).await.into_iter().all(|served| served)
}

/// Each master's slot ranges (first and last slot, inclusive), by its address (host, port).
type SlotRanges = BTreeMap<(String, i64), Vec<(u32, u32)>>;

/// Parses a CLUSTER SLOTS reply into each master's slot ranges, or `None` if the reply is
/// malformed or leaves a slot without a master.
fn masters_by_slot_range(reply: &Value) -> Option<SlotRanges> {
    let Value::Array(ranges) = reply else { return None };
    let mut masters = SlotRanges::new();
    let mut covered: Vec<(u32, u32)> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else { return None };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        let host = match master.first()? {
            Value::BulkString(host) => String::from_utf8_lossy(host).into_owned(),
            Value::SimpleString(host) => host.clone(),
            _ => return None,
        };
        let Some(Value::Int(port)) = master.get(1) else { return None };
        let (first, last) = (u32::try_from(*first).ok()?, u32::try_from(*last).ok()?);
        if first > last || last >= SLOTS {
            return None;
        }
        masters.entry((host, *port)).or_default().push((first, last));
        covered.push((first, last));
    }
    covered.sort_unstable();
    let mut next = 0;
    for (first, last) in covered {
        if first > next {
            return None;
        }
        next = next.max(last + 1);
    }
    (next == SLOTS).then_some(masters)
}

/// The first probe key whose slot lies in one of `ranges` (a master's slots). With a master
/// owning a share `s` of the slots this takes about `1/s` tries: three for a third, 16,384
/// (well under a millisecond) for a single slot.
fn probe_key(ranges: &[(u32, u32)]) -> String {
    (0u64..)
        .map(keys::cluster_probe)
        .find(|key| {
            let slot = key_slot(key);
            ranges.iter().any(|&(first, last)| (first..=last).contains(&slot))
        })
        .expect("every slot has keys")
}

/// The Cluster slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key without one,
/// modulo 16384, as Redis computes it.
fn key_slot(key: &str) -> u32 {
    let bytes = key.as_bytes();
    let hashed = match bytes.iter().position(|&b| b == b'{') {
        Some(open) => match bytes[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    u32::from(crc16_xmodem(hashed)) % SLOTS
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum of Redis Cluster's key slots.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_pause_formula_cannot_overflow() {
        let (factor, base) = RETRY_WAIT_FORMULA;
        // redis-rs computes the pause for the attempt after the last retry too.
        assert!(base.checked_pow(RETRIES + 1).and_then(|power| power.checked_mul(factor)).is_some());
        assert!(factor * base.pow(RETRIES + 1) <= RETRY_WAIT.1, "the pause stays flat at its maximum");
    }

    #[test]
    fn key_slots_are_those_redis_computes() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
        assert_eq!(key_slot("hello"), 866);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"), "an empty tag hashes the whole key");
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
        for n in 0..1000u64 {
            let key = keys::cluster_probe(n);
            let slot = redis::cluster_routing::Slot::for_key(&key);
            assert_eq!(Some(slot), redis::cluster_routing::Slot::new(key_slot(&key) as u16), "{key}");
        }
    }

    #[test]
    fn a_probe_key_lands_in_the_masters_slots() {
        for ranges in [vec![(0, 5460)], vec![(16383, 16383)], vec![(7, 7), (9000, 9001)]] {
            let slot = key_slot(&probe_key(&ranges));
            assert!(ranges.iter().any(|&(first, last)| (first..=last).contains(&slot)), "{ranges:?}");
        }
    }

    fn range(first: i64, last: i64, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(first),
            Value::Int(last),
            Value::Array(vec![Value::BulkString(b"127.0.0.1".to_vec()), Value::Int(port)]),
        ])
    }

    #[test]
    fn cluster_slots_must_cover_every_slot() {
        let full = Value::Array(vec![
            range(0, 5460, 1),
            range(5461, 10922, 2),
            range(10923, 16383, 3),
            range(100, 200, 1),
        ]);
        let masters = masters_by_slot_range(&full).unwrap();
        assert_eq!(masters.len(), 3);
        assert_eq!(masters[&("127.0.0.1".to_owned(), 1)], vec![(0, 5460), (100, 200)]);
        let gap = Value::Array(vec![range(0, 5460, 1), range(10923, 16383, 3)]);
        assert!(masters_by_slot_range(&gap).is_none());
        let short = Value::Array(vec![range(0, 16382, 1)]);
        assert!(masters_by_slot_range(&short).is_none());
        assert!(masters_by_slot_range(&Value::Array(vec![])).is_none());
        assert!(masters_by_slot_range(&Value::Nil).is_none());
    }
}
