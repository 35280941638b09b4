//! `Consume`: one task per consumer that fetches entries (`fetch.lua`), waits for new ones on a
//! dedicated connection within its namespace's share, and hands them to the client within its
//! in-flight bound; and what a consumer leaves behind when it goes.

// The group machinery this task drives (keys, settings, parsing, constants) lives in the
// parent module.
use super::*;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::events::StreamEntry;

/// One running consumer.
struct Consumer {
    /// Its namespace, whose fair share its blocking reads count against.
    ns: Namespace,
    keys: GroupKeys,
    /// The consumer's lease key, and this Consume's token in it.
    lease: String,
    token: String,
    group: String,
    name: String,
    settings: EffectiveSettings,
    max_in_flight: u32,
    acked: Arc<Notify>,
    /// Field bytes of the largest entry in this consumer's latest read of new entries
    /// ([`FIRST_READ_ENTRY_BYTES`] before the first).
    largest_entry: AtomicUsize,
}

impl Consumer {
    /// Most entries per delivery: half the in-flight bound (rounded up), so that the next
    /// batch is already on its way while the client works on this one.
    fn batch(&self) -> u32 {
        self.max_in_flight.div_ceil(2)
    }

    /// How many of `allowed` new entries one read asks for: see [`read_count`].
    fn read_count(&self, allowed: u64) -> u64 {
        read_count(allowed, self.largest_entry.load(Ordering::Relaxed))
    }

    /// XREADGROUP of up to `count` new entries for this consumer, waiting up to `block` for
    /// the first if given.
    fn read_new(&self, count: u64, block: Option<Duration>) -> redis::Cmd {
        // COUNT 0 would read without a limit: every caller has room for at least one entry.
        debug_assert!(count > 0, "a read of no entries");
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(&self.group).arg(&self.name).arg("COUNT").arg(count);
        if let Some(block) = block {
            read.arg("BLOCK").arg(millis(block).max(1));
        }
        read.arg("STREAMS").arg(&self.keys.stream).arg(">");
        read
    }

    /// The deliveries in XREADGROUP's reply (nil when nothing came), noting the largest entry.
    fn parse_new(&self, reply: &Value) -> Result<Vec<Delivery>> {
        let entries = match reply {
            Value::Nil => Some(Vec::new()),
            Value::Array(streams) => match streams.first() {
                Some(Value::Array(pair)) => pair.get(1).and_then(crate::events::parse_entries),
                _ => Some(Vec::new()),
            },
            Value::Map(streams) => {
                streams.first().and_then(|(_, entries)| crate::events::parse_entries(entries))
            }
            _ => None,
        };
        let entries = entries.ok_or_else(|| Error::unexpected("XREADGROUP", reply))?;
        let size = |e: &StreamEntry| e.fields.iter().map(|(name, value)| name.len() + value.len()).sum();
        if let Some(largest) = entries.iter().map(size).max() {
            self.largest_entry.store(largest, Ordering::Relaxed);
        }
        Ok(entries.into_iter().map(|e| Delivery { id: e.id, fields: e.fields, deliveries: 1 }).collect())
    }
}

/// What a consumer assumes of its entries' size before its first read: that read asks for at
/// most 16 entries, the chunk `fetch.lua` read at a time when it read new entries itself (its
/// reply's bound was 1 MiB plus one chunk), whatever the entries' size.
const FIRST_READ_ENTRY_BYTES: usize = FETCH_BYTES / 16;

/// How many of `allowed` new entries one XREADGROUP asks for, the largest entry of the last
/// read having had `largest` bytes of fields. A plain read has no byte bound of its own, so
/// the count is held to about [`FETCH_BYTES`] of entries that size: large entries come a few at
/// a time, small ones a batch at once. (Entries much larger than the last read's can still
/// make one reply of up to `allowed` × `limits.max_value_bytes`.)
fn read_count(allowed: u64, largest: usize) -> u64 {
    allowed.min(u64::try_from(FETCH_BYTES / largest.max(1)).unwrap_or(u64::MAX).max(1))
}

