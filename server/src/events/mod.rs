//! The Events service's domain logic: durable streams here (Redis Streams: `append.lua`, XRANGE,
//! and XREAD BLOCK on dedicated connections), publish/subscribe over the replica's one Redis
//! pub/sub connection in `pubsub.rs`; `grpc.rs` adapts it to the generated API.
//!
//! Consumer groups (Consume, Ack, Nack, dead letters, DescribeStream) live in `groups.rs`;
//! how long streams live and how many a namespace may have (and why that works on a Cluster)
//! in `retention.rs`; concurrent appends to one stream commit together in `coalesce.rs`.
//!
//! Channels are namespaced by a prefix (`keys::events_channel_prefix`). Names of channels,
//! patterns and streams are limited to `A-Z a-z 0-9 . _ - / :` (plus `*` and `?` in patterns),
//! so a pattern is a Redis glob that cannot leave its namespace.

mod coalesce;
pub mod groups;
mod grpc;
mod pipelined;
mod pubsub;
mod retention;

pub use grpc::EventsApi;
pub use pubsub::Event;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::mpsc;

use crate::config::{EventsConfig, LimitsConfig};
use crate::drain::{Drain, SHUTDOWN_MESSAGE};
use crate::error::{Error, Result};
use crate::fair_share::{FairShare, ShareGuard};
use crate::namespace::Namespace;
use crate::redis::blocking::BlockingManager;
use crate::redis::scripts::{self, evalsha};
use crate::redis::{RedisPool, keys, timed};

/// Longest channel name or pattern.
const MAX_NAME: usize = 256;

/// Entries read per round trip.
const READ_BATCH: usize = 100;
/// How long one blocking read waits for new entries before checking on its reader.
const BLOCK: Duration = Duration::from_secs(5);
/// How often a caught-up reader that could get no dedicated connection looks for new entries
/// (the wait for a connection included).
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Longest field name of a stream entry.
const MAX_FIELD_NAME: usize = 256;
/// Field names that dead letters add to an entry's own: no appended entry may use them.
const RESERVED_FIELD_PREFIX: &str = "rookery.";

/// One entry of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// Its ID (`<ms>-<seq>`).
    pub id: String,
    /// Its fields.
    pub fields: HashMap<String, Vec<u8>>,
}

/// What to append.
#[derive(Debug, Clone, Default)]
pub struct Append {
    /// The fields.
    pub fields: HashMap<String, Vec<u8>>,
    /// Keep about this many entries (0: none).
    pub max_len: u64,
    /// Drop entries older than this.
    pub max_age: Option<Duration>,
    /// Makes a retried append safe.
    pub idempotency_key: Option<String>,
}

/// One entry of an `AppendMany`.
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    /// The fields.
    pub fields: HashMap<String, Vec<u8>>,
    /// Makes a retried append of this entry safe.
    pub idempotency_key: Option<String>,
}

/// How an append trims its stream, checked and with the server's bound filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Trim {
    /// Keep about this many entries.
    max_len: u64,
    /// Drop entries older than this.
    max_age: Option<Duration>,
}

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    /// The first entry.
    Beginning,
    /// Entries appended from now on.
    End,
    /// The entries after this ID.
    After(String),
}

/// An entry ID in Redis's canonical form (`<ms>-<seq>`; a bare `<ms>` means `<ms>-0`).
fn parse_entry_id(id: &str) -> Result<String> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    match (ms.parse::<u64>(), seq.parse::<u64>()) {
        (Ok(ms), Ok(seq)) => Ok(format!("{ms}-{seq}")),
        _ => Err(Error::InvalidArgument(format!("{id:?} is not an entry ID (like 1700000000000-0)"))),
    }
}

