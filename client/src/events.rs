//! The Events service's typed client: publish, subscriptions as Rust streams that say when
//! messages were lost, durable streams (append, read and follow), and consumer groups
//! (a consumer as a Rust stream of deliveries, and [`EventsClient::process`], which acks what
//! its handler finished and nacks what it failed).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::ClientChannel;
use crate::convert::{duration, from_duration};
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
        /// The payload. It shares the buffer it was received in, with the messages that came
        /// in the same response: to keep a small payload for long without keeping that whole
        /// buffer, copy it (`Bytes::copy_from_slice`).
        payload: Bytes,
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

/// One entry of [`EventsClient::append_many`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEntry {
    /// The entry's fields.
    pub fields: HashMap<String, Vec<u8>>,
    /// The same key within the server's window answers this entry's first ID.
    pub idempotency_key: Option<String>,
}

/// Entries of a stream, in order, in the batches the server sent.
pub type EntryStream = Pin<Box<dyn Stream<Item = Result<Vec<StreamEntry>, Status>> + Send>>;

/// How a consumer group delivers; unset fields follow the server's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSettings {
    /// How long a delivered entry may stay unacknowledged before it goes to another consumer.
    pub ack_timeout: Option<Duration>,
    /// Deliveries after which an entry moves to the dead-letter stream (0: never).
    pub max_deliveries: Option<u32>,
}

impl GroupSettings {
    fn to_pb(self) -> pb::EventsGroupSettings {
        pb::EventsGroupSettings {
            ack_timeout: self.ack_timeout.map(duration),
            max_deliveries: self.max_deliveries,
        }
    }
}

/// How to consume.
#[derive(Debug, Clone, Default)]
pub struct ConsumeOptions {
    /// Create the group (at the stream's first entry, with `settings`) if it does not exist.
    pub create_group: bool,
    /// Settings of a group this call creates.
    pub settings: GroupSettings,
    /// Most unacknowledged deliveries at once (0: the server's default, 100).
    pub max_in_flight: u32,
    /// For [`EventsClient::process`]: how long a failed entry waits before it is delivered
    /// again (at most the group's ack timeout).
    pub retry_delay: Duration,
}

/// An entry delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The entry's ID: acknowledge it with [`Consumer::ack`].
    pub id: String,
    /// Its fields.
    pub fields: HashMap<String, Vec<u8>>,
    /// How many times it has been delivered, this time included.
    pub deliveries: u64,
}

/// Entries delivered together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deliveries {
    /// The entries, in the order to process them.
    pub entries: Vec<Delivery>,
    /// Entries that were pending but had been trimmed from the stream: they are gone.
    pub trimmed: u64,
}

/// The settings a consumer runs with, as the server confirmed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// The group's ack timeout.
    pub ack_timeout: Duration,
    /// The group's delivery limit (0: none).
    pub max_deliveries: u32,
    /// The in-flight bound in effect.
    pub max_in_flight: u32,
}

/// A live consumer of a group: a stream of [`Deliveries`]. The server sends the next batch
/// only while fewer than `max_in_flight` entries are unacknowledged, so ack (or nack) what you
/// finish. It ends with an error if the group is deleted or the server shuts down. Dropping it
/// stops the consumer; entries it had not acknowledged go to other consumers after the ack
/// timeout.
pub struct Consumer {
    events: EventsClient,
    stream: String,
    group: String,
    name: String,
    settings: ConsumerSettings,
    acks: Arc<AckPath>,
    inner: Pin<Box<dyn Stream<Item = Result<Deliveries, Status>> + Send + Sync>>,
}

/// The request of one append, as `EventsClient::append` and the `Appender` send it.
pub(crate) fn append_request(
    stream: String,
    fields: HashMap<String, Vec<u8>>,
    options: &AppendOptions,
) -> pb::EventsAppendRequest {
    pb::EventsAppendRequest {
        stream,
        fields,
        max_len: options.max_len,
        max_age: options.max_age.map(duration),
        idempotency_key: options.idempotency_key.clone().unwrap_or_default(),
    }
}

/// Where a consumer's acks go: on its own `ConsumeWithAcks` call, answered in order.
struct AckPath {
    /// The call's request side. Held while an ack is queued for its answer and sent, so that
    /// answers are matched to acks in the order the acks were sent.
    sending: tokio::sync::Mutex<mpsc::Sender<pb::EventsConsumeWithAcksRequest>>,
    /// The answers awaited, shared with the task that reads the call.
    awaited: Arc<std::sync::Mutex<AwaitedAcks>>,
}

