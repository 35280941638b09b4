//! The Events service's domain logic: publish/subscribe over the replica's one Redis pub/sub
//! connection (`hub.rs`); `grpc.rs` adapts it to the generated API.
//!
//! Channels are namespaced by a prefix (`keys::events_channel_prefix`). Names and patterns are
//! limited to `A-Z a-z 0-9 . _ - / :` (plus `*` and `?` in patterns), so a pattern is a Redis
//! glob that cannot leave its namespace. Every subscription is a task that forwards its mailbox
//! to the gRPC stream, telling the subscriber about every loss before the next message.

mod grpc;
pub mod hub;

pub use grpc::EventsApi;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{EventsConfig, LimitsConfig};
use crate::drain::{Drain, SHUTDOWN_MESSAGE};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::{RedisPool, keys, timed};
use hub::{Hub, Item, Subscription, Topic};

/// Longest channel name or pattern.
const MAX_NAME: usize = 256;
/// How long a new subscription may wait for Redis to confirm it.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One event of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The subscription is live.
    Subscribed,
    /// A message: channel (without the namespace), matched pattern, payload.
    Message {
        /// The channel it was published on.
        channel: String,
        /// The pattern it matched, if it came through a pattern.
        pattern: Option<String>,
        /// The payload.
        payload: Vec<u8>,
    },
    /// `missed` messages were dropped because the subscriber was too slow.
    SlowSubscriberGap(u64),
    /// The pub/sub connection was re-established: messages may have been lost.
    ReconnectedGap,
}

/// The Events service's domain logic.
#[derive(Debug)]
pub struct Events {
    redis: Arc<RedisPool>,
    limits: LimitsConfig,
    config: EventsConfig,
    hub: Hub,
    drain: Drain,
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
    /// Builds the service and connects the replica's pub/sub hub (waiting up to `startup_wait`).
    pub async fn start(
        redis: Arc<RedisPool>,
        limits: LimitsConfig,
        config: EventsConfig,
        drain: Drain,
        startup_wait: Duration,
    ) -> Self {
        let hub = Hub::start(redis.seeds().to_vec());
        if !hub.wait_connected(startup_wait).await {
            tracing::warn!("events pub/sub connection not live yet; Subscribe waits for it");
        }
        Self { redis, limits, config, hub, drain }
    }

    /// The Redis this service uses.
    pub fn redis(&self) -> &Arc<RedisPool> {
        &self.redis
    }

    /// Whether Redis answers and the hub's connection is live.
    pub async fn is_healthy(&self) -> bool {
        self.hub.is_connected() && self.redis.ping().await
    }

    /// Publishes; returns how many replicas received it.
    pub async fn publish(&self, ns: &Namespace, channel: &str, payload: &[u8]) -> Result<u64> {
        check_name("channel", channel, false)?;
        if payload.len() > self.limits.max_value_bytes {
            return Err(Error::InvalidArgument(format!(
                "payload is {} bytes; the limit is {} (limits.max_value_bytes)",
                payload.len(),
                self.limits.max_value_bytes
            )));
        }
        let redis_channel = format!("{}{channel}", keys::events_channel_prefix(ns.as_str()));
        let mut conn = self.redis.conn();
        let receivers: u64 = timed(
            "events.publish",
            redis::cmd("PUBLISH").arg(redis_channel).arg(payload).query_async(&mut conn),
        )
        .await
        .map_err(Error::from_write)?;
        metrics::counter!("rookery_events_published_total").increment(1);
        Ok(receivers)
    }

    /// Subscribes; the stream's first event is [`Event::Subscribed`] (the subscription is
    /// live), and it ends with an error if the subscriber is cut or the server shuts down.
    pub async fn subscribe(
        self: &Arc<Self>,
        ns: &Namespace,
        channels: Vec<String>,
        patterns: Vec<String>,
    ) -> Result<mpsc::Receiver<Result<Event>>> {
        if channels.is_empty() && patterns.is_empty() {
            return Err(Error::InvalidArgument("give at least one channel or pattern".into()));
        }
        if channels.len() + patterns.len() > self.config.max_topics {
            return Err(Error::InvalidArgument(format!(
                "at most {} channels and patterns per subscription (events.max_topics)",
                self.config.max_topics
            )));
        }
        channels.iter().try_for_each(|c| check_name("channel", c, false))?;
        patterns.iter().try_for_each(|p| check_name("pattern", p, true))?;
        let prefix = keys::events_channel_prefix(ns.as_str());
        let topics = hub::dedup(
            channels
                .iter()
                .map(|c| Topic::Channel(format!("{prefix}{c}")))
                .chain(patterns.iter().map(|p| Topic::Pattern(format!("{prefix}{p}"))))
                .collect(),
        );
        let subscription = self
            .hub
            .subscribe(topics, self.config.subscriber_buffer, self.config.max_missed, SUBSCRIBE_TIMEOUT)
            .await
            .map_err(|e| Error::Unavailable(format!("{e}; retry shortly")))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.clone().forward(subscription, prefix, tx));
        Ok(rx)
    }

    /// Forwards a subscription's queue (messages and loss markers) to its gRPC stream.
    async fn forward(
        self: Arc<Self>,
        mut subscription: Subscription,
        prefix: String,
        tx: mpsc::Sender<Result<Event>>,
    ) {
        if tx.send(Ok(Event::Subscribed)).await.is_err() {
            return;
        }
        let strip = |name: String| name.strip_prefix(&prefix).map(str::to_owned).unwrap_or(name);
        let mailbox = subscription.mailbox.clone();
        loop {
            let item = tokio::select! {
                item = subscription.receiver.recv() => Some(item),
                () = mailbox.lost() => None,
                () = tx.closed() => return,
                () = self.drain.draining() => {
                    let _ = tx.send(Err(Error::Unavailable(SHUTDOWN_MESSAGE.into()))).await;
                    return;
                }
            };
            if mailbox.is_cut() {
                let _ = tx
                    .send(Err(Error::ResourceExhausted(format!(
                        "this subscriber fell too far behind ({} messages missed in a row); it was cut so as not \
                         to hold the others back (events.max_missed)",
                        self.config.max_missed
                    ))))
                    .await;
                return;
            }
            let event = match item {
                Some(Some(Item::Message(delivery))) => Event::Message {
                    channel: strip(delivery.channel),
                    pattern: delivery.pattern.map(strip),
                    payload: delivery.payload,
                },
                Some(Some(Item::Missed(missed))) => Event::SlowSubscriberGap(missed),
                Some(Some(Item::Reconnected)) => Event::ReconnectedGap,
                // The hub is gone: the server is stopping.
                Some(None) => {
                    let _ = tx.send(Err(Error::Unavailable(SHUTDOWN_MESSAGE.into()))).await;
                    return;
                }
                // Losses with the queue drained: no later message will carry their marker.
                None => match subscription.receiver.is_empty().then(|| mailbox.take_missed()) {
                    Some(missed) if missed > 0 => Event::SlowSubscriberGap(missed),
                    _ => continue,
                },
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
            // Queue drained with losses after its last message: report them now.
            if subscription.receiver.is_empty() {
                let missed = mailbox.take_missed();
                if missed > 0 && tx.send(Ok(Event::SlowSubscriberGap(missed))).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
