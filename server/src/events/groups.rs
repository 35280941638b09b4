//! Consumer groups of the Events service: at-least-once delivery of a stream's entries, each to
//! one consumer of a group, with acknowledgements, delayed redelivery and dead letters.
//!
//! Redis keeps the truth: the group and its pending entries list (who has which entry, since
//! when, how many deliveries) live in the stream; the group's settings in a hash beside it,
//! shared by the stream's groups (`keys::event_groups`, fields from [`settings_fields`]), so
//! that an append refreshes its idle expiry with the stream's; entries delivered too often
//! move to the dead-letter stream (`keys::event_dead_letters`). All three share the stream's
//! hash tag, so every step is one script, also on a Cluster. A stream has at most
//! `events.max_groups_per_stream` groups.
//!
//! A `Consume` is a task that asks `fetch.lua` for the next entries only once the previous
//! message has left for the client and fewer than `max_in_flight` entries are unacknowledged
//! (those in transit included), so few entries wait in buffers while their ack timeout runs.
//! The script hands out the consumer's own and expired entries and says how many new ones the
//! consumer may take; the task reads those with a plain XREADGROUP right after it (in Lua, each
//! entry's conversion into tables and back cost Redis more than the read).
//! Every [`POLL`] a fetch also looks for entries idle past the ack timeout, unless another
//! consumer of the group just found them all: it lists the group's pending entries from the
//! group's scan cursor on, at most [`LOOK_SHARE`] of them, and claims (XCLAIM) those idle past
//! the ack timeout. When nothing is ready it waits for new entries with XREADGROUP BLOCK on a dedicated
//! connection until that next look is due, so entries whose ack timeout ran out elsewhere (or
//! whose Nack delay ended) are picked up within [`POLL`] of becoming due. A consumer at its
//! in-flight bound waits for an Ack made through this replica (a local signal) or, at most,
//! [`POLL`] (acks through other replicas).
//!
//! Rooms: this file holds what every step shares (keys, settings, reply parsing, limits) and
//! the group's management, acks and nacks; the consumer's task is in `consumer`, and
//! `DescribeStream` in `describe`. It stays one room past 600 lines because the shared parts
//! and the scripts' arguments must be read together.

mod consumer;
mod describe;

pub use describe::{ConsumerInfo, GroupInfo, StreamInfo};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::{RedisError, Script, Value};
use tokio::sync::{Notify, mpsc};

use super::retention::Registration;
use super::{Events, check_name, parse_entry_id};
use crate::convert::millis;
use crate::drain::SHUTDOWN_MESSAGE;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::scripts::{self, evalsha};
use crate::redis::{keys, timed};

/// In-flight bound of a consumer that asks for none.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 100;
/// Longest wait before a consumer looks again for entries whose ack timeout or Nack delay ran
/// out, and before one at its in-flight bound checks for acks made through other replicas.
pub const POLL: Duration = Duration::from_millis(500);
/// Field bytes after which one fetch takes no more entries: bounds the script's reply, and (by
/// the size of the entries last read) how many new entries one XREADGROUP asks for.
const FETCH_BYTES: usize = 1024 * 1024;
/// Most entries one fetch (or one blocking read) delivers, whatever the in-flight bound: Redis
/// runs one script at a time for every namespace, so a fetch's work is bounded by a constant
/// (about a millisecond of Redis's time), and a larger batch takes several fetches.
pub const FETCH_MAX_ENTRIES: u32 = 128;
/// Most pending entries one look for expired entries examines. A pass over a longer pending
/// list is spread over several looks (the cursor is the group's, so every consumer's look
/// moves it on); it was one scan of the whole list (100,000 entries: 12-16 ms) per look.
pub const LOOK_SHARE: u32 = 1000;
/// Most of a consumer's own entries from before it started that are counted while they are
/// delivered again (the count lists them): the in-flight bound during that replay is at most
/// this.
pub const HISTORY_IN_FLIGHT: u32 = 1000;
/// How long a group's scan cursor lives without a look (then the next look starts over).
const SCAN_CURSOR_LIFE: Duration = Duration::from_secs(60);
/// Room left in a gRPC message for everything but the entries' fields.
const MESSAGE_MARGIN: usize = 64 * 1024;
/// How long past its BLOCK time a blocking read may take before its connection is deemed dead.
const BLOCK_GRACE: Duration = Duration::from_secs(5);
/// How long a consumer's lease lasts without renewal (each fetch renews it, at least every
/// [`POLL`] plus a blocking read's grace). A newer Consume takes a name over at once; the lease
/// only tells an older call, at its next fetch, that it has been replaced.
const LEASE: Duration = Duration::from_secs(10);
/// How often a consumer forgets the group's long-idle consumers that hold nothing.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Idle time after which a consumer holding nothing is forgotten.
const PRUNE_IDLE: Duration = Duration::from_secs(3600);
/// Most entry IDs in one Ack or Nack.
pub const MAX_IDS: usize = 10_000;
/// Pending entries acknowledged per round trip while a group is deleted.
const DRAIN_BATCH: usize = 1000;
/// The consumer that holds nacked entries until their delay ends; not a valid consumer name.
const DELAYED_CONSUMER: &str = "~delayed";

