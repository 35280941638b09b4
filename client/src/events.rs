//! The Events service's typed client: publish, subscriptions as Rust streams that say when
//! messages were lost, and durable streams (append, read and follow).

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::ClientChannel;
use crate::convert::duration;
use crate::pb;
use crate::pb::events_client::EventsClient as RawEventsClient;

/// Why messages were lost to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// The subscriber did not take messages fast enough.
    SlowSubscriber,
    /// The server's Redis pub/sub connection was re-established; how many were lost is unknown.
    Reconnected,
}

/// One event of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message.
    Message {
        /// The channel it was published on.
        channel: String,
        /// The subscribed pattern it matched, if it came through a pattern.
        pattern: Option<String>,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Messages were lost here (`missed` of them, when known).
    Gap {
        /// Why.
        reason: GapReason,
        /// How many, when known (0 otherwise).
        missed: u64,
    },
}

/// A live subscription: events in order; it ends with an error if the subscriber is cut or
/// the server shuts down. Dropping it unsubscribes.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;

/// One entry of a durable stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// Its ID; pass it as `after` to resume after it.
    pub id: String,
    /// Its fields.
    pub fields: HashMap<String, Vec<u8>>,
}

/// How an append trims its stream and guards against retries.
#[derive(Debug, Clone, Default)]
pub struct AppendOptions {
    /// Keep about this many entries (0: the server's default when `max_age` is unset too).
    pub max_len: u64,
    /// Drop entries older than this.
    pub max_age: Option<Duration>,
    /// The same key within the server's window answers the first append's ID.
    pub idempotency_key: Option<String>,
}

/// Entries of a stream, in order, in the batches the server sent.
pub type EntryStream = Pin<Box<dyn Stream<Item = Result<Vec<StreamEntry>, Status>> + Send>>;

/// Typed calls to `rookery.v1.Events`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventsClient {
    raw: RawEventsClient<ClientChannel>,
}

impl EventsClient {
    pub(crate) fn new(channel: ClientChannel) -> Self {
        Self {
            raw: RawEventsClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        }
    }

    /// The generated stub, for calls with options this API does not expose.
    pub fn raw(&self) -> RawEventsClient<ClientChannel> {
        self.raw.clone()
    }

    /// Publishes a message; returns how many server replicas received it.
    pub async fn publish(&self, channel: impl Into<String>, payload: Vec<u8>) -> Result<u64, Status> {
        let request = pb::EventsPublishRequest { channel: channel.into(), payload };
        Ok(self.raw.clone().publish(request).await?.into_inner().receivers)
    }

    /// Appends an entry; returns its ID and whether this was a retry of an earlier append.
    pub async fn append(
        &self,
        stream: impl Into<String>,
        fields: HashMap<String, Vec<u8>>,
        options: &AppendOptions,
    ) -> Result<(String, bool), Status> {
        let request = pb::EventsAppendRequest {
            stream: stream.into(),
            fields,
            max_len: options.max_len,
            max_age: options.max_age.map(duration),
            idempotency_key: options.idempotency_key.clone().unwrap_or_default(),
        };
        let response = self.raw.clone().append(request).await?.into_inner();
        Ok((response.id, response.duplicate))
    }

    /// Reads a stream: from the start (`after` empty), after an entry ID, or (`$`) only new
    /// entries; with `follow`, keeps delivering new entries as they are appended.
    pub async fn read(
        &self,
        stream: impl Into<String>,
        after: impl Into<String>,
        follow: bool,
    ) -> Result<EntryStream, Status> {
        let request = pb::EventsReadRequest { stream: stream.into(), after: after.into(), follow };
        let stream = self.raw.clone().read(request).await?.into_inner();
        Ok(Box::pin(stream.map(|batch| {
            batch.map(|b| b.entries.into_iter().map(|e| StreamEntry { id: e.id, fields: e.fields }).collect())
        })))
    }

    /// Subscribes, and returns once the subscription is live: anything published after this
    /// returns is delivered (or reported lost).
    pub async fn subscribe<C, P>(
        &self,
        channels: impl IntoIterator<Item = C>,
        patterns: impl IntoIterator<Item = P>,
    ) -> Result<EventStream, Status>
    where
        C: Into<String>,
        P: Into<String>,
    {
        use pb::events_subscribe_response::Event as In;
        let request = pb::EventsSubscribeRequest {
            channels: channels.into_iter().map(Into::into).collect(),
            patterns: patterns.into_iter().map(Into::into).collect(),
        };
        let mut stream = self.raw.clone().subscribe(request).await?.into_inner();
        match stream.message().await? {
            Some(pb::EventsSubscribeResponse { event: Some(In::Subscribed(_)) }) => {}
            _ => return Err(Status::internal("the subscription did not start with its confirmation")),
        }
        Ok(Box::pin(stream.filter_map(|message| match message {
            Ok(pb::EventsSubscribeResponse { event: Some(In::Message(m)) }) => Some(Ok(Event::Message {
                channel: m.channel,
                pattern: (!m.pattern.is_empty()).then_some(m.pattern),
                payload: m.payload,
            })),
            Ok(pb::EventsSubscribeResponse { event: Some(In::Gap(gap)) }) => {
                let reason = match pb::EventsGapReason::try_from(gap.reason) {
                    Ok(pb::EventsGapReason::Reconnected) => GapReason::Reconnected,
                    _ => GapReason::SlowSubscriber,
                };
                Some(Ok(Event::Gap { reason, missed: gap.missed }))
            }
            Ok(_) => None,
            Err(status) => Some(Err(status)),
        })))
    }
}
