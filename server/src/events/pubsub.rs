//! Publish/subscribe: publishes (one, or a burst in one round trip) go to Redis PUBLISH; each
//! subscription is a gRPC stream over its mailbox in the replica's one pub/sub connection
//! (`redis/hub.rs`), which tells the subscriber about every loss before the next message and
//! runs no task of its own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use redis::FromRedisValue;

use super::{Events, check_name};
use crate::drain::{Drain, SHUTDOWN_MESSAGE};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::hub::{self, Item, Subscription, Topic};
use crate::redis::{keys, timed};

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
        /// The payload, shared with the message's other subscribers.
        payload: Bytes,
    },
    /// `missed` messages were dropped because the subscriber was too slow.
    SlowSubscriberGap(u64),
    /// The pub/sub connection was re-established: messages may have been lost.
    ReconnectedGap,
}

impl Events {
    /// The Redis channel a publish goes to, once its channel and payload are checked.
    fn publish_channel(&self, ns: &Namespace, channel: &str, payload: &[u8]) -> Result<String> {
        check_name("channel", channel, false)?;
        if payload.len() > self.limits.max_value_bytes {
            return Err(Error::InvalidArgument(format!(
                "payload is {} bytes; the limit is {} (limits.max_value_bytes)",
                payload.len(),
                self.limits.max_value_bytes
            )));
        }
        Ok(format!("{}{channel}", keys::events_channel_prefix(ns.as_str())))
    }