/// How a group delivers, as asked for; unset fields follow the server's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSettings {
    /// How long a delivered entry may stay unacknowledged.
    pub ack_timeout: Option<Duration>,
    /// Deliveries after which an entry moves to the dead letters (0: never).
    pub max_deliveries: Option<u32>,
}

/// How a group delivers, with the server's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveSettings {
    /// How long a delivered entry may stay unacknowledged.
    pub ack_timeout: Duration,
    /// Deliveries after which an entry moves to the dead letters (0: never).
    pub max_deliveries: u32,
}

/// What a `Consume` asks for.
#[derive(Debug, Clone, Default)]
pub struct ConsumeRequest {
    /// The stream.
    pub stream: String,
    /// The group.
    pub group: String,
    /// The consumer's name.
    pub consumer: String,
    /// Create the group (at the first entry) if it does not exist.
    pub create_group: bool,
    /// Settings of a group this call creates.
    pub settings: GroupSettings,
    /// Most unacknowledged deliveries at once (0: [`DEFAULT_MAX_IN_FLIGHT`]).
    pub max_in_flight: u32,
}

/// An entry delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The entry's ID.
    pub id: String,
    /// Its fields.
    pub fields: HashMap<String, Vec<u8>>,
    /// How many times it has been delivered, this time included.
    pub deliveries: u64,
}

/// One message of a consumer's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumeEvent {
    /// The consumer is live (first message).
    Started {
        /// The group's settings.
        settings: EffectiveSettings,
        /// The in-flight bound in effect.
        max_in_flight: u32,
    },
    /// Entries to process, and how many pending entries were found trimmed away.
    Deliveries {
        /// The entries.
        deliveries: Vec<Delivery>,
        /// Pending entries trimmed from the stream before they could be delivered again.
        trimmed: u64,
    },
}

/// Local signals that a group had entries acknowledged or given back through this replica, so
/// that its consumers at their in-flight bound look again at once.
#[derive(Debug, Default)]
pub struct AckSignals(Mutex<HashMap<String, Weak<Notify>>>);

impl AckSignals {
    fn subscribe(&self, key: &str) -> Arc<Notify> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = map.get(key).and_then(Weak::upgrade) {
            return notify;
        }
        map.retain(|_, notify| notify.strong_count() > 0);
        let notify = Arc::new(Notify::new());
        map.insert(key.to_owned(), Arc::downgrade(&notify));
        notify
    }

    fn signal(&self, key: &str) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = map.get(key).and_then(Weak::upgrade) {
            notify.notify_waiters();
        }
    }
}

/// The fields of group `group`'s settings (ack timeout in ms, delivery limit) in its stream's
/// settings hash. The prefixes end in `:` and group names are restricted, so the fields of
/// two groups never meet.
fn settings_fields(group: &str) -> [String; 2] {
    [format!("ack_timeout_ms:{group}"), format!("max_deliveries:{group}")]
}