impl Events {
    /// Starts consuming; the stream's first event is [`ConsumeEvent::Started`].
    pub async fn consume(
        self: &Arc<Self>,
        ns: &Namespace,
        request: ConsumeRequest,
    ) -> Result<mpsc::Receiver<Result<ConsumeEvent>>> {
        let ConsumeRequest { stream, group, consumer, create_group, settings, max_in_flight } = request;
        check_name("stream", &stream, false)?;
        check_name("group", &group, false)?;
        check_name("consumer", &consumer, false)?;
        let max_in_flight = match max_in_flight {
            0 => DEFAULT_MAX_IN_FLIGHT.min(self.config.max_in_flight),
            n if n > self.config.max_in_flight => {
                return Err(Error::InvalidArgument(format!(
                    "max_in_flight is at most {} (events.max_in_flight)",
                    self.config.max_in_flight
                )));
            }
            n => n,
        };
        let keys = GroupKeys::new(ns, &stream, &group);
        if create_group {
            self.create_group_at(ns, &keys, &group, "0", settings).await?;
        }
        let effective = self.settings_of(&keys, &stream, &group).await?;
        self.check_room_for_consumer(&keys, &group, &consumer).await?;
        // One Consume per consumer name, the newest: it takes the name over, and an older call
        // still holding it (its client may be gone without a word) ends at its next fetch.
        // Two calls sharing a name would each be handed the other's entries as pending ones.
        let lease = keys::event_consumer_lease(&keys.stream, &group, &consumer);
        let token = uuid::Uuid::new_v4().simple().to_string();
        redis::cmd("SET")
            .arg(&lease)
            .arg(&token)
            .arg("PX")
            .arg(millis(LEASE))
            .query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(Error::from_write)?;
        let (tx, rx) = mpsc::channel(1);
        tx.try_send(Ok(ConsumeEvent::Started { settings: effective, max_in_flight }))
            .map_err(|_| Error::Internal("a new consumer's channel is full".into()))?;
        let consumer = Consumer {
            ns: ns.clone(),
            acked: self.acks.subscribe(&keys.signal),
            keys,
            lease,
            token,
            group,
            name: consumer,
            settings: effective,
            max_in_flight,
            largest_entry: AtomicUsize::new(FIRST_READ_ENTRY_BYTES),
        };
        tokio::spawn(self.clone().run_consumer(consumer, tx));
        Ok(rx)
    }

    async fn fetch(&self, consumer: &Consumer, history: &str, look_for_expired: bool) -> Result<Fetched> {
        let keys = &consumer.keys;
        let mut cmd = evalsha(
            &scripts::EVENTS_FETCH,
            &[&keys.stream, &keys.dead_letters, &keys.expiry_look, &consumer.lease, &keys.scan_cursor],
        );
        cmd.arg(&consumer.group)
            .arg(&consumer.name)
            .arg(consumer.max_in_flight)
            .arg(history)
            .arg(if look_for_expired { "1" } else { "0" })
            .arg(millis(consumer.settings.ack_timeout))
            .arg(consumer.settings.max_deliveries)
            .arg(self.config.stream_max_len)
            .arg(consumer.batch().min(FETCH_MAX_ENTRIES))
            .arg(FETCH_BYTES)
            .arg(millis(POLL))
            .arg(&consumer.token)
            .arg(millis(LEASE))
            .arg(LOOK_SHARE)
            .arg(HISTORY_IN_FLIGHT)
            .arg(millis(SCAN_CURSOR_LIFE));
        let reply: Value =
            timed("events.fetch", scripts::run(&mut self.redis.conn(), &scripts::EVENTS_FETCH, &cmd))
                .await
                .map_err(|e| no_group(e, &consumer.keys.name, &consumer.group))?;
        if let Value::Array(parts) = &reply
            && let [marker] = parts.as_slice()
            && text(marker) == "taken"
        {
            return Err(Error::Aborted(format!(
                "a newer Consume took over consumer {:?} of group {:?}; one consumer name serves one Consume at a \
                 time",
                consumer.name, consumer.group
            )));
        }
        let mut fetched = parse_fetched(&reply).ok_or_else(|| Error::unexpected("events fetch", &reply))?;
        if fetched.dead_lettered > 0 {
            metrics::counter!("rookery_events_dead_lettered_total").increment(fetched.dead_lettered);
        }
        if fetched.new_entries > 0 {
            // Right after the script, outside it: Lua's conversion of each entry into tables
            // and back cost Redis more than the read itself. A newer Consume that takes the
            // name over in between finds these entries pending (its own history, or a look
            // after the ack timeout), as it would entries delivered just before it came.
            let read = consumer.read_new(consumer.read_count(fetched.new_entries), None);
            let reply: Value = timed("events.read_new", read.query_async(&mut self.redis.conn()))
                .await
                .map_err(|e| no_group(e, &consumer.keys.name, &consumer.group))?;
            let new = consumer.parse_new(&reply)?;
            fetched.free_slots = fetched.free_slots.saturating_sub(new.len() as u64);
            fetched.deliveries.extend(new);
        }
        Ok(fetched)
    }

