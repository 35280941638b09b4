//! The Events benchmarks that are not one request after another: stream entries delivered to
//! one consumer with acks, fan-out of published messages to subscribers, and the server memory
//! an idle subscriber costs; with their Redis-level references (a raw XREADGROUP + XACK loop,
//! and raw Redis subscribers with PUBLISH in the same window) measured in the same run. The fan-out
//! measurement ([`measure_fanout`]) is shared with the peers' (NATS) fan-out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use redis::AsyncCommands;
use tokio::time::Instant;
use tokio_stream::StreamExt;

use super::{BenchConfig, BenchError, BenchReport, RedisReport, RedisUrl};
use crate::{AppendOptions, Client, ConsumeOptions, Event, GroupSettings};

/// Entries a consumer takes at once, and the COUNT of the raw XREADGROUP loop.
const CONSUME_BATCH: u32 = 100;
/// Subscribers of the fan-out benchmark.
pub const FANOUT_SUBSCRIBERS: usize = 10;
/// The channel the publish and fan-out benchmarks use.
pub const CHANNEL: &str = "bench-channel";
/// How long subscribers may stay silent after the publishers stop before the count is final.
const DRAIN: Duration = Duration::from_millis(300);

/// An empty latency histogram in microseconds, 1 µs to 60 s.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// A report of `count` operations over `elapsed`, with the latencies in `histogram`.
pub(crate) fn report(histogram: &Histogram<u64>, count: u64, errors: u64, elapsed: Duration) -> BenchReport {
    let micros = |q: f64| Duration::from_micros(histogram.value_at_quantile(q));
    BenchReport {
        missed: 0,
        ops: count,
        errors,
        ops_per_sec: count as f64 / elapsed.as_secs_f64(),
        p50: micros(0.5),
        p99: micros(0.99),
        p999: micros(0.999),
    }
}