/// The keys of one stream's group machinery.
struct GroupKeys {
    /// The stream's name, as the client gave it.
    name: String,
    stream: String,
    dead_letters: String,
    /// The settings hash of the stream's groups.
    groups: String,
    /// The group's fields in it.
    fields: [String; 2],
    /// The stream's registration mark (see `retention.rs`).
    mark: String,
    expiry_look: String,
    /// Where the group's look for expired entries goes on.
    scan_cursor: String,
    /// Names the group locally (for [`AckSignals`]).
    signal: String,
}

impl GroupKeys {
    fn new(ns: &Namespace, name: &str, group: &str) -> Self {
        let (stream, _) = keys::event_stream(ns.as_str(), name, None);
        Self {
            dead_letters: keys::event_dead_letters(&stream),
            groups: keys::event_groups(&stream),
            fields: settings_fields(group),
            mark: keys::event_stream_mark(&stream),
            expiry_look: keys::event_group_expiry_look(&stream, group),
            scan_cursor: keys::event_group_scan_cursor(&stream, group),
            signal: format!("{stream}\n{group}"),
            stream,
            name: name.to_owned(),
        }
    }
}

/// Maps Redis's NOGROUP (no such stream or group) to NOT_FOUND.
fn no_group(e: RedisError, stream: &str, group: &str) -> Error {
    if e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP") {
        Error::NotFound(format!(
            "stream {stream:?} has no consumer group {group:?}; create it with CreateGroup (or Consume with create_group)"
        ))
    } else {
        // Every caller may have written (claimed, acked, moved entries) before failing.
        Error::from_write(e)
    }
}

fn check_ids(ids: &[String]) -> Result<Vec<String>> {
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(Error::InvalidArgument(format!("give 1 to {MAX_IDS} entry IDs")));
    }
    ids.iter().map(|id| parse_entry_id(id)).collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(_) | Value::SimpleString(_) => text(value).parse().ok(),
        _ => None,
    }
}

/// XINFO's replies: a map (RESP3) or a flat list of names and values (RESP2).
fn fields_of(value: &Value) -> HashMap<String, &Value> {
    match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), v)).collect(),
        Value::Array(flat) => flat.chunks(2).filter_map(|p| Some((text(p.first()?), p.get(1)?))).collect(),
        _ => HashMap::new(),
    }
}

/// Parses `fetch.lua`'s reply.
struct Fetched {
    history: String,
    trimmed: u64,
    dead_lettered: u64,
    free_slots: u64,
    /// Whether this fetch looked for entries idle past the ack timeout: 0 no, 1 it completed a
    /// pass, 2 it ran out of room with more perhaps waiting, 3 it examined its share of the
    /// pending list and left the rest to the next look.
    looked_for_expired: u64,
    deliveries: Vec<Delivery>,
    /// How many new entries the consumer may read now, past the deliveries.
    new_entries: u64,
}

fn parse_delivery(value: &Value) -> Option<Delivery> {
    let Value::Array(parts) = value else { return None };
    let [id, Value::Array(pairs), count] = parts.as_slice() else { return None };
    let mut fields = HashMap::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks(2) {
        let [Value::BulkString(name), Value::BulkString(value)] = pair else { return None };
        fields.insert(String::from_utf8_lossy(name).into_owned(), value.clone());
    }
    Some(Delivery { id: text(id), fields, deliveries: number(count)? })
}

fn parse_fetched(value: &Value) -> Option<Fetched> {
    let Value::Array(parts) = value else { return None };
    let [history, trimmed, dead, free, looked, Value::Array(deliveries), new] = parts.as_slice() else {
        return None;
    };
    Some(Fetched {
        history: text(history),
        trimmed: number(trimmed)?,
        dead_lettered: number(dead)?,
        free_slots: number(free)?,
        looked_for_expired: number(looked)?,
        deliveries: deliveries.iter().map(parse_delivery).collect::<Option<_>>()?,
        new_entries: number(new)?,
    })
}

/// About how many bytes a delivery takes in a message.
fn encoded_size(delivery: &Delivery) -> usize {
    delivery.id.len()
        + 16
        + delivery.fields.iter().map(|(name, value)| name.len() + value.len() + 8).sum::<usize>()
}