fn parse_start(after: &str) -> Result<Start> {
    match after {
        "" => Ok(Start::Beginning),
        "$" => Ok(Start::End),
        id => {
            let id = parse_entry_id(id).map_err(|_| {
                Error::InvalidArgument(format!(
                    "after must be empty, $ or an entry ID like 1700000000000-0, got {after:?}"
                ))
            })?;
            // Redis refuses a range that starts after the last possible ID.
            if id == format!("{}-{}", u64::MAX, u64::MAX) {
                return Err(Error::InvalidArgument("no entry can follow the last possible ID".into()));
            }
            Ok(Start::After(id))
        }
    }
}

/// Parses `[id, [field, value, ...]]` entries (XRANGE's reply, and each stream's in XREAD's).
fn parse_entries(value: &Value) -> Option<Vec<StreamEntry>> {
    let Value::Array(entries) = value else { return None };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(parts) = entry else { return None };
            let [Value::BulkString(id), Value::Array(pairs)] = parts.as_slice() else { return None };
            let mut fields = HashMap::with_capacity(pairs.len() / 2);
            for pair in pairs.chunks(2) {
                let [Value::BulkString(name), Value::BulkString(value)] = pair else { return None };
                fields.insert(String::from_utf8_lossy(name).into_owned(), value.clone());
            }
            Some(StreamEntry { id: String::from_utf8_lossy(id).into_owned(), fields })
        })
        .collect()
}

/// The Events service's domain logic.
#[derive(Debug)]
pub struct Events {
    redis: Arc<RedisPool>,
    limits: LimitsConfig,
    config: EventsConfig,
    shares: Arc<FairShare>,
    drain: Drain,
    acks: groups::AckSignals,
    appends: coalesce::AppendQueues,
}

fn check_name(what: &str, name: &str, pattern: bool) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:".contains(c) || (pattern && "*?".contains(c));
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(allowed) {
        let extra = if pattern { ", plus * and ?" } else { "" };
        return Err(Error::InvalidArgument(format!(
            "{what} {name:?} must be 1 to {MAX_NAME} characters of A-Z a-z 0-9 . _ - / :{extra}"
        )));
    }
    Ok(())
}

impl Events {
    /// Builds the service, waiting up to `startup_wait` for the replica's pub/sub hub.
    pub async fn start(
        redis: Arc<RedisPool>,
        limits: LimitsConfig,
        config: EventsConfig,
        shares: Arc<FairShare>,
        drain: Drain,
        startup_wait: Duration,
    ) -> Self {
        if !redis.hub().wait_connected(startup_wait).await {
            tracing::warn!("events pub/sub connection not live yet; Subscribe waits for it");
        }
        Self {
            redis,
            limits,
            config,
            shares,
            drain,
            acks: groups::AckSignals::default(),
            appends: coalesce::AppendQueues::default(),
        }
    }

    /// The Redis this service uses.
    pub fn redis(&self) -> &Arc<RedisPool> {
        &self.redis
    }

    /// Whether Redis answers and the hub's connection is live.
    pub async fn is_healthy(&self) -> bool {
        self.redis.hub().is_connected() && self.redis.ping().await
    }

    /// A dedicated blocking connection for a reader of `ns`, within the namespace's fair share
    /// and waiting at most `wait` for the pool; `None` when either is used up (the reader
    /// then polls: slower to see new entries, never an error). Hold the guard as long as the
    /// connection.
    async fn blocking_connection(
        &self,
        ns: &Namespace,
        wait: Duration,
    ) -> Option<(ShareGuard, bb8::PooledConnection<'_, BlockingManager>)> {
        let Some(share) = self.shares.blocking(ns) else {
            metrics::counter!("rookery_events_blocking_share_exhausted_total").increment(1);
            return None;
        };
        match tokio::time::timeout(wait, self.redis.blocking().get()).await {
            Ok(Ok(conn)) => Some((share, conn)),
            _ => {
                metrics::counter!("rookery_events_blocking_pool_exhausted_total").increment(1);
                None
            }
        }
    }