    /// Waits up to `wait` for new entries on a dedicated connection; returns them (already
    /// delivered to this consumer in Redis's books). When every dedicated connection is busy it
    /// just waits, and the caller looks again: slower to see new entries, never an error.
    async fn wait_for_new(&self, consumer: &Consumer, count: u64, wait: Duration) -> Result<Vec<Delivery>> {
        let started = Instant::now();
        let Some((_share, mut blocking)) = self.blocking_connection(&consumer.ns, wait).await else {
            tokio::time::sleep(wait.saturating_sub(started.elapsed())).await;
            return Ok(Vec::new());
        };
        let block = wait.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let read = consumer.read_new(consumer.read_count(count), Some(block));
        let reply: Value = blocking
            .query_within(&read, block + BLOCK_GRACE)
            .await
            .map_err(|e| no_group(e, &consumer.keys.name, &consumer.group))?;
        consumer.parse_new(&reply)
    }

    async fn run_consumer(self: Arc<Self>, consumer: Consumer, tx: mpsc::Sender<Result<ConsumeEvent>>) {
        let _open = crate::telemetry::GaugeGuard::new(metrics::gauge!("rookery_events_consumers"));
        let mut history = "0-0".to_owned();
        let mut last_scan: Option<Instant> = None;
        let mut last_prune = Instant::now();
        let max_message = self.limits.max_message_bytes.saturating_sub(MESSAGE_MARGIN).max(1);
        loop {
            // Read from Redis only once the client has taken the previous message.
            let permit = tokio::select! {
                permit = tx.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = self.drain.draining() => {
                    // Never waits on a client that stopped reading.
                    let _ = tx.try_send(Err(Error::Unavailable(SHUTDOWN_MESSAGE.into())));
                    break;
                }
            };
            let acked = consumer.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            // Entries idle past the ack timeout are looked for every POLL.
            let scan_due = last_scan.is_none_or(|at| at.elapsed() >= POLL);
            let fetched = match self.fetch(&consumer, &history, scan_due).await {
                Ok(fetched) => fetched,
                Err(e) => {
                    permit.send(Err(e));
                    break;
                }
            };
            if tx.is_closed() {
                self.give_back(&consumer, &fetched.deliveries).await;
                break;
            }
            history = fetched.history;
            // Completed a pass, or did its share of one: the next look is due in POLL. (Out of
            // room: still due.)
            if fetched.looked_for_expired == 3 {
                last_scan = Some(Instant::now());
            }
            if fetched.looked_for_expired == 1 {
                last_scan = Some(Instant::now());
                if last_prune.elapsed() >= PRUNE_EVERY {
                    last_prune = Instant::now();
                    self.prune(&consumer).await;
                }
            }
            let mut deliveries = fetched.deliveries;
            if deliveries.is_empty() && fetched.trimmed == 0 {
                if fetched.free_slots == 0 {
                    // At the in-flight bound: wait for an ack.
                    drop(permit);
                    tokio::select! {
                        () = acked => {}
                        () = tokio::time::sleep(POLL) => {}
                        () = tx.closed() => break,
                    }
                    continue;
                }
                // More to look at at once: the restart history is unfinished, or everything
                // this round went to the dead letters.
                if !history.is_empty() || fetched.dead_lettered > 0 {
                    continue;
                }
                // Caught up: wait for new entries until the next scan is due. The wait is not
                // cut short when the client leaves, so the connection goes back to the pool.
                let until_scan = POLL.saturating_sub(last_scan.map_or(POLL, |at| at.elapsed()));
                let count = fetched.free_slots.min(u64::from(consumer.batch().min(FETCH_MAX_ENTRIES)));
                match self.wait_for_new(&consumer, count, until_scan.max(Duration::from_millis(1))).await {
                    Ok(new) if new.is_empty() => continue,
                    Ok(new) => deliveries = new,
                    Err(e) => {
                        permit.send(Err(e));
                        break;
                    }
                }
                if tx.is_closed() {
                    self.give_back(&consumer, &deliveries).await;
                    break;
                }
            }
            metrics::counter!("rookery_events_delivered_total").increment(deliveries.len() as u64);
            // Each message fits the gRPC message limit; later ones wait for the client.
            let mut messages = split_by_size(deliveries, max_message).into_iter();
            let first = messages.next().unwrap_or_default();
            permit.send(Ok(ConsumeEvent::Deliveries { deliveries: first, trimmed: fetched.trimmed }));
            for message in messages.by_ref() {
                if let Err(mpsc::error::SendError(Ok(ConsumeEvent::Deliveries { deliveries, .. }))) =
                    tx.send(Ok(ConsumeEvent::Deliveries { deliveries: message, trimmed: 0 })).await
                {
                    let rest: Vec<Delivery> = deliveries.into_iter().chain(messages.flatten()).collect();
                    self.give_back(&consumer, &rest).await;
                    break;
                }
            }
        }
        // A consumer that leaves with nothing pending is forgotten.
        let cmd = evalsha(&scripts::EVENTS_LEAVE, &[&consumer.keys.stream, &consumer.lease])
            .arg(&consumer.group)
            .arg(&consumer.name)
            .arg(&consumer.token)
            .to_owned();
        let left: redis::RedisResult<Value> =
            scripts::run(&mut self.redis.conn(), &scripts::EVENTS_LEAVE, &cmd).await;
        if let Err(e) = left {
            tracing::debug!(error = %e, "could not forget a consumer that left");
        }
    }