/// Splits deliveries, in order, into messages of at most `limit` bytes (one delivery alone
/// always fits: appends are bounded well below the message limit).
fn split_by_size(deliveries: Vec<Delivery>, limit: usize) -> Vec<Vec<Delivery>> {
    let mut messages = vec![Vec::new()];
    let mut size = 0;
    for delivery in deliveries {
        let bytes = encoded_size(&delivery);
        if size + bytes > limit && messages.last().is_some_and(|m| !m.is_empty()) {
            messages.push(Vec::new());
            size = 0;
        }
        size += bytes;
        messages.last_mut().expect("never empty").push(delivery);
    }
    messages
}

/// Where a new group starts, from the API's form (empty, `$` or an ID) to XGROUP's.
fn group_start(start: &str) -> Result<String> {
    match start {
        "" => Ok("0".into()),
        "$" => Ok("$".into()),
        id => parse_entry_id(id),
    }
}

impl Events {
    fn check_settings(&self, settings: &GroupSettings) -> Result<()> {
        if let Some(timeout) = settings.ack_timeout
            && (timeout < Duration::from_millis(1) || timeout > self.config.max_ack_timeout)
        {
            return Err(Error::InvalidArgument(format!(
                "ack_timeout must be between 1 ms and {:?} (events.max_ack_timeout)",
                self.config.max_ack_timeout
            )));
        }
        Ok(())
    }

    async fn create_group_at(
        &self,
        ns: &Namespace,
        keys: &GroupKeys,
        group: &str,
        start: &str,
        settings: GroupSettings,
    ) -> Result<bool> {
        self.check_settings(&settings)?;
        // A stream not counted in its namespace's index yet is registered first (see
        // `retention.rs`): a group creation may create the stream.
        let mut registration = Registration::Unknown;
        loop {
            let mut cmd = evalsha(
                &scripts::EVENTS_CREATE_GROUP,
                &[&keys.stream, &keys.groups, &keys.mark, &keys.dead_letters],
            );
            let (registered, mark_life) = registration.args();
            // Stored resolved, so that every replica applies the same values whatever its config.
            cmd.arg(group)
                .arg(start)
                .arg(millis(settings.ack_timeout.unwrap_or(self.config.ack_timeout)))
                .arg(settings.max_deliveries.unwrap_or(self.config.max_deliveries))
                .arg(&keys.fields[0])
                .arg(&keys.fields[1])
                .arg(self.idle_ttl_ms())
                .arg(registered)
                .arg(mark_life)
                .arg(self.config.max_groups_per_stream);
            let created: i64 = timed(
                "events.create_group",
                scripts::run(&mut self.redis.conn(), &scripts::EVENTS_CREATE_GROUP, &cmd),
            )
            .await
            .map_err(Error::from_write)?;
            match created {
                -1 if registration == Registration::Unknown => {
                    registration = self.register_stream(ns, &keys.name).await?;
                }
                -2 => {
                    return Err(Error::ResourceExhausted(format!(
                        "stream {:?} has {} consumer groups, the most it may have (events.max_groups_per_stream); \
                         delete one first",
                        keys.name, self.config.max_groups_per_stream
                    )));
                }
                0 | 1 => return Ok(created == 1),
                _ => return Err(Error::unexpected("events create group", &Value::Int(created))),
            }
        }
    }

    /// Creates a consumer group (and the stream, if needed); ALREADY_EXISTS if it exists.
    pub async fn create_group(
        &self,
        ns: &Namespace,
        stream: &str,
        group: &str,
        start: &str,
        settings: GroupSettings,
    ) -> Result<()> {
        check_name("stream", stream, false)?;
        check_name("group", group, false)?;
        let start = group_start(start)?;
        let keys = GroupKeys::new(ns, stream, group);
        if self.create_group_at(ns, &keys, group, &start, settings).await? {
            Ok(())
        } else {
            Err(Error::AlreadyExists(format!("stream {stream:?} already has a consumer group {group:?}")))
        }
    }