impl AckPath {
    /// Sends an ack on the call and waits for its answer.
    async fn ack(&self, ids: Vec<String>) -> Result<u64, Status> {
        let (answer, answered) = oneshot::channel();
        {
            let requests = self.sending.lock().await;
            {
                let mut awaited = self.awaited.lock().expect("ack queue");
                if let Some(ended) = &awaited.ended {
                    return Err(ended.clone());
                }
                awaited.queue.push_back(answer);
            }
            let ack = pb::events_consume_with_acks_request::Message::Ack(pb::EventsAckIds { ids });
            let request = pb::EventsConsumeWithAcksRequest { message: Some(ack) };
            if requests.send(request).await.is_err() {
                return Err(Status::unavailable(
                    "the consumer's call has ended; its entries come back after the ack timeout",
                ));
            }
        }
        // The task that reads the call answers every ack it queued, or ends them all.
        answered.await.unwrap_or_else(|_| Err(Status::unavailable("the consumer's call ended")))
    }
}

/// Acknowledges entries on a [`Consumer`]'s call from another task ([`Consumer::acker`]);
/// cheap to clone. Its acks are answered as the consumer's own are.
#[derive(Clone)]
pub struct Acker {
    acks: Arc<AckPath>,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acker").finish_non_exhaustive()
    }
}

impl Acker {
    /// Acknowledges entries, as [`Consumer::ack`] does; returns how many were pending.
    pub async fn ack<I: Into<String>>(&self, ids: impl IntoIterator<Item = I>) -> Result<u64, Status> {
        self.acks.ack(ids.into_iter().map(Into::into).collect()).await
    }
}

/// Acks sent and not answered yet, oldest first, each learning its count or the status its
/// call ended with; and that status once it has ended.
#[derive(Default)]
struct AwaitedAcks {
    queue: std::collections::VecDeque<oneshot::Sender<Result<u64, Status>>>,
    /// Checked under the same lock as the queue: an ack made after the call ended fails at
    /// once instead of waiting for an answer that will never come.
    ended: Option<Status>,
}