    /// Publishes; returns how many replicas received it.
    pub async fn publish(&self, ns: &Namespace, channel: &str, payload: &[u8]) -> Result<u64> {
        let redis_channel = self.publish_channel(ns, channel, payload)?;
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

    /// Publishes each `(channel, payload)` as [`Events::publish`] would, those that pass their
    /// checks in one round trip (`RedisPool::query_each`: one pipeline, or on a Cluster, where
    /// channels hash to different slots, concurrent commands), each its own command: one failing
    /// does not fail the others. Returns each one's outcome, in order.
    pub async fn publish_each(&self, ns: &Namespace, publishes: &[(String, Bytes)]) -> Vec<Result<u64>> {
        if let [(channel, payload)] = publishes {
            return vec![self.publish(ns, channel, payload).await];
        }
        let mut outcomes: Vec<Result<u64>> = Vec::with_capacity(publishes.len());
        let mut cmds = Vec::with_capacity(publishes.len());
        for (channel, payload) in publishes {
            match self.publish_channel(ns, channel, payload) {
                Ok(redis_channel) => {
                    let mut cmd = redis::cmd("PUBLISH");
                    cmd.arg(redis_channel).arg(&payload[..]);
                    cmds.push(cmd);
                    // Filled in below, once Redis has answered.
                    outcomes.push(Ok(0));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        let sent = cmds.len();
        if sent == 0 {
            return outcomes;
        }
        let answers =
            match timed("events.publish_many", self.redis.query_each(&cmds.iter().collect::<Vec<_>>())).await
            {
                Ok(answers) if answers.len() == sent => answers,
                failed => {
                    let e = match failed {
                        Ok(answers) => {
                            Error::Internal(format!("{sent} publishes got {} answers", answers.len()))
                        }
                        Err(e) => Error::from_write(e),
                    };
                    return outcomes.into_iter().map(|o| o.and(Err(e.clone()))).collect();
                }
            };
        let mut answers = answers.into_iter();
        let mut published = 0;
        for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
            let answer = answers.next().expect("one answer per publish sent");
            *outcome = answer.and_then(|value| Ok(u64::from_redis_value(value)?)).map_err(|e| {
                // `timed` counts only a failed round trip; these failed on their own.
                metrics::counter!("rookery_redis_errors_total", "op" => "events.publish_many").increment(1);
                Error::from_write(e)
            });
            published += u64::from(outcome.is_ok());
        }
        metrics::counter!("rookery_events_published_total").increment(published);
        outcomes
    }

    /// Subscribes; the stream's first event is [`Event::Subscribed`] (the subscription is
    /// live), and it ends with an error if the subscriber is cut or the server shuts down.
    /// Dropping the stream unsubscribes; it runs no task of its own.
    pub async fn subscribe(
        self: &Arc<Self>,
        ns: &Namespace,
        channels: Vec<String>,
        patterns: Vec<String>,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + 'static> {
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
            .redis
            .hub()
            .subscribe(topics, self.config.subscriber_buffer, self.config.max_missed, SUBSCRIBE_TIMEOUT)
            .await
            .map_err(|e| match e {
                hub::SubscribeError::NotConnected => Error::Unavailable(format!("{e}; retry shortly")),
                hub::SubscribeError::Refused(_) => Error::FailedPrecondition(format!(
                    "{e}; the server's Redis user must be allowed the channels rk1:* (ACL &rk1:*), \
                     and for patterns every channel (ACL allchannels): Redis compares a pattern \
                     literally with the channels a user is allowed"
                )),
            })?;
        let forward = Forward {
            subscription,
            prefix,
            drain: self.drain.clone(),
            max_missed: self.config.max_missed,
            state: ForwardState::Starting,
        };
        Ok(futures::stream::unfold(forward, |mut forward| async move {
            let event = forward.next().await?;
            Some((event, forward))
        }))
    }
}

/// Where a subscription's stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForwardState {
    /// The confirmation is next.
    Starting,
    /// Forwarding messages and losses.
    Forwarding,
    /// Ended (cut or shut down).
    Ended,
}

/// Turns a subscription's queue (messages and loss markers) into its gRPC stream's events.
struct Forward {
    subscription: Subscription,
    prefix: String,
    drain: Drain,
    max_missed: u64,
    state: ForwardState,
}

impl Forward {
    fn strip(&self, name: &str) -> String {
        name.strip_prefix(&self.prefix).unwrap_or(name).to_owned()
    }

    /// Ends the stream with the cut's error.
    fn cut(&mut self) -> Error {
        self.state = ForwardState::Ended;
        Error::ResourceExhausted(format!(
            "this subscriber fell too far behind ({} messages missed in a row); it was cut so as not to \
             hold the others back (events.max_missed)",
            self.max_missed
        ))
    }

    /// The event a queued item stands for.
    fn event_of(&self, item: Item) -> Event {
        match item {
            Item::Message(delivery) => Event::Message {
                channel: self.strip(&delivery.channel),
                pattern: delivery.pattern.map(|p| self.strip(&p)),
                payload: delivery.payload,
            },
            Item::Missed(missed) => Event::SlowSubscriberGap(missed),
            Item::Reconnected => Event::ReconnectedGap,
        }
    }

    /// The next event; None once the stream has ended.
    async fn next(&mut self) -> Option<Result<Event>> {
        match self.state {
            ForwardState::Ended => return None,
            ForwardState::Starting => {
                self.state = ForwardState::Forwarding;
                return Some(Ok(Event::Subscribed));
            }
            ForwardState::Forwarding => {}
        }
        // Cut while nobody read: the hub freed the queue already, so nothing is left to give.
        if self.subscription.mailbox.is_cut() {
            return Some(Err(self.cut()));
        }
        // Something queued (the usual case under load): nothing to wait on. Not while
        // draining, where the wait below ends the stream even if messages keep coming.
        if !self.drain.is_draining()
            && let Some(item) = self.subscription.try_recv()
        {
            return Some(Ok(self.event_of(item)));
        }
        let mailbox = self.subscription.mailbox.clone();
        // Queue drained with losses after its last item: no later message carries their
        // marker, so report them now. (The hub swaps the same counter: no loss counts twice.)
        if self.subscription.is_empty() {
            let missed = mailbox.take_missed();
            if missed > 0 {
                return Some(Ok(Event::SlowSubscriberGap(missed)));
            }
        }
        loop {
            // Shutdown first: a subscriber whose queue never empties still ends with it.
            let item = tokio::select! {
                biased;
                () = self.drain.draining() => {
                    self.state = ForwardState::Ended;
                    return Some(Err(Error::Unavailable(SHUTDOWN_MESSAGE.into())));
                }
                item = self.subscription.recv() => Some(item),
                () = mailbox.lost() => None,
            };
            if mailbox.is_cut() {
                return Some(Err(self.cut()));
            }
            return Some(Ok(match item {
                Some(item) => self.event_of(item),
                // Losses with the queue drained: no later message will carry their marker.
                None => match self.subscription.is_empty().then(|| mailbox.take_missed()) {
                    Some(missed) if missed > 0 => Event::SlowSubscriberGap(missed),
                    _ => continue,
                },
            }));
        }
    }
}