    /// Checks one entry to append; `what` names it in messages ("the entry", "entry 3").
    fn check_entry(&self, what: &str, entry: &NewEntry) -> Result<()> {
        if entry.fields.is_empty() {
            return Err(Error::InvalidArgument(format!("{what} needs at least one field")));
        }
        let mut size = 0;
        for (name, value) in &entry.fields {
            if name.is_empty() || name.len() > MAX_FIELD_NAME {
                return Err(Error::InvalidArgument(format!(
                    "{what}: field names must be 1 to {MAX_FIELD_NAME} bytes"
                )));
            }
            if name.starts_with(RESERVED_FIELD_PREFIX) {
                return Err(Error::InvalidArgument(format!(
                    "{what}: field names starting with {RESERVED_FIELD_PREFIX:?} are reserved (dead letters use them)"
                )));
            }
            size += name.len() + value.len();
        }
        if size > self.limits.max_value_bytes {
            return Err(Error::InvalidArgument(format!(
                "{what} is {size} bytes; the limit is {} (limits.max_value_bytes)",
                self.limits.max_value_bytes
            )));
        }
        if let Some(key) = &entry.idempotency_key {
            self.limits.check_name("idempotency_key", key)?;
        }
        Ok(())
    }

    /// Appends entries in order, in one script call (one round trip): they get increasing IDs,
    /// and each with an idempotency key is added at most once per key. Returns each entry's ID
    /// and whether it was a retry, in the entries' order. All or nothing: an invalid entry, or a
    /// stream that cannot be created, adds none.
    pub async fn append_many(
        &self,
        ns: &Namespace,
        stream: &str,
        entries: Vec<NewEntry>,
        max_len: u64,
        max_age: Option<Duration>,
    ) -> Result<Vec<(String, bool)>> {
        if entries.is_empty() || entries.len() > self.limits.max_batch_keys {
            return Err(Error::InvalidArgument(format!(
                "an append takes 1 to {} entries (limits.max_batch_keys), got {}",
                self.limits.max_batch_keys,
                entries.len()
            )));
        }
        for (i, entry) in entries.iter().enumerate() {
            let what = if entries.len() == 1 { "the entry".to_owned() } else { format!("entry {i}") };
            self.check_entry(&what, entry)?;
        }
        let trim = self.check_trim(stream, max_len, max_age)?;
        self.write_entries(ns, stream, &entries, trim).await
    }

    /// Checks an append's stream name and trimming; returns the trimming to apply.
    fn check_trim(&self, stream: &str, max_len: u64, max_age: Option<Duration>) -> Result<Trim> {
        check_name("stream", stream, false)?;
        // No stream grows past `events.stream_max_len`, by accident or on purpose: that bound is
        // what the worst-case memory of a namespace's streams is computed from.
        if max_len > self.config.stream_max_len {
            return Err(Error::InvalidArgument(format!(
                "max_len {max_len} exceeds the server's bound of {} entries (events.stream_max_len)",
                self.config.stream_max_len
            )));
        }
        Ok(Trim {
            max_len: if max_len == 0 { self.config.stream_max_len } else { max_len },
            max_age: max_age.filter(|age| !age.is_zero()),
        })
    }