impl AwaitedAcks {
    /// The call ended with `status`: every ack awaiting an answer, and every later one, gets it.
    fn end(&mut self, status: Status) {
        for answer in self.queue.drain(..) {
            let _ = answer.send(Err(status.clone()));
        }
        self.ended = Some(status);
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// The settings it runs with.
    pub fn settings(&self) -> ConsumerSettings {
        self.settings
    }

    /// Acknowledges entries; returns how many were pending. Acks travel on the consumer's own
    /// call (no call of their own), and are answered in order. A failed ack ends the call, and
    /// once it has ended every ack fails with the status it ended with: the entries stay
    /// pending, and come back first to this consumer name when it consumes again.
    pub async fn ack<I: Into<String>>(&self, ids: impl IntoIterator<Item = I>) -> Result<u64, Status> {
        self.acks.ack(ids.into_iter().map(Into::into).collect()).await
    }

    /// A handle that acknowledges on this consumer's call from anywhere (another task, while
    /// this consumer goes on reading), as [`Consumer::ack`] does.
    pub fn acker(&self) -> Acker {
        Acker { acks: self.acks.clone() }
    }

    /// Gives entries back for delivery after `delay` (at most the ack timeout); returns how
    /// many were requeued and how many moved to the dead letters.
    pub async fn nack<I: Into<String>>(
        &self,
        ids: impl IntoIterator<Item = I>,
        delay: Duration,
    ) -> Result<(u64, u64), Status> {
        self.events.nack(self.stream.clone(), self.group.clone(), self.name.clone(), ids, delay).await
    }
}

impl Stream for Consumer {
    type Item = Result<Deliveries, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Acks a consumer may have sent and not yet had answered before the next one waits.
const ACKS_IN_FLIGHT: usize = 16;

/// First and longest wait before [`EventsClient::process`] consumes again after losing the server.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

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
    pub async fn publish(
        &self,
        channel: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<u64, Status> {
        let request = pb::EventsPublishRequest { channel: channel.into(), payload: payload.into() };
        Ok(self.raw.clone().publish(request).await?.into_inner().receivers)
    }

    /// Appends an entry; returns its ID and whether this was a retry of an earlier append.
    pub async fn append(
        &self,
        stream: impl Into<String>,
        fields: HashMap<String, Vec<u8>>,
        options: &AppendOptions,
    ) -> Result<(String, bool), Status> {
        let request = append_request(stream.into(), fields, options);
        let response = self.raw.clone().append(request).await?.into_inner();
        Ok((response.id, response.duplicate))
    }

    /// Appends entries to one stream in one call, in order, all or none; returns each entry's
    /// ID and whether it was a retry, in order. Each entry carries its own idempotency key, so
    /// `options.idempotency_key` must be unset (INVALID_ARGUMENT otherwise).
    pub async fn append_many(
        &self,
        stream: impl Into<String>,
        entries: impl IntoIterator<Item = NewEntry>,
        options: &AppendOptions,
    ) -> Result<Vec<(String, bool)>, Status> {
        if options.idempotency_key.is_some() {
            return Err(Status::invalid_argument(
                "append_many takes an idempotency key per entry (NewEntry::idempotency_key), not in AppendOptions",
            ));
        }
        let request = pb::EventsAppendManyRequest {
            stream: stream.into(),
            entries: entries
                .into_iter()
                .map(|NewEntry { fields, idempotency_key }| pb::EventsNewEntry {
                    fields,
                    idempotency_key: idempotency_key.unwrap_or_default(),
                })
                .collect(),
            max_len: options.max_len,
            max_age: options.max_age.map(duration),
        };
        let response = self.raw.clone().append_many(request).await?.into_inner();
        Ok(response.appended.into_iter().map(|a| (a.id, a.duplicate)).collect())
    }

    /// Reads a stream: from the start (`after` empty), after an entry ID, or (`$`) only new
    /// entries; with `follow`, keeps delivering new entries as they are appended.
    pub async fn read(
        &self,
        stream: impl Into<String>,
        after: impl Into<String>,
        follow: bool,
    ) -> Result<EntryStream, Status> {
        self.read_request(stream.into(), after.into(), follow, false).await
    }

    /// Reads a stream's dead letters (entries a group delivered too often), like [`Self::read`].
    /// Each carries `rookery.id`, `rookery.group`, `rookery.deliveries` and `rookery.reason`
    /// besides its own fields.
    pub async fn read_dead_letters(
        &self,
        stream: impl Into<String>,
        after: impl Into<String>,
        follow: bool,
    ) -> Result<EntryStream, Status> {
        self.read_request(stream.into(), after.into(), follow, true).await
    }

    async fn read_request(
        &self,
        stream: String,
        after: String,
        follow: bool,
        dead_letters: bool,
    ) -> Result<EntryStream, Status> {
        let request = pb::EventsReadRequest { stream, after, follow, dead_letters };
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
            batch: true,
        };
        let mut stream = self.raw.clone().subscribe(request).await?.into_inner();
        match stream.message().await? {
            Some(pb::EventsSubscribeResponse { event: Some(In::Subscribed(_)) }) => {}
            _ => return Err(Status::internal("the subscription did not start with its confirmation")),
        }
        let message = |m: pb::EventsMessage| {
            Ok(Event::Message {
                channel: m.channel,
                pattern: (!m.pattern.is_empty()).then_some(m.pattern),
                payload: m.payload,
            })
        };
        // Messages that arrive together are handed out one by one, in order.
        let events = stream.map(move |response| -> Vec<Result<Event, Status>> {
            match response {
                Ok(pb::EventsSubscribeResponse { event: Some(In::Message(m)) }) => vec![message(m)],
                Ok(pb::EventsSubscribeResponse { event: Some(In::Messages(batch)) }) => {
                    batch.messages.into_iter().map(message).collect()
                }
                Ok(pb::EventsSubscribeResponse { event: Some(In::Gap(gap)) }) => {
                    let reason = match pb::EventsGapReason::try_from(gap.reason) {
                        Ok(pb::EventsGapReason::Reconnected) => GapReason::Reconnected,
                        _ => GapReason::SlowSubscriber,
                    };
                    vec![Ok(Event::Gap { reason, missed: gap.missed })]
                }
                Ok(_) => Vec::new(),
                Err(status) => vec![Err(status)],
            }
        });
        Ok(Box::pin(futures::StreamExt::flat_map(events, futures::stream::iter)))
    }