/// A name no other run uses: `prefix`, the process ID and the time in nanoseconds.
pub(crate) fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Appends `config.keys` entries (one field of `config.value_size` bytes) to a fresh stream,
/// then consumes them all as one consumer that acks each batch on its call, going on to the
/// next batch without waiting for the ack's answer. Reports entries per second (every ack
/// answered) and the time from asking for a batch to having it.
pub async fn consume(config: &BenchConfig) -> Result<BenchReport, BenchError> {
    let client =
        Client::connect_with(config.url.clone(), &config.options).await?.with_namespace(&config.namespace)?;
    let events = client.events();
    let stream = unique("bench-consume");
    let entries = config.keys as u64;
    let value = vec![b'x'; config.value_size];
    let next = Arc::new(AtomicU64::new(0));
    let mut appenders = Vec::new();
    for _ in 0..config.concurrency.max(1) {
        let (events, stream, value, next) = (events.clone(), stream.clone(), value.clone(), next.clone());
        appenders.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < entries {
                let fields = HashMap::from([("v".to_owned(), value.clone())]);
                let options = AppendOptions { max_len: entries * 2, ..AppendOptions::default() };
                events.append(stream.clone(), fields, &options).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for appender in appenders {
        appender.await??;
    }
    events.create_group(stream.clone(), "bench", "", GroupSettings::default()).await?;
    let options = ConsumeOptions { max_in_flight: CONSUME_BATCH, ..ConsumeOptions::default() };
    let mut histogram = histogram();
    let started = Instant::now();
    let mut consumer = events.consume(stream.clone(), "bench", "c1", &options).await?;
    let acker = consumer.acker();
    let mut acks = tokio::task::JoinSet::new();
    let mut received = 0u64;
    let mut asked = Instant::now();
    while received < entries {
        let Some(batch) = consumer.next().await else { break };
        let batch = batch?;
        histogram.saturating_record(u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
        received += batch.entries.len() as u64;
        // The next batch is asked for without waiting for this ack's answer, as a NATS
        // consumer's acks are sent (and never answered); every answer is checked below, inside
        // the measured time.
        let (acker, ids) = (acker.clone(), batch.entries.into_iter().map(|d| d.id).collect::<Vec<_>>());
        acks.spawn(async move { acker.ack(ids).await });
        asked = Instant::now();
    }
    while let Some(acked) = acks.join_next().await {
        acked??;
    }
    let elapsed = started.elapsed();
    events.delete_group(stream, "bench").await?;
    Ok(report(&histogram, received, entries - received, elapsed))
}

/// The reference for [`consume`]: the same entries in a stream read by a raw loop of
/// XREADGROUP COUNT 100 and one XACK per batch, on one connection.
pub async fn consume_reference(redis_url: &str, config: &BenchConfig) -> Result<RedisReport, BenchError> {
    let mut conn = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let key = format!("rk1:{{bench-reference:st:{}}}", unique("consume"));
    let entries = config.keys;
    let value = vec![b'x'; config.value_size];
    for chunk in (0..entries).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for _ in chunk {
            pipe.cmd("XADD").arg(&key).arg("*").arg("v").arg(&value).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    redis::cmd("XGROUP").arg("CREATE").arg(&key).arg("g").arg("0").query_async::<()>(&mut conn).await?;
    let mut histogram = histogram();
    let started = Instant::now();
    let mut received = 0;
    while received < entries {
        let asked = Instant::now();
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(CONSUME_BATCH)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let ids = entry_ids(&reply);
        if ids.is_empty() {
            return Err("the reference stream ran dry".into());
        }
        histogram.saturating_record(u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
        received += ids.len();
        redis::cmd("XACK").arg(&key).arg("g").arg(&ids).query_async::<()>(&mut conn).await?;
    }
    let elapsed = started.elapsed();
    conn.del::<_, ()>(&key).await?;
    Ok(RedisReport {
        rps: received as f64 / elapsed.as_secs_f64(),
        p50: Duration::from_micros(histogram.value_at_quantile(0.5)),
        p99: Duration::from_micros(histogram.value_at_quantile(0.99)),
    })
}

/// The entry IDs of an XREADGROUP reply for one stream.
fn entry_ids(reply: &redis::Value) -> Vec<Vec<u8>> {
    use redis::Value;
    let entries = match reply {
        Value::Array(streams) => match streams.first() {
            Some(Value::Array(pair)) => pair.get(1),
            _ => None,
        },
        Value::Map(streams) => streams.first().map(|(_, entries)| entries),
        _ => None,
    };
    let Some(Value::Array(entries)) = entries else { return Vec::new() };
    entries
        .iter()
        .filter_map(|entry| match entry {
            Value::Array(parts) => match parts.first() {
                Some(Value::BulkString(id)) => Some(id.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Publishes for `config.duration` to one channel with [`FANOUT_SUBSCRIBERS`] subscribers (one
/// connection each), at most `config.concurrency` messages in flight. Reports messages delivered per
/// second summed over the subscribers, and publish-to-delivery latency.
/// With `pipelined`, every publish goes over one `PublishStream` call instead of a call each.
pub async fn fanout(config: &BenchConfig, pipelined: bool) -> Result<BenchReport, BenchError> {
    let events = Client::connect_with(config.url.clone(), &config.options)
        .await?
        .with_namespace(&config.namespace)?
        .events();
    let publisher = if pipelined { Some(events.publisher().await?) } else { None };
    let mut subscriptions = Vec::new();
    for _ in 0..FANOUT_SUBSCRIBERS {
        let client = Client::connect_with(config.url.clone(), &config.options)
            .await?
            .with_namespace(&config.namespace)?;
        let subscription = client.events().subscribe([CHANNEL], Vec::<String>::new()).await?;
        subscriptions.push(subscription.map_while(|event| match event {
            Ok(Event::Message { payload, .. }) => Some(Delivery::Sent(sent_micros(&payload))),
            Ok(Event::Gap { missed, .. }) => Some(Delivery::Gap(missed)),
            Err(_) => None,
        }));
    }
    let publish = move |payload: Vec<u8>| {
        let (events, publisher) = (events.clone(), publisher.clone());
        async move {
            match publisher {
                Some(publisher) => publisher.publish(CHANNEL, payload).await.is_ok(),
                None => events.publish(CHANNEL, payload).await.is_ok(),
            }
        }
    };
    measure_fanout(config, subscriptions, publish, true).await
}

/// What a fan-out subscriber received.
pub(crate) enum Delivery {
    /// A message, with the publisher's timestamp from its first 8 bytes ([`sent_micros`]).
    Sent(u64),
    /// The server said this many messages were lost.
    Gap(u64),
}

/// The publish time a fan-out payload carries in its first 8 bytes (microseconds since the
/// run's epoch, big-endian); 0 if it is shorter.
pub(crate) fn sent_micros(payload: &[u8]) -> u64 {
    payload.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
}

/// The fan-out measurement, for Rookery and its peers alike: workers call `publish` in a loop
/// for `config.duration` with `config.value_size`-byte payloads that start with their send
/// time, while each of `subscriptions` counts deliveries and records publish-to-delivery
/// latency until it has been quiet for a while. At most `config.concurrency` messages are in
/// flight: published and not yet received by every subscriber ([`Window`]), so that neither
/// side can count messages queued in its buffers (or dropped from them) as throughput. Reports
/// deliveries per second summed over the subscribers. With `strict`, fewer deliveries plus
/// reported gaps than publishes times subscribers is an error; without, the shortfall is
/// reported as missed.
pub(crate) async fn measure_fanout<S, P, F>(
    config: &BenchConfig,
    subscriptions: Vec<S>,
    publish: P,
    strict: bool,
) -> Result<BenchReport, BenchError>
where
    S: tokio_stream::Stream<Item = Delivery> + Send + Unpin + 'static,
    P: Fn(Vec<u8>) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = bool> + Send,
{
    let epoch = Instant::now();
    let receivers = subscriptions.len() as u64;
    let window = Arc::new(Window::new(config.concurrency.max(1) as u64, subscriptions.len()));
    let mut subscribers = Vec::new();
    for (index, mut subscription) in subscriptions.into_iter().enumerate() {
        let window = window.clone();
        subscribers.push(tokio::spawn(async move {
            let (mut histogram, mut delivered, mut missed, mut last) = (histogram(), 0u64, 0u64, epoch);
            loop {
                match tokio::time::timeout(DRAIN * 10, subscription.next()).await {
                    Ok(Some(Delivery::Sent(sent))) => {
                        let now = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                        histogram.saturating_record(now.saturating_sub(sent).max(1));
                        delivered += 1;
                        last = Instant::now();
                        window.received(index, 1);
                    }
                    Ok(Some(Delivery::Gap(n))) => {
                        missed += n;
                        window.received(index, n);
                    }
                    Ok(None) => break,
                    // Quiet long after the publishers stopped: done.
                    Err(_) => break,
                }
            }
            (histogram, delivered, missed, last)
        }));
    }
    let start = Instant::now();
    let end = start + config.duration;
    let value_size = config.value_size.max(8);
    let mut publishers = Vec::new();
    for _ in 0..config.concurrency.max(1) {
        let (publish, window) = (publish.clone(), window.clone());
        publishers.push(tokio::spawn(async move {
            let (mut published, mut errors) = (0u64, 0u64);
            while Instant::now() < end {
                window.enter().await;
                let mut payload =
                    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(0).to_be_bytes().to_vec();
                payload.resize(value_size, b'x');
                if publish(payload).await {
                    published += 1;
                } else {
                    errors += 1;
                }
            }
            (published, errors)
        }));
    }
    let (mut published, mut errors) = (0, 0);
    for task in publishers {
        let (p, e) = task.await?;
        published += p;
        errors += e;
    }
    let mut all = histogram();
    let (mut delivered, mut missed, mut last) = (0, 0, start);
    for task in subscribers {
        let (h, d, m, l) = task.await?;
        all.add(h)?;
        delivered += d;
        missed += m;
        last = last.max(l);
    }
    let expected = published * receivers;
    if strict && delivered + missed < expected {
        return Err(format!(
            "{published} messages to {receivers} subscribers, but only {delivered} delivered and {missed} reported missed"
        )
        .into());
    }
    if !strict {
        missed = expected.saturating_sub(delivered);
    }
    let report = report(&all, delivered, errors, last.duration_since(start).max(config.duration));
    Ok(BenchReport { missed, ..report })
}

/// How long a worker waits for a place in the [`Window`] before it counts the oldest message
/// in flight as lost (a peer that drops messages for slow subscribers never delivers them).
const LOST_AFTER: Duration = Duration::from_secs(1);

/// The fan-out's bound on messages in flight: a worker takes a place before it publishes, and
/// the place is free again once every subscriber has received the message or been told it was
/// lost. Messages are counted, not named: every subscriber receives the channel's messages in
/// one order, so the slowest subscriber's count says how many messages every subscriber has.
struct Window {
    /// The free places.
    places: tokio::sync::Semaphore,
    /// Per subscriber, the messages it has received or been told it lost.
    received: Vec<AtomicU64>,
    /// The slowest subscriber's count when places were last given back: each message's place
    /// goes back once, whichever subscriber saw it go.
    freed_through: AtomicU64,
}

impl Window {
    fn new(limit: u64, subscribers: usize) -> Self {
        let received = (0..subscribers).map(|_| AtomicU64::new(0)).collect();
        Self {
            places: tokio::sync::Semaphore::new(limit as usize),
            received,
            freed_through: AtomicU64::new(0),
        }
    }

    /// Messages every subscriber has received.
    fn slowest(&self) -> u64 {
        self.received.iter().map(|r| r.load(Ordering::SeqCst)).min().unwrap_or(u64::MAX)
    }

    /// Waits for a place (or until [`LOST_AFTER`] passes without one) and takes it.
    async fn enter(&self) {
        if let Ok(Ok(place)) = tokio::time::timeout(LOST_AFTER, self.places.acquire()).await {
            place.forget();
        }
    }

    /// Subscriber `index` received (or lost) `count` more messages; when that was the slowest
    /// subscriber catching up, the places it freed go back. Each subscriber adds its count
    /// before it looks at the others', so the last to receive a message always frees its place.
    fn received(&self, index: usize, count: u64) {
        self.received[index].fetch_add(count, Ordering::SeqCst);
        let slowest = self.slowest();
        let before = self.freed_through.fetch_max(slowest, Ordering::SeqCst);
        self.places.add_permits(slowest.saturating_sub(before) as usize);
    }
}

/// The reference for [`fanout`]: the same measurement ([`measure_fanout`], the same window of
/// messages in flight) with Redis alone, [`FANOUT_SUBSCRIBERS`] raw subscribers on their own
/// connections and PUBLISH on one multiplexed connection: what the fan-out costs without the
/// gRPC hop on either side. Reports deliveries per second summed over the subscribers, and
/// publish-to-delivery latency.
pub async fn fanout_reference(redis_url: &str, config: &BenchConfig) -> Result<RedisReport, BenchError> {
    let channel = "rk1:ev:bench-reference:bench-channel";
    let client = redis::Client::open(redis_url)?;
    let mut subscriptions = Vec::new();
    for _ in 0..FANOUT_SUBSCRIBERS {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        let messages = pubsub.into_on_message();
        subscriptions.push(Box::pin(messages.map(|m| Delivery::Sent(sent_micros(m.get_payload_bytes())))));
    }
    let publisher = client.get_multiplexed_async_connection().await?;
    let publish = move |payload: Vec<u8>| {
        let mut publisher = publisher.clone();
        async move { publisher.publish::<_, _, u64>(channel, payload).await.is_ok() }
    };
    let report = measure_fanout(config, subscriptions, publish, true).await?;
    Ok(RedisReport { rps: report.ops_per_sec, p50: report.p50, p99: report.p99 })
}

/// The reference for Events.Publish: redis-benchmark PUBLISH of the same size.
pub(super) async fn publish_reference(
    url: &RedisUrl,
    config: &BenchConfig,
    requests: u64,
) -> Result<RedisReport, BenchError> {
    let payload = "x".repeat(config.value_size);
    let args = ["PUBLISH", "rk1:ev:bench-reference:bench-channel", &payload].map(str::to_owned);
    let csv = super::redis_benchmark_csv(url, config.concurrency, requests, &args).await?;
    super::parse_redis_benchmark_csv(&csv, None)
}

/// The reference for Events.Append: redis-benchmark XADD of one field of the same size to one
/// stream trimmed to about [`super::APPEND_MAX_LEN`] entries.
pub(super) async fn append_reference(
    url: &RedisUrl,
    config: &BenchConfig,
    requests: u64,
) -> Result<RedisReport, BenchError> {
    let payload = "x".repeat(config.value_size);
    let max_len = super::APPEND_MAX_LEN.to_string();
    let key = "rk1:{bench-reference:st:append}";
    let args = ["XADD", key, "MAXLEN", "~", &max_len, "*", "v", &payload].map(str::to_owned);
    let csv = super::redis_benchmark_csv(url, config.concurrency, requests, &args).await?;
    super::redis_cli(url, &["DEL".into(), key.into()]).await?;
    super::parse_redis_benchmark_csv(&csv, None)
}

/// Opens `config.keys` subscriptions, each on its own channel, over `config.connections`
/// HTTP/2 connections, and returns the server's resident memory growth per subscription
/// (read from `process_resident_memory_bytes` at `admin_url`).
pub async fn idle_subscriber_bytes(config: &BenchConfig, admin_url: &str) -> Result<f64, BenchError> {
    let mut clients = Vec::new();
    for _ in 0..config.connections.max(1) {
        clients.push(
            Client::connect_with(config.url.clone(), &config.options)
                .await?
                .with_namespace(&config.namespace)?
                .events(),
        );
    }
    // Warm up: the first subscriptions size the server's buffers and tables.
    let mut warm = Vec::new();
    for i in 0..100 {
        warm.push(
            clients[i % clients.len()].subscribe([format!("idle-warm-{i}")], Vec::<String>::new()).await?,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident_bytes(admin_url).await?;
    let mut open = Vec::with_capacity(config.keys);
    for i in 0..config.keys {
        let channel = format!("idle-{i}");
        open.push(clients[i % clients.len()].subscribe([channel], Vec::<String>::new()).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = resident_bytes(admin_url).await?;
    drop(open);
    drop(warm);
    Ok((after - before) / config.keys.max(1) as f64)
}

/// `process_resident_memory_bytes` from a Prometheus endpoint.
async fn resident_bytes(admin_url: &str) -> Result<f64, BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = admin_url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    body.lines()
        .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no process_resident_memory_bytes at {admin_url}/metrics").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A place is free only once every subscriber has the message that held it.
    #[tokio::test(start_paused = true)]
    async fn the_window_frees_a_place_when_the_slowest_subscriber_catches_up() {
        let window = Arc::new(Window::new(2, 2));
        window.enter().await;
        window.enter().await;
        let third = tokio::spawn({
            let window = window.clone();
            async move { window.enter().await }
        });
        tokio::task::yield_now().await;
        window.received(0, 1);
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "one subscriber still lacks the first message");
        window.received(1, 1);
        tokio::time::timeout(Duration::from_millis(1), third).await.expect("a place was freed").unwrap();
        assert_eq!(window.places.available_permits(), 0, "the third message holds the freed place");
    }

    /// A message no subscriber ever receives holds its place for [`LOST_AFTER`], not forever.
    #[tokio::test(start_paused = true)]
    async fn a_lost_message_frees_its_place_after_a_while() {
        let window = Window::new(1, 1);
        window.enter().await;
        let started = Instant::now();
        window.enter().await;
        assert!(started.elapsed() >= LOST_AFTER);
    }
}