    /// Forgets the group's consumers that hold nothing and have not read for [`PRUNE_IDLE`]
    /// (they left with entries pending, which others have claimed since).
    async fn prune(&self, consumer: &Consumer) {
        let cmd = evalsha(&scripts::EVENTS_PRUNE, &[&consumer.keys.stream])
            .arg(&consumer.group)
            .arg(millis(PRUNE_IDLE))
            .to_owned();
        let pruned: redis::RedisResult<u64> =
            scripts::run(&mut self.redis.conn(), &scripts::EVENTS_PRUNE, &cmd).await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::debug!(group = consumer.group, forgotten = n, "forgot idle consumers"),
            Err(e) => tracing::debug!(error = %e, "could not forget idle consumers"),
        }
    }

    /// Entries read for a client that left before it could have them: back to the group at
    /// once, their delivery not counted.
    async fn give_back(&self, consumer: &Consumer, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
        let given =
            self.requeue(&consumer.keys, &consumer.group, &consumer.name, &ids, Duration::ZERO, true).await;
        if let Err(e) = given {
            tracing::debug!(error = %e, "could not give back entries a departed consumer never received");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ask_for_about_a_fetchs_bytes_of_entries_the_size_of_the_last_largest() {
        // Small entries: the whole allowance.
        assert_eq!(read_count(50, 100), 50);
        assert_eq!(read_count(50, 0), 50);
        // 100 KiB entries: about 1 MiB of them.
        assert_eq!(read_count(50, 100 * 1024), 10);
        // A first read: at most 16.
        assert_eq!(read_count(50, FIRST_READ_ENTRY_BYTES), 16);
        assert_eq!(read_count(5, FIRST_READ_ENTRY_BYTES), 5);
        // Entries of the fetch's size or larger: one at a time, never none.
        assert_eq!(read_count(50, FETCH_BYTES), 1);
        assert_eq!(read_count(50, 4 * FETCH_BYTES), 1);
        assert_eq!(read_count(0, 100), 0);
    }
}
