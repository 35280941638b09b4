//! `DescribeStream`: a stream's length, ends, dead letters, and its groups' progress.
//!
//! Its Redis work is bounded by the caps on what it lists: `events.max_groups_per_stream` groups
//! of at most `events.max_consumers_per_group` consumers. Its answer is also bounded by the
//! response budget (`limits.max_response_bytes`): every group is listed, and consumers while
//! they fit; the others are counted in `consumers_omitted`.

use std::time::Duration;

use redis::Value;

use super::{DELAYED_CONSUMER, EffectiveSettings, GroupKeys, fields_of, no_group, number, text};
use crate::error::{Error, Result};
use crate::events::{Events, check_name};
use crate::namespace::Namespace;
use crate::redis::keys;

/// A consumer of a group, as `DescribeStream` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// Entries delivered to it and not acknowledged.
    pub pending: u64,
    /// Since it last read or claimed entries.
    pub idle: Duration,
}

/// A group's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub settings: EffectiveSettings,
    /// Entries delivered and not acknowledged (including `delayed`).
    pub pending: u64,
    /// Nacked entries waiting for their delay to end.
    pub delayed: u64,
    /// Entries not yet delivered to the group, when Redis can tell.
    pub lag: Option<u64>,
    /// The last entry delivered to the group.
    pub last_delivered_id: String,
    /// Age of the oldest pending entry.
    pub oldest_pending_age: Option<Duration>,
    /// Its consumers (without the one holding delayed entries), as many as the response
    /// budget holds.
    pub consumers: Vec<ConsumerInfo>,
    /// Consumers left out of `consumers` to keep the answer within the response budget.
    pub consumers_omitted: u64,
}

/// A stream's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// Entries in the stream.
    pub length: u64,
    /// Its first entry's ID (empty when it is empty).
    pub first_id: String,
    /// Its last entry's ID (empty when it is empty).
    pub last_id: String,
    /// Entries in its dead-letter stream.
    pub dead_letters: u64,
    /// Its groups.
    pub groups: Vec<GroupInfo>,
}

/// Bytes a group adds to the answer besides its consumers (name up to 256 bytes, settings,
/// counters, IDs), rounded up.
const GROUP_FRAMING: usize = 400;
/// Bytes a consumer adds to the answer besides its name, rounded up.
const CONSUMER_FRAMING: usize = 32;

/// One group's XINFO CONSUMERS, XPENDING summary and stored settings.
type GroupReplies = (Value, Value, (Option<u64>, Option<u32>));

/// NOT_FOUND when the stream went away (expired, say) between two commands; other errors as
/// they are.
pub(super) fn stream_gone(e: redis::RedisError, stream: &str) -> Error {
    if e.to_string().contains("no such key") {
        Error::NotFound(format!("there is no stream {stream:?}"))
    } else {
        e.into()
    }
}

/// The millisecond part of an entry ID.
fn id_millis(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

impl Events {
    /// Describes a stream and its groups; NOT_FOUND if it does not exist.
    pub async fn describe(&self, ns: &Namespace, stream: &str) -> Result<StreamInfo> {
        check_name("stream", stream, false)?;
        let (key, _) = keys::event_stream(ns.as_str(), stream, None);
        let mut conn = self.redis.conn();
        let (exists, length, dead_letters, first, last, time): (bool, u64, u64, Value, Value, (u64, u64)) =
            redis::pipe()
                .exists(&key)
                .cmd("XLEN")
                .arg(&key)
                .cmd("XLEN")
                .arg(keys::event_dead_letters(&key))
                .cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .cmd("XREVRANGE")
                .arg(&key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .cmd("TIME")
                .query_async(&mut conn)
                .await?;
        if !exists {
            return Err(Error::NotFound(format!("there is no stream {stream:?}")));
        }
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| stream_gone(e, stream))?;
        let now_ms = time.0 * 1000 + time.1 / 1000;
        let first_id =
            |v: &Value| crate::events::parse_entries(v).and_then(|e| e.first().map(|e| e.id.clone()));
        let mut info = StreamInfo {
            length,
            first_id: first_id(&first).unwrap_or_default(),
            last_id: first_id(&last).unwrap_or_default(),
            dead_letters,
            groups: Vec::new(),
        };
        let Value::Array(groups) = groups else { return Err(Error::unexpected("XINFO GROUPS", &groups)) };
        // What the answer may still carry: groups are always listed, consumers while they fit.
        let mut room = self.limits.response_budget().saturating_sub(groups.len() * GROUP_FRAMING);
        for group in &groups {
            let fields = fields_of(group);
            let name = fields.get("name").map(|v| text(v)).unwrap_or_default();
            let g = GroupKeys::new(ns, stream, &name);
            let described: redis::RedisResult<GroupReplies> = redis::pipe()
                .cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&key)
                .arg(&name)
                .cmd("XPENDING")
                .arg(&key)
                .arg(&name)
                .cmd("HMGET")
                .arg(&g.groups)
                .arg(&g.fields)
                .query_async(&mut conn)
                .await;
            let (consumers, summary, (ack_timeout, max_deliveries)) = match described {
                Ok(described) => described,
                // Deleted (or the stream expired) since XINFO GROUPS listed it: not a group now.
                Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => continue,
                Err(e) => return Err(no_group(e, stream, &name)),
            };
            let mut delayed = 0;
            let mut oldest_pending_age = None;
            if let Value::Array(parts) = &summary
                && let [_, min_id, _, per_consumer] = parts.as_slice()
            {
                oldest_pending_age =
                    id_millis(&text(min_id)).map(|ms| Duration::from_millis(now_ms.saturating_sub(ms)));
                if let Value::Array(per_consumer) = per_consumer {
                    for pair in per_consumer {
                        if let Value::Array(pair) = pair
                            && let [who, count] = pair.as_slice()
                            && text(who) == DELAYED_CONSUMER
                        {
                            delayed = number(count).unwrap_or(0);
                        }
                    }
                }
            }
            let all: Vec<ConsumerInfo> = match &consumers {
                Value::Array(list) => list
                    .iter()
                    .map(|c| fields_of(c))
                    .filter(|c| c.get("name").map(|v| text(v)).as_deref() != Some(DELAYED_CONSUMER))
                    .map(|c| ConsumerInfo {
                        name: c.get("name").map(|v| text(v)).unwrap_or_default(),
                        pending: c.get("pending").and_then(|v| number(v)).unwrap_or(0),
                        idle: Duration::from_millis(c.get("idle").and_then(|v| number(v)).unwrap_or(0)),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let mut consumers = Vec::with_capacity(all.len());
            let mut consumers_omitted = 0;
            for consumer in all {
                let size = consumer.name.len() + CONSUMER_FRAMING;
                if size <= room {
                    room -= size;
                    consumers.push(consumer);
                } else {
                    consumers_omitted += 1;
                }
            }
            info.groups.push(GroupInfo {
                settings: self.effective(ack_timeout, max_deliveries),
                pending: fields.get("pending").and_then(|v| number(v)).unwrap_or(0),
                delayed,
                lag: fields.get("lag").and_then(|v| number(v)),
                last_delivered_id: fields.get("last-delivered-id").map(|v| text(v)).unwrap_or_default(),
                oldest_pending_age,
                consumers,
                consumers_omitted,
                name,
            });
        }
        Ok(info)
    }
}