    /// Creates a consumer group starting at the first entry (`start` empty), at new entries
    /// (`$`) or after an entry ID; ALREADY_EXISTS if it exists.
    pub async fn create_group(
        &self,
        stream: impl Into<String>,
        group: impl Into<String>,
        start: impl Into<String>,
        settings: GroupSettings,
    ) -> Result<(), Status> {
        let request = pb::EventsCreateGroupRequest {
            stream: stream.into(),
            group: group.into(),
            start: start.into(),
            settings: Some(settings.to_pb()),
        };
        self.raw.clone().create_group(request).await?;
        Ok(())
    }

    /// Deletes a consumer group; false when there was none.
    pub async fn delete_group(
        &self,
        stream: impl Into<String>,
        group: impl Into<String>,
    ) -> Result<bool, Status> {
        let request = pb::EventsDeleteGroupRequest { stream: stream.into(), group: group.into() };
        Ok(self.raw.clone().delete_group(request).await?.into_inner().deleted)
    }

    /// Starts consuming as `consumer` of `group`, and returns once the server confirmed it.
    pub async fn consume(
        &self,
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
        options: &ConsumeOptions,
    ) -> Result<Consumer, Status> {
        use pb::events_consume_response::Event as In;
        let (stream, group, name) = (stream.into(), group.into(), consumer.into());
        let request = pb::EventsConsumeRequest {
            stream: stream.clone(),
            group: group.clone(),
            consumer: name.clone(),
            create_group: options.create_group,
            settings: Some(options.settings.to_pb()),
            max_in_flight: options.max_in_flight,
        };
        let (requests, requests_rx) = mpsc::channel(ACKS_IN_FLIGHT);
        let start = pb::events_consume_with_acks_request::Message::Start(request);
        requests
            .send(pb::EventsConsumeWithAcksRequest { message: Some(start) })
            .await
            .map_err(|_| Status::internal("the consumer's request side closed at once"))?;
        let requests_rx = tokio_stream::wrappers::ReceiverStream::new(requests_rx);
        let mut inner = self.raw.clone().consume_with_acks(requests_rx).await?.into_inner();
        let settings = match inner.message().await? {
            Some(pb::EventsConsumeResponse { event: Some(In::Started(started)) }) => ConsumerSettings {
                ack_timeout: from_duration(started.ack_timeout).unwrap_or_default(),
                max_deliveries: started.max_deliveries,
                max_in_flight: started.max_in_flight,
            },
            _ => return Err(Status::internal("the consumer did not start with its confirmation")),
        };
        // One task reads the call: answers go to the acks awaiting them, deliveries to the
        // stream. Deliveries queue without bound here so that an ack awaited before the next
        // batch is read still gets its answer; the server's in-flight bound caps them.
        let awaited = Arc::new(std::sync::Mutex::new(AwaitedAcks::default()));
        let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
        let answers = awaited.clone();
        tokio::spawn(async move {
            let ended = loop {
                // A consumer dropped ends the call at once (its task holds the call open).
                let message = tokio::select! {
                    message = inner.message() => message,
                    () = deliveries_tx.closed() => break Status::cancelled("the consumer was dropped"),
                };
                let delivered = match message {
                    Ok(Some(pb::EventsConsumeResponse { event: Some(In::Deliveries(batch)) })) => {
                        Ok(Deliveries {
                            entries: batch
                                .deliveries
                                .into_iter()
                                .map(|d| Delivery { id: d.id, fields: d.fields, deliveries: d.deliveries })
                                .collect(),
                            trimmed: batch.trimmed,
                        })
                    }
                    Ok(Some(pb::EventsConsumeResponse { event: Some(In::Acked(acked)) })) => {
                        if let Some(answer) = answers.lock().expect("ack queue").queue.pop_front() {
                            let _ = answer.send(Ok(acked.acked));
                        }
                        continue;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        break Status::unavailable(
                            "the consumer's call has ended; unacknowledged entries come back after the ack timeout",
                        );
                    }
                    // A failed ack ends the call too: the acks awaiting an answer get its status.
                    Err(status) => {
                        let _ = deliveries_tx.send(Err(status.clone()));
                        break status;
                    }
                };
                if deliveries_tx.send(delivered).is_err() {
                    break Status::cancelled("the consumer was dropped");
                }
            };
            answers.lock().expect("ack queue").end(ended);
        });
        let acks = Arc::new(AckPath { sending: tokio::sync::Mutex::new(requests), awaited });
        let inner = Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(deliveries));
        Ok(Consumer { events: self.clone(), stream, group, name, settings, acks, inner })
    }

