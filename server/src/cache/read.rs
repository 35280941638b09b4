//! Reads of the Cache: `Get`, and `GetMany` within the response budget.
//!
//! `GetMany` is the one read whose answer grows with the request, so it is bounded here: a key
//! named several times is read once, and no value that would take the answer past
//! `limits.max_response_bytes` leaves Redis (`get_bounded.lua` answers a too-long value's
//! length instead of its bytes).

use redis::Value;

use super::{Cache, Entry, ttl_from_pttl};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::keys;
use crate::redis::scripts::{self, evalsha};
use crate::redis::{RedisPool, timed};

/// Bytes a `CacheLookup` adds to a GetMany answer beyond its value (tags, lengths, the TTL),
/// rounded up.
const LOOKUP_FRAMING: usize = 32;

/// One key as `get_bounded.lua` read it.
#[derive(Debug)]
enum BoundedRead {
    /// The key does not exist.
    Missing,
    /// Its value (no longer than the cap) and PTTL.
    Found(Vec<u8>, i64),
    /// Its value is this long, longer than the cap: not read.
    TooLong(usize),
}

impl BoundedRead {
    /// Bytes the value adds to the answer, as far as is known.
    fn len(&self) -> usize {
        match self {
            Self::Missing => 0,
            Self::Found(value, _) => value.len(),
            Self::TooLong(length) => *length,
        }
    }
}

/// Reads each key's value if it is at most its cap (else only its length) and its PTTL, in one
/// round trip.
async fn read_bounded(redis: &RedisPool, keys: &[String], caps: &[usize]) -> Result<Vec<BoundedRead>> {
    let cmds: Vec<redis::Cmd> = keys
        .iter()
        .zip(caps)
        .map(|(key, cap)| {
            let mut cmd = evalsha(&scripts::CACHE_GET_BOUNDED, &[key]);
            cmd.arg(*cap);
            cmd
        })
        .collect();
    let replies =
        timed("cache.get_many", scripts::run_batch(redis, &cmds, &[&scripts::CACHE_GET_BOUNDED])).await?;
    replies
        .into_iter()
        .map(|reply| match reply? {
            Value::Nil => Ok(BoundedRead::Missing),
            Value::Array(parts) => match parts.as_slice() {
                [Value::BulkString(value), Value::Int(pttl)] => Ok(BoundedRead::Found(value.clone(), *pttl)),
                [Value::Int(length)] => {
                    Ok(BoundedRead::TooLong(usize::try_from(*length).unwrap_or(usize::MAX)))
                }
                _ => Err(Error::unexpected("cache get_bounded", &Value::Array(parts))),
            },
            other => Err(Error::unexpected("cache get_bounded", &other)),
        })
        .collect()
}

impl Cache {
    /// Reads one entry.
    pub async fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Entry>> {
        self.check_key(key)?;
        let keys = keys::cache(ns.as_str(), key);
        let mut conn = self.redis.conn();
        let (value, pttl): (Option<Vec<u8>>, i64) =
            timed("cache.get", redis::pipe().get(&keys.value).pttl(&keys.value).query_async(&mut conn))
                .await?;
        Ok(count_lookup(value.map(|value| Entry { value, ttl: ttl_from_pttl(pttl) })))
    }

    /// Reads many entries; results in request order. A key named several times is read once.
    ///
    /// The answer never exceeds the response budget (`limits.max_response_bytes`), and no value
    /// that does not fit leaves Redis: each key is read by `get_bounded.lua` with an even share
    /// of the budget as its cap, which answers the common batch in one round trip and gives the
    /// lengths of longer values without their bytes. Those are read in a second round trip
    /// only when the whole answer fits; otherwise the call is RESOURCE_EXHAUSTED.
    pub async fn get_many(&self, ns: &Namespace, names: &[String]) -> Result<Vec<Option<Entry>>> {
        self.check_keys(names)?;
        // Each distinct name once (`keys`), how often it was asked for, and where each
        // requested name's answer comes from.
        let mut keys: Vec<String> = Vec::new();
        let mut copies: Vec<usize> = Vec::new();
        let mut slot_of_name = std::collections::HashMap::with_capacity(names.len());
        let positions: Vec<usize> = names
            .iter()
            .map(|name| {
                let slot = *slot_of_name.entry(name.as_str()).or_insert_with(|| {
                    keys.push(keys::cache(ns.as_str(), name).value);
                    copies.push(0);
                    keys.len() - 1
                });
                copies[slot] += 1;
                slot
            })
            .collect();
        let budget = self.limits.response_budget();
        let framing = names.len() * LOOKUP_FRAMING;
        let even_share = budget.saturating_sub(framing) / names.len();
        let mut read = read_bounded(&self.redis, &keys, &vec![even_share; keys.len()]).await?;
        let total = framing + (0..keys.len()).map(|i| copies[i] * read[i].len()).sum::<usize>();
        if total > budget {
            return Err(Error::ResourceExhausted(format!(
                "the {} values asked for come to {total} bytes, over the response budget of {budget} bytes \
                 (limits.max_response_bytes); ask for fewer keys per call",
                names.len()
            )));
        }
        // Values longer than their even share, now known to fit: read them up to their length.
        let long: Vec<usize> =
            (0..keys.len()).filter(|&i| matches!(read[i], BoundedRead::TooLong(_))).collect();
        if !long.is_empty() {
            let long_keys: Vec<String> = long.iter().map(|&i| keys[i].clone()).collect();
            let long_caps: Vec<usize> = long.iter().map(|&i| read[i].len()).collect();
            let reread = read_bounded(&self.redis, &long_keys, &long_caps).await?;
            for (&i, value) in long.iter().zip(reread) {
                if matches!(value, BoundedRead::TooLong(_)) {
                    return Err(Error::Aborted("a value grew while GetMany read it; retry the call".into()));
                }
                read[i] = value;
            }
        }
        Ok(positions
            .into_iter()
            .map(|slot| {
                count_lookup(match &read[slot] {
                    BoundedRead::Found(value, pttl) => {
                        Some(Entry { value: value.clone(), ttl: ttl_from_pttl(*pttl) })
                    }
                    BoundedRead::Missing | BoundedRead::TooLong(_) => None,
                })
            })
            .collect())
    }
}

fn count_lookup(found: Option<Entry>) -> Option<Entry> {
    let outcome = if found.is_some() { "hit" } else { "miss" };
    metrics::counter!("rookery_cache_lookups_total", "outcome" => outcome).increment(1);
    found
}