    /// Writes checked entries in order in one script call (see [`Self::append_many`]).
    async fn write_entries(
        &self,
        ns: &Namespace,
        stream: &str,
        entries: &[NewEntry],
        Trim { max_len, max_age }: Trim,
    ) -> Result<Vec<(String, bool)>> {
        let (key, _) = keys::event_stream(ns.as_str(), stream, None);
        let (mark, dead, groups) =
            (keys::event_stream_mark(&key), keys::event_dead_letters(&key), keys::event_groups(&key));
        let markers: Vec<Option<String>> = entries
            .iter()
            .map(|entry| entry.idempotency_key.as_deref().map(|k| keys::event_idempotency_marker(&key, k)))
            .collect();
        let mut keys: Vec<&str> = vec![&key, &mark, &dead, &groups];
        keys.extend(markers.iter().map(|marker| marker.as_deref().unwrap_or(&key)));
        // A stream not counted in its namespace's index yet is registered first (a second
        // round trip, once per stream per mark life; see `retention.rs`).
        let mut registration = retention::Registration::Unknown;
        loop {
            let mut cmd = evalsha(&scripts::EVENTS_APPEND, &keys);
            let (registered, mark_life) = registration.args();
            cmd.arg(crate::convert::millis(self.config.idempotency_window))
                .arg(max_len)
                .arg(max_age.map_or(0, crate::convert::millis))
                .arg(self.idle_ttl_ms())
                .arg(registered)
                .arg(mark_life);
            for (entry, marker) in entries.iter().zip(&markers) {
                cmd.arg(if marker.is_some() { "1" } else { "0" }).arg(entry.fields.len());
                for (name, value) in &entry.fields {
                    cmd.arg(name).arg(value);
                }
            }
            let mut conn = self.redis.conn();
            let reply: Vec<Value> =
                timed("events.append", scripts::run(&mut conn, &scripts::EVENTS_APPEND, &cmd))
                    .await
                    .map_err(Error::from_write)?;
            match reply.as_slice() {
                [Value::BulkString(ask)]
                    if ask == b"register" && registration == retention::Registration::Unknown =>
                {
                    registration = self.register_stream(ns, stream).await?;
                }
                answers if answers.len() == 2 * entries.len() => {
                    return answers
                        .chunks(2)
                        .map(|answer| match answer {
                            [Value::BulkString(id), Value::Int(duplicate)] => {
                                Ok((String::from_utf8_lossy(id).into_owned(), *duplicate == 1))
                            }
                            _ => Err(Error::unexpected("events append", &Value::Array(reply.clone()))),
                        })
                        .collect();
                }
                _ => return Err(Error::unexpected("events append", &Value::Array(reply))),
            }
        }
    }