    /// Consumes with `handler`, one entry at a time in delivery order: entries it finishes
    /// with `Ok` are acknowledged, entries it fails are given back for delivery after
    /// `options.retry_delay` (and reach the dead letters after the group's delivery limit).
    /// Each batch is settled (acked and nacked in one call each) after its last entry.
    ///
    /// Runs for as long as the consumer can: when the server or Redis is unavailable (a
    /// restart, a replica shutting down) it starts consuming again with backoff, getting back
    /// first the entries it had not settled. It returns only an error that retrying cannot
    /// fix: the group was deleted, bad arguments, or ABORTED when another call took the
    /// consumer name over (two instances share one name). The handler logs its own errors:
    /// here an error only means "deliver this entry again".
    pub async fn process<F, Fut, E>(
        &self,
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
        options: &ConsumeOptions,
        mut handler: F,
    ) -> Result<(), Status>
    where
        F: FnMut(Delivery) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let (stream, group, consumer) = (stream.into(), group.into(), consumer.into());
        let mut backoff = RETRY_MIN;
        loop {
            let mut started = false;
            let ended =
                self.process_once(&stream, &group, &consumer, options, &mut handler, &mut started).await;
            match ended {
                // Unavailable: the server or Redis is restarting. (ABORTED, another live call
                // took this consumer name over, is returned: two instances share one name.)
                Err(status) if !matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
                    return Err(status);
                }
                // Unavailable, or the stream ended with the server: consume again.
                _ => {
                    if started {
                        backoff = RETRY_MIN;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// One consumer's life for [`Self::process`]; `started` tells whether it got going.
    async fn process_once<F, Fut, E>(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        options: &ConsumeOptions,
        handler: &mut F,
        started: &mut bool,
    ) -> Result<(), Status>
    where
        F: FnMut(Delivery) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let mut consumer = self.consume(stream, group, consumer, options).await?;
        *started = true;
        let settings = consumer.settings();
        let retry_delay = options.retry_delay.min(settings.ack_timeout);
        // A slow batch acks as it goes, well within the ack timeout of its first entries.
        let flush_every = settings.ack_timeout / 4;
        while let Some(batch) = consumer.next().await {
            let (mut done, mut failed) = (Vec::new(), Vec::new());
            let mut since_flush = std::time::Instant::now();
            for delivery in batch?.entries {
                let id = delivery.id.clone();
                match handler(delivery).await {
                    Ok(()) => done.push(id),
                    Err(_) => failed.push(id),
                }
                if !done.is_empty() && since_flush.elapsed() >= flush_every {
                    consumer.ack(std::mem::take(&mut done)).await?;
                    since_flush = std::time::Instant::now();
                }
            }
            if !done.is_empty() {
                consumer.ack(done).await?;
            }
            if !failed.is_empty() {
                consumer.nack(failed, retry_delay).await?;
            }
        }
        Ok(())
    }

    /// Acknowledges entries of a group; returns how many were pending.
    pub async fn ack<I: Into<String>>(
        &self,
        stream: impl Into<String>,
        group: impl Into<String>,
        ids: impl IntoIterator<Item = I>,
    ) -> Result<u64, Status> {
        let request = pb::EventsAckRequest {
            stream: stream.into(),
            group: group.into(),
            ids: ids.into_iter().map(Into::into).collect(),
        };
        Ok(self.raw.clone().ack(request).await?.into_inner().acked)
    }

    /// Gives entries pending for `consumer` back for delivery after `delay`; returns how many
    /// were requeued and how many moved to the dead letters.
    pub async fn nack<I: Into<String>>(
        &self,
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
        ids: impl IntoIterator<Item = I>,
        delay: Duration,
    ) -> Result<(u64, u64), Status> {
        let request = pb::EventsNackRequest {
            stream: stream.into(),
            group: group.into(),
            consumer: consumer.into(),
            ids: ids.into_iter().map(Into::into).collect(),
            delay: Some(duration(delay)),
        };
        let response = self.raw.clone().nack(request).await?.into_inner();
        Ok((response.requeued, response.dead_lettered))
    }

    /// Describes a stream: length, dead letters, and each group's pending entries, lag and
    /// consumers.
    pub async fn describe(
        &self,
        stream: impl Into<String>,
    ) -> Result<pb::EventsDescribeStreamResponse, Status> {
        let request = pb::EventsDescribeStreamRequest { stream: stream.into() };
        Ok(self.raw.clone().describe_stream(request).await?.into_inner())
    }
}
