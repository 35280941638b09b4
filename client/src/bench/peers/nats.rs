//! The Events scenarios against NATS (`nats-server` with JetStream on memory storage), in the
//! shapes of Rookery's: fan-out to [`FANOUT_SUBSCRIBERS`] subscribers on their own connections,
//! durable append (a JetStream publish awaited until the server acks it) and consume with acks
//! (one JetStream pull consumer with explicit acks, fetching batches of [`CONSUME_BATCH`]).
//!
//! A core NATS publish is never acknowledged, so in the fan-out scenario (on both sides) a
//! message is in flight from its publish until every subscriber has received it: the bound is
//! on messages, not on publish calls. Messages NATS drops for a slow subscriber are reported as
//! missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::{self, consumer::AckPolicy, stream::StorageType};
use tokio::time::Instant;
use tokio_stream::StreamExt;

use crate::bench::events::{self, CHANNEL, Delivery, FANOUT_SUBSCRIBERS, histogram, report, unique};
use crate::bench::{APPEND_MAX_LEN, BenchConfig, BenchError, BenchReport, Step, closed_loop};

/// Messages one pull asks for, as many as a Rookery consumer takes at once.
pub const CONSUME_BATCH: usize = 100;

/// Publishes (publish + flush) to one subject with [`FANOUT_SUBSCRIBERS`] subscribers, each on
/// its own connection, at most `config.concurrency` messages in flight; reports deliveries per
/// second summed over the subscribers and publish-to-delivery latency.
pub async fn fanout(url: &str, config: &BenchConfig) -> Result<BenchReport, BenchError> {
    let publisher = async_nats::connect(url).await?;
    let subject = format!("bench.{CHANNEL}");
    let mut subscriptions = Vec::new();
    for _ in 0..FANOUT_SUBSCRIBERS {
        let client = async_nats::connect(url).await?;
        let subscriber = client.subscribe(subject.clone()).await?;
        // The subscription is live at the server once a round trip has followed it.
        client.flush().await?;
        // The subscription keeps its connection open.
        subscriptions.push(subscriber.map(|message| Delivery::Sent(events::sent_micros(&message.payload))));
    }
    // A round trip on the publisher's connection too, so that the server knows of it.
    publisher.flush().await?;
    let publish = move |payload: Vec<u8>| {
        let (publisher, subject) = (publisher.clone(), subject.clone());
        async move { publisher.publish(subject, payload.into()).await.is_ok() && publisher.flush().await.is_ok() }
    };
    events::measure_fanout(config, subscriptions, publish, false).await
}

/// A stream on memory storage for one run, keeping at most `max_messages`.
async fn memory_stream(
    context: &jetstream::Context,
    prefix: &str,
    max_messages: u64,
) -> Result<(jetstream::stream::Stream, String, String), BenchError> {
    let name = unique(prefix);
    let subject = format!("{name}.entries");
    let stream = context
        .create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: StorageType::Memory,
            max_messages: i64::try_from(max_messages)?,
            ..Default::default()
        })
        .await?;
    Ok((stream, name, subject))
}

/// A worker of the append scenario: one JetStream publish, awaited until the server acks it.
struct Append {
    context: jetstream::Context,
    subject: Arc<str>,
    payload: bytes::Bytes,
}

impl Step for Append {
    async fn step(&mut self) -> bool {
        match self.context.publish(self.subject.to_string(), self.payload.clone()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    }
}

/// JetStream publishes with acks of `config.value_size`-byte messages to a memory-storage
/// stream kept to [`APPEND_MAX_LEN`] messages, from `config.concurrency` workers.
pub async fn append(url: &str, config: &BenchConfig) -> Result<BenchReport, BenchError> {
    let context = jetstream::new(async_nats::connect(url).await?);
    let (_stream, name, subject) = memory_stream(&context, "bench-append", APPEND_MAX_LEN).await?;
    let subject: Arc<str> = subject.into();
    let payload = bytes::Bytes::from(vec![b'x'; config.value_size]);
    let workers = (0..config.concurrency.max(1))
        .map(|_| Append { context: context.clone(), subject: subject.clone(), payload: payload.clone() })
        .collect();
    let report = closed_loop(config.duration, workers).await;
    context.delete_stream(&name).await?;
    report
}

/// Publishes `config.keys` messages of `config.value_size` bytes to a memory-storage stream
/// (from `config.concurrency` workers, each awaiting its acks), then consumes them all with one
/// pull consumer with explicit acks: fetch up to [`CONSUME_BATCH`], ack each message, fetch
/// again. Reports messages per second and the time from asking for a batch to having it.
pub async fn consume(url: &str, config: &BenchConfig) -> Result<BenchReport, BenchError> {
    let context = jetstream::new(async_nats::connect(url).await?);
    let entries = config.keys as u64;
    let (stream, name, subject) = memory_stream(&context, "bench-consume", entries * 2).await?;
    let payload = bytes::Bytes::from(vec![b'x'; config.value_size]);
    let next = Arc::new(AtomicU64::new(0));
    let mut appenders = Vec::new();
    for _ in 0..config.concurrency.max(1) {
        let (context, subject, payload, next) =
            (context.clone(), subject.clone(), payload.clone(), next.clone());
        appenders.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < entries {
                context.publish(subject.clone(), payload.clone()).await?.await?;
            }
            Ok::<_, BenchError>(())
        }));
    }
    for appender in appenders {
        appender.await??;
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut histogram = histogram();
    let started = Instant::now();
    let mut received = 0u64;
    while received < entries {
        let asked = Instant::now();
        let messages: Vec<_> =
            consumer.fetch().max_messages(CONSUME_BATCH).messages().await?.collect::<Result<_, _>>().await?;
        if messages.is_empty() {
            return Err("the NATS stream ran dry".into());
        }
        histogram.saturating_record(u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
        received += messages.len() as u64;
        for message in messages {
            message.ack().await?;
        }
    }
    let elapsed = started.elapsed();
    context.delete_stream(&name).await?;
    Ok(report(&histogram, received, entries - received, elapsed))
}