    /// Reads a stream (or its dead letters) in batches, in order; with `follow`, keeps
    /// delivering new entries.
    pub async fn read(
        self: &Arc<Self>,
        ns: &Namespace,
        stream: &str,
        after: &str,
        follow: bool,
        dead_letters: bool,
    ) -> Result<mpsc::Receiver<Result<Vec<StreamEntry>>>> {
        check_name("stream", stream, false)?;
        let start = parse_start(after)?;
        let (mut key, _) = keys::event_stream(ns.as_str(), stream, None);
        if dead_letters {
            key = keys::event_dead_letters(&key);
        }
        // The last entry's ID: read before the call answers, so that every entry appended
        // after the answer is delivered (as a subscription is live once confirmed).
        let cursor = match start {
            Start::Beginning => None,
            Start::After(id) => Some(id),
            Start::End if !follow => {
                return Err(Error::InvalidArgument(
                    "after = $ reads only new entries: it needs follow".into(),
                ));
            }
            Start::End => {
                let last: Value = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut self.redis.conn())
                    .await?;
                let entries = parse_entries(&last).ok_or_else(|| Error::unexpected("XREVRANGE", &last))?;
                Some(entries.first().map_or_else(|| "0-0".to_owned(), |e| e.id.clone()))
            }
        };
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(self.clone().run_read(ns.clone(), key, cursor, follow, tx));
        Ok(rx)
    }

    /// Delivers the entries after `cursor` (None: from the first), and with `follow` new ones.
    async fn run_read(
        self: Arc<Self>,
        ns: Namespace,
        key: String,
        mut cursor: Option<String>,
        follow: bool,
        tx: mpsc::Sender<Result<Vec<StreamEntry>>>,
    ) {
        let _open = crate::telemetry::GaugeGuard::new(metrics::gauge!("rookery_events_readers"));
        let fail = |e: Error| async {
            let _ = tx.send(Err(e)).await;
        };
        loop {
            let from = cursor.as_ref().map_or_else(|| "-".to_owned(), |id| format!("({id}"));
            let mut conn = self.redis.conn();
            // At most READ_BATCH entries, and no more bytes than one answer may carry.
            let mut range = evalsha(&scripts::EVENTS_RANGE, &[&key]);
            range
                .arg(from)
                .arg(READ_BATCH)
                .arg(self.limits.response_budget())
                .arg(self.limits.max_value_bytes);
            let read = scripts::run::<Value>(&mut conn, &scripts::EVENTS_RANGE, &range);
            let batch = match timed("events.range", read).await {
                Ok(value) => parse_entries(&value),
                Err(e) => return fail(Error::from(e)).await,
            };
            let Some(batch) = batch else {
                return fail(Error::Internal("unexpected reply to XRANGE".into())).await;
            };
            if !batch.is_empty() {
                cursor = batch.last().map(|e| e.id.clone());
                // Waits for the client: the server reads only as fast as it takes entries.
                if tx.send(Ok(batch)).await.is_err() {
                    return;
                }
                continue;
            }
            if !follow {
                return;
            }
            // Caught up: wait for new entries on a dedicated connection. With none to be had
            // (the namespace's share or the pool used up), look again after POLL_INTERVAL
            // (polling) rather than fail a reader that is doing nothing wrong.
            let asked = tokio::time::Instant::now();
            let (_share, mut blocking) = match self.blocking_connection(&ns, POLL_INTERVAL).await {
                Some(held) => held,
                None => {
                    tokio::select! {
                        () = tokio::time::sleep_until(asked + POLL_INTERVAL) => continue,
                        () = tx.closed() => return,
                        () = self.drain.draining() => {
                            let _ = tx.try_send(Err(Error::Unavailable(SHUTDOWN_MESSAGE.into())));
                            return;
                        }
                    }
                }
            };
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&key);
            xread.arg(cursor.as_deref().unwrap_or("0-0"));
            let outcome = {
                let read = blocking.query_within::<Value>(&xread, BLOCK * 2);
                tokio::select! {
                    outcome = read => Some(outcome),
                    () = tx.closed() => None,
                    () = self.drain.draining() => {
                        let _ = tx.try_send(Err(Error::Unavailable(SHUTDOWN_MESSAGE.into())));
                        None
                    }
                }
            };
            match outcome {
                // New entries (or the BLOCK timed out): read them with XRANGE, in order.
                Some(Ok(_)) => {}
                // The connection retires itself (see `BlockingConn::query`).
                Some(Err(e)) => return fail(Error::from(e)).await,
                None => return,
            }
        }
    }

    /// Takes one of `ns`'s calls in flight for an append that arrived inside a call
    /// (`AppendStream`), as the fair-share layer takes one per unary call.
    pub fn enter_call(&self, ns: &Namespace) -> Result<ShareGuard> {
        self.shares.call(ns).map_err(Error::ResourceExhausted)
    }

    /// Resolves when the server starts shutting down.
    pub async fn draining(&self) {
        self.drain.draining().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_starts_parse() {
        assert_eq!(parse_start("").unwrap(), Start::Beginning);
        assert_eq!(parse_start("$").unwrap(), Start::End);
        assert_eq!(parse_start("17-3").unwrap(), Start::After("17-3".into()));
        assert_eq!(parse_start("17").unwrap(), Start::After("17-0".into()));
        assert!(parse_start("x-1").is_err());
        assert!(parse_start("1-").is_err());
        let last = format!("{}-{}", u64::MAX, u64::MAX);
        assert!(parse_start(&last).is_err(), "nothing follows the last possible ID");
    }

    #[test]
    fn names_are_restricted_and_patterns_allow_globs() {
        assert!(check_name("channel", "orders/eu-1:created", false).is_ok());
        assert!(check_name("channel", "a*", false).is_err());
        assert!(check_name("pattern", "orders/*:created?", true).is_ok());
        assert!(check_name("pattern", "a[bc]", true).is_err());
        assert!(check_name("channel", "", false).is_err());
        assert!(check_name("channel", "{x}", false).is_err());
        assert!(check_name("channel", &"a".repeat(257), false).is_err());
    }
}