    /// Acknowledges a group's pending entries, [`DRAIN_BATCH`] per round trip, so that deleting
    /// it frees no long pending list in one step (XGROUP DESTROY of 100,000 pending entries
    /// held Redis for about 6 ms). A missing group has nothing to drain. A deletion that fails
    /// midway may have acknowledged part of the group's entries: the caller meant to drop them
    /// with the group, and retries the deletion.
    async fn drain_pending(&self, keys: &GroupKeys, group: &str) -> Result<()> {
        let mut conn = self.redis.conn();
        let no_group = |e: &RedisError| e.code() == Some("NOGROUP");
        // The walk is bounded by what was pending when it began: live consumers may keep
        // taking entries meanwhile, and what they take after the walk goes with the group.
        let summary: Value =
            match redis::cmd("XPENDING").arg(&keys.stream).arg(group).query_async(&mut conn).await {
                Ok(summary) => summary,
                Err(e) if no_group(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
        let pending = match &summary {
            Value::Array(parts) => parts.first().and_then(number).unwrap_or(0),
            _ => 0,
        };
        let mut from = "-".to_owned();
        for _ in 0..=pending / DRAIN_BATCH as u64 {
            let batch: Value = match timed(
                "events.delete_group",
                redis::cmd("XPENDING")
                    .arg(&keys.stream)
                    .arg(group)
                    .arg(&from)
                    .arg("+")
                    .arg(DRAIN_BATCH)
                    .query_async(&mut conn),
            )
            .await
            {
                Ok(batch) => batch,
                Err(e) if no_group(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let Value::Array(entries) = &batch else { return Err(Error::unexpected("XPENDING", &batch)) };
            let ids: Vec<String> = entries
                .iter()
                .filter_map(|entry| match entry {
                    Value::Array(fields) => fields.first().map(text),
                    _ => None,
                })
                .collect();
            let Some(last) = ids.last() else { return Ok(()) };
            from = format!("({last}");
            timed(
                "events.delete_group",
                redis::cmd("XACK").arg(&keys.stream).arg(group).arg(&ids).query_async::<u64>(&mut conn),
            )
            .await
            .map_err(Error::from_write)?;
        }
        Ok(())
    }

    /// Deletes a consumer group; false when there was none.
    pub async fn delete_group(&self, ns: &Namespace, stream: &str, group: &str) -> Result<bool> {
        check_name("stream", stream, false)?;
        check_name("group", group, false)?;
        let keys = GroupKeys::new(ns, stream, group);
        self.drain_pending(&keys, group).await?;
        let cmd = evalsha(&scripts::EVENTS_DELETE_GROUP, &[&keys.stream, &keys.groups])
            .arg(group)
            .arg(&keys.fields)
            .to_owned();
        let deleted: i64 = timed(
            "events.delete_group",
            scripts::run(&mut self.redis.conn(), &scripts::EVENTS_DELETE_GROUP, &cmd),
        )
        .await
        .map_err(Error::from_write)?;
        Ok(deleted == 1)
    }

    /// Refuses a consumer name new to a group that already has `events.max_consumers_per_group`
    /// consumers (a returning one is always let in), so that what a group describes, and what
    /// its pending-list scans cover, stays bounded. XINFO GROUPS costs Redis O(groups), at most
    /// `events.max_groups_per_stream`; XINFO CONSUMERS, O(consumers), runs only at the cap,
    /// where it is bounded by it.
    async fn check_room_for_consumer(&self, keys: &GroupKeys, group: &str, consumer: &str) -> Result<()> {
        let cap = u64::from(self.config.max_consumers_per_group);
        let mut conn = self.redis.conn();
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&keys.stream)
            .query_async(&mut conn)
            .await
            .map_err(|e| describe::stream_gone(e, &keys.name))?;
        let Value::Array(groups) = &groups else { return Err(Error::unexpected("XINFO GROUPS", &groups)) };
        let consumers = groups
            .iter()
            .map(fields_of)
            .find(|fields| fields.get("name").is_some_and(|name| text(name) == group))
            .and_then(|fields| fields.get("consumers").and_then(|n| number(n)))
            .unwrap_or(0);
        if consumers < cap {
            return Ok(());
        }
        let known: Value =
            redis::cmd("XINFO").arg("CONSUMERS").arg(&keys.stream).arg(group).query_async(&mut conn).await?;
        let Value::Array(known) = &known else { return Err(Error::unexpected("XINFO CONSUMERS", &known)) };
        let names: Vec<String> =
            known.iter().filter_map(|fields| fields_of(fields).get("name").map(|name| text(name))).collect();
        // The consumer holding nacked entries is the group's own, not a client's: it takes no
        // place (else a group whose clients all left could never be joined again).
        let clients = names.iter().filter(|name| name.as_str() != DELAYED_CONSUMER).count() as u64;
        if clients < cap || names.iter().any(|name| name == consumer) {
            return Ok(());
        }
        Err(Error::ResourceExhausted(format!(
            "group {group:?} has {clients} consumers, the most a group may have (events.max_consumers_per_group); \
             reuse a consumer name (a consumer that holds nothing is forgotten when it leaves, or after an hour idle)"
        )))
    }

    /// A group's settings with the server's defaults filled in; NOT_FOUND without the group.
    async fn settings_of(&self, keys: &GroupKeys, stream: &str, group: &str) -> Result<EffectiveSettings> {
        // One round trip: XPENDING fails with NOGROUP when the stream or the group does not
        // exist, and HMGET reads the settings.
        let ((ack_timeout, max_deliveries),): ((Option<u64>, Option<u32>),) = redis::pipe()
            .cmd("XPENDING")
            .arg(&keys.stream)
            .arg(group)
            .ignore()
            .cmd("HMGET")
            .arg(&keys.groups)
            .arg(&keys.fields)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(|e| no_group(e, stream, group))?;
        Ok(self.effective(ack_timeout, max_deliveries))
    }

    fn effective(&self, ack_timeout_ms: Option<u64>, max_deliveries: Option<u32>) -> EffectiveSettings {
        EffectiveSettings {
            ack_timeout: ack_timeout_ms.map_or(self.config.ack_timeout, Duration::from_millis),
            max_deliveries: max_deliveries.unwrap_or(self.config.max_deliveries),
        }
    }

    /// Acknowledges entries; returns how many were pending.
    pub async fn ack(&self, ns: &Namespace, stream: &str, group: &str, ids: &[String]) -> Result<u64> {
        check_name("stream", stream, false)?;
        check_name("group", group, false)?;
        let ids = check_ids(ids)?;
        let keys = GroupKeys::new(ns, stream, group);
        let acked: u64 = timed(
            "events.ack",
            redis::cmd("XACK").arg(&keys.stream).arg(group).arg(&ids).query_async(&mut self.redis.conn()),
        )
        .await
        .map_err(|e| no_group(e, stream, group))?;
        if acked < ids.len() as u64 {
            // XACK answers 0 for a group that does not exist: tell that apart from entries
            // already acknowledged.
            self.settings_of(&keys, stream, group).await?;
        }
        self.acks.signal(&keys.signal);
        Ok(acked)
    }

    /// Gives entries pending for `consumer` back, for delivery after `delay`; returns how many
    /// were requeued and how many moved to the dead letters.
    pub async fn nack(
        &self,
        ns: &Namespace,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[String],
        delay: Duration,
    ) -> Result<(u64, u64)> {
        check_name("stream", stream, false)?;
        check_name("group", group, false)?;
        check_name("consumer", consumer, false)?;
        let ids = check_ids(ids)?;
        let keys = GroupKeys::new(ns, stream, group);
        self.requeue(&keys, group, consumer, &ids, delay, false).await
    }

    /// Gives entries back: after `delay` when the client nacked them (dead-lettering those at
    /// the delivery limit), or at once and uncounted when they never reached the client.
    async fn requeue(
        &self,
        keys: &GroupKeys,
        group: &str,
        consumer: &str,
        ids: &[String],
        delay: Duration,
        undelivered: bool,
    ) -> Result<(u64, u64)> {
        let nack = |script: &Script, dead_letter: bool| {
            let mut cmd = evalsha(script, &[&keys.stream, &keys.dead_letters, &keys.groups]);
            cmd.arg(group)
                .arg(consumer)
                .arg(millis(delay))
                .arg(millis(self.config.ack_timeout))
                .arg(self.config.max_deliveries)
                .arg(self.config.stream_max_len)
                .arg(if undelivered { "1" } else { "0" })
                .arg(if dead_letter { "1" } else { "0" })
                .arg(&keys.fields)
                .arg(ids);
            cmd
        };
        let mut conn = self.redis.conn();
        let cmd = nack(&scripts::EVENTS_NACK, true);
        let mut outcome: redis::RedisResult<(i64, u64)> =
            timed("events.nack", scripts::run(&mut conn, &scripts::EVENTS_NACK, &cmd)).await;
        // Over maxmemory, Redis refuses the script that may copy entries to the dead letters
        // before it runs (so nothing happened); entries are then given back without it (memory
        // stays steady), and those at their delivery limit move at their next delivery.
        if matches!(&outcome, Err(e) if e.code() == Some("OOM")) {
            let cmd = nack(&scripts::EVENTS_NACK_AT_MAXMEMORY, false);
            outcome =
                timed("events.nack", scripts::run(&mut conn, &scripts::EVENTS_NACK_AT_MAXMEMORY, &cmd)).await;
        }
        let (requeued, dead) = outcome.map_err(|e| no_group(e, &keys.name, group))?;
        let Ok(requeued) = u64::try_from(requeued) else {
            return Err(Error::InvalidArgument(format!(
                "delay must not exceed the group's ack timeout ({:?})",
                Duration::from_millis(dead)
            )));
        };
        if dead > 0 {
            metrics::counter!("rookery_events_dead_lettered_total").increment(dead);
        }
        self.acks.signal(&keys.signal);
        Ok((requeued, dead))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_starts_parse() {
        assert_eq!(group_start("").unwrap(), "0");
        assert_eq!(group_start("$").unwrap(), "$");
        assert_eq!(group_start("5-1").unwrap(), "5-1");
        assert!(group_start("later").is_err());
    }

    #[test]
    fn the_delayed_consumer_cannot_be_named_by_a_client() {
        assert!(check_name("consumer", DELAYED_CONSUMER, false).is_err());
    }

    #[test]
    fn deliveries_split_into_messages_that_fit() {
        let delivery = |n: usize| Delivery {
            id: format!("{n}-0"),
            fields: HashMap::from([("v".to_owned(), vec![0; 400])]),
            deliveries: 1,
        };
        let messages = split_by_size((0..10).map(delivery).collect(), 1000);
        assert_eq!(messages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 2, 2]);
        assert_eq!(
            messages.concat().iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
            (0..10).map(|n| format!("{n}-0")).collect::<Vec<_>>()
        );
        // One delivery larger than the limit still goes, alone.
        assert_eq!(split_by_size(vec![delivery(0), delivery(1)], 100).len(), 2);
        assert_eq!(split_by_size(Vec::new(), 100), vec![Vec::<Delivery>::new()]);
    }

    #[test]
    fn fetch_replies_parse() {
        let reply = Value::Array(vec![
            Value::BulkString(b"".to_vec()),
            Value::Int(1),
            Value::Int(0),
            Value::Int(7),
            Value::Int(1),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"5-1".to_vec()),
                Value::Array(vec![Value::BulkString(b"k".to_vec()), Value::BulkString(b"v".to_vec())]),
                Value::Int(2),
            ])]),
            Value::Int(6),
        ]);
        let fetched = parse_fetched(&reply).unwrap();
        assert_eq!((fetched.trimmed, fetched.free_slots, fetched.looked_for_expired), (1, 7, 1));
        assert_eq!(fetched.new_entries, 6);
        assert_eq!(fetched.deliveries[0].id, "5-1");
        assert_eq!(fetched.deliveries[0].deliveries, 2);
        assert_eq!(fetched.deliveries[0].fields["k"], b"v");
    }
}
