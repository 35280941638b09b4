//! The gRPC adapter of the Events service: converts messages to domain calls and back.
//!
//! Handlers destructure each request message completely, so a field added to the proto is a
//! compile error here until it is handled. Payloads are never logged.

use std::pin::Pin;
use std::sync::Arc;

use rookery::v1 as pb;
use rookery::v1::events_server;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::groups::{ConsumeEvent, ConsumeRequest, Delivery, EffectiveSettings, GroupSettings, StreamInfo};
use super::pipelined::in_bursts;
use super::{Append, Event, Events, NewEntry, StreamEntry};
use crate::convert::{duration_in, duration_out};
use crate::namespace;

/// A failed outcome carrying `status`.
fn failure(status: &Status) -> pb::EventsAppendFailure {
    pb::EventsAppendFailure { code: status.code() as i32, message: status.message().to_owned() }
}

/// The stream and the domain append of one `Append` request, as the unary call and each
/// append of `AppendStream` make it.
fn append_of(request: pb::EventsAppendRequest) -> Result<(String, Append), Status> {
    let pb::EventsAppendRequest { stream, fields, max_len, max_age, idempotency_key } = request;
    let append = Append {
        fields,
        max_len,
        max_age: duration_in("max_age", max_age)?,
        idempotency_key: (!idempotency_key.is_empty()).then_some(idempotency_key),
    };
    Ok((stream, append))
}

/// The answers to one burst of `AppendStream` requests, each as soon as it is known: refused,
/// invalid, or appended as its own `Append` call would be.
fn append_burst(
    events: &Arc<Events>,
    ns: &namespace::Namespace,
    burst: Vec<(pb::EventsAppendStreamRequest, Result<(), Status>)>,
) -> impl Stream<Item = pb::EventsAppendStreamResponse> + Send + use<> {
    use pb::events_append_stream_response::Outcome;
    let answer = |sequence, outcome| pb::EventsAppendStreamResponse { sequence, outcome: Some(outcome) };
    let (mut refused, mut sequences, mut appends) = (Vec::new(), Vec::new(), Vec::with_capacity(burst.len()));
    for (pb::EventsAppendStreamRequest { sequence, append }, admitted) in burst {
        let append = admitted
            .and_then(|()| append.ok_or_else(|| Status::invalid_argument("`append` is required")))
            .and_then(append_of);
        match append {
            Ok(append) => {
                sequences.push(sequence);
                appends.push(append);
            }
            Err(status) => refused.push(answer(sequence, Outcome::Failed(failure(&status)))),
        }
    }
    let appended = events.append_each(ns, appends).map(move |(at, appended)| {
        let outcome = match appended {
            Ok((id, duplicate)) => Outcome::Appended(pb::EventsAppendResponse { id, duplicate }),
            Err(e) => Outcome::Failed(failure(&Status::from(e))),
        };
        answer(sequences[at], outcome)
    });
    tokio_stream::iter(refused).chain(appended)
}

/// The answers to one burst of `PublishStream` requests: refused or invalid ones at once, the
/// others once their one pipeline of PUBLISHes is answered, each as its own `Publish` would be.
fn publish_burst(
    events: Arc<Events>,
    ns: namespace::Namespace,
    burst: Vec<(pb::EventsPublishStreamRequest, Result<(), Status>)>,
) -> impl Stream<Item = pb::EventsPublishStreamResponse> + Send + use<> {
    use pb::events_publish_stream_response::Outcome;
    let answer = |sequence, outcome| pb::EventsPublishStreamResponse { sequence, outcome: Some(outcome) };
    let (mut refused, mut sequences, mut publishes) =
        (Vec::new(), Vec::new(), Vec::with_capacity(burst.len()));
    for (pb::EventsPublishStreamRequest { sequence, publish }, admitted) in burst {
        match admitted.and_then(|()| publish.ok_or_else(|| Status::invalid_argument("`publish` is required")))
        {
            Ok(pb::EventsPublishRequest { channel, payload }) => {
                sequences.push(sequence);
                publishes.push((channel, payload));
            }
            Err(status) => refused.push(answer(sequence, Outcome::Failed(failure(&status)))),
        }
    }
    let published = futures::stream::once(async move {
        let outcomes =
            if publishes.is_empty() { Vec::new() } else { events.publish_each(&ns, &publishes).await };
        // One outcome per publish; should one be missing, its request is still answered.
        let missing =
            || Err(crate::error::Error::Internal("a publish of this call went unanswered; retry it".into()));
        let outcomes = outcomes.into_iter().chain(std::iter::repeat_with(missing));
        sequences.into_iter().zip(outcomes).map(move |(sequence, published)| {
            let outcome = match published {
                Ok(receivers) => Outcome::Published(pb::EventsPublishResponse { receivers }),
                Err(e) => Outcome::Failed(failure(&Status::from(e))),
            };
            answer(sequence, outcome)
        })
    });
    tokio_stream::iter(refused).chain(futures::StreamExt::flat_map(published, tokio_stream::iter))
}

/// `rookery.v1.Events` over the domain [`Events`].
#[derive(Debug, Clone)]
pub struct EventsApi {
    events: Arc<Events>,
}

impl EventsApi {
    /// Serves `events` over gRPC.
    pub fn new(events: Arc<Events>) -> Self {
        Self { events }
    }

    /// Starts the consumer `request` asks for; its responses (`Consume`'s stream).
    async fn deliveries(
        &self,
        ns: &namespace::Namespace,
        request: pb::EventsConsumeRequest,
    ) -> Result<impl Stream<Item = Result<pb::EventsConsumeResponse, Status>> + Send + 'static, Status> {
        let pb::EventsConsumeRequest { stream, group, consumer, create_group, settings, max_in_flight } =
            request;
        let request = ConsumeRequest {
            stream,
            group,
            consumer,
            create_group,
            settings: settings_in(settings)?,
            max_in_flight,
        };
        let events = self.events.consume(ns, request).await?;
        Ok(ReceiverStream::new(events).map(|event| event.map(consume_out).map_err(Status::from)))
    }
}

/// `ack`s of one `ConsumeWithAcks` call answered but not yet sent before its reader waits.
const ACKS_IN_FLIGHT: usize = 16;

fn message_out(channel: String, pattern: Option<String>, payload: bytes::Bytes) -> pb::EventsMessage {
    pb::EventsMessage { channel, pattern: pattern.unwrap_or_default(), payload }
}

fn event_out(event: Event) -> pb::EventsSubscribeResponse {
    use pb::events_subscribe_response::Event as Out;
    let event = match event {
        Event::Subscribed => Out::Subscribed(pb::EventsSubscribed {}),
        Event::Message { channel, pattern, payload } => Out::Message(message_out(channel, pattern, payload)),
        Event::SlowSubscriberGap(missed) => {
            Out::Gap(pb::EventsGap { reason: pb::EventsGapReason::SlowSubscriber.into(), missed })
        }
        Event::ReconnectedGap => {
            Out::Gap(pb::EventsGap { reason: pb::EventsGapReason::Reconnected.into(), missed: 0 })
        }
    };
    pb::EventsSubscribeResponse { event: Some(event) }
}

/// The most messages one `messages` response carries.
const MAX_BATCH_MESSAGES: usize = 256;
/// The payload bytes after which a `messages` response is closed (a message larger than this
/// leaves alone): responses stay small enough for any client's receive limit.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Turns events that were ready together into responses, in order: consecutive messages into
/// `messages` responses of at most [`MAX_BATCH_BYTES`] of payload, anything else as it is.
fn batched(ready: Vec<crate::error::Result<Event>>) -> Vec<Result<pb::EventsSubscribeResponse, Status>> {
    use pb::events_subscribe_response::Event as Out;
    fn flush(batch: &mut Vec<pb::EventsMessage>, out: &mut Vec<Result<pb::EventsSubscribeResponse, Status>>) {
        let event = match batch.len() {
            0 => return,
            1 => Out::Message(batch.pop().expect("one message")),
            _ => Out::Messages(pb::EventsMessages { messages: std::mem::take(batch) }),
        };
        out.push(Ok(pb::EventsSubscribeResponse { event: Some(event) }));
    }
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for event in ready {
        match event {
            Ok(Event::Message { channel, pattern, payload }) => {
                if bytes + payload.len() > MAX_BATCH_BYTES {
                    flush(&mut batch, &mut out);
                    bytes = 0;
                }
                bytes += payload.len();
                batch.push(message_out(channel, pattern, payload));
            }
            other => {
                flush(&mut batch, &mut out);
                bytes = 0;
                out.push(other.map(event_out).map_err(Status::from));
            }
        }
    }
    flush(&mut batch, &mut out);
    out
}

fn settings_in(settings: Option<pb::EventsGroupSettings>) -> Result<GroupSettings, Status> {
    let pb::EventsGroupSettings { ack_timeout, max_deliveries } = settings.unwrap_or_default();
    Ok(GroupSettings { ack_timeout: duration_in("ack_timeout", ack_timeout)?, max_deliveries })
}

fn settings_out(settings: EffectiveSettings) -> pb::EventsGroupSettings {
    pb::EventsGroupSettings {
        ack_timeout: Some(duration_out(settings.ack_timeout)),
        max_deliveries: Some(settings.max_deliveries),
    }
}

fn consume_out(event: ConsumeEvent) -> pb::EventsConsumeResponse {
    use pb::events_consume_response::Event as Out;
    let event = match event {
        ConsumeEvent::Started { settings, max_in_flight } => Out::Started(pb::EventsConsumeStarted {
            ack_timeout: Some(duration_out(settings.ack_timeout)),
            max_deliveries: settings.max_deliveries,
            max_in_flight,
        }),
        ConsumeEvent::Deliveries { deliveries, trimmed } => Out::Deliveries(pb::EventsDeliveries {
            deliveries: deliveries
                .into_iter()
                .map(|Delivery { id, fields, deliveries }| pb::EventsDelivery { id, fields, deliveries })
                .collect(),
            trimmed,
        }),
    };
    pb::EventsConsumeResponse { event: Some(event) }
}

fn describe_out(info: StreamInfo) -> pb::EventsDescribeStreamResponse {
    pb::EventsDescribeStreamResponse {
        length: info.length,
        first_id: info.first_id,
        last_id: info.last_id,
        dead_letters: info.dead_letters,
        groups: info
            .groups
            .into_iter()
            .map(|g| pb::EventsGroupInfo {
                name: g.name,
                settings: Some(settings_out(g.settings)),
                pending: g.pending,
                delayed: g.delayed,
                lag: g.lag,
                last_delivered_id: g.last_delivered_id,
                oldest_pending_age: g.oldest_pending_age.map(duration_out),
                consumers: g
                    .consumers
                    .into_iter()
                    .map(|c| pb::EventsConsumerInfo {
                        name: c.name,
                        pending: c.pending,
                        idle: Some(duration_out(c.idle)),
                    })
                    .collect(),
                consumers_omitted: g.consumers_omitted,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl events_server::Events for EventsApi {
    async fn publish(
        &self,
        request: Request<pb::EventsPublishRequest>,
    ) -> Result<Response<pb::EventsPublishResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsPublishRequest { channel, payload } = request.into_inner();
        let receivers = self.events.publish(&ns, &channel, &payload).await?;
        Ok(Response::new(pb::EventsPublishResponse { receivers }))
    }

    async fn append(
        &self,
        request: Request<pb::EventsAppendRequest>,
    ) -> Result<Response<pb::EventsAppendResponse>, Status> {
        let ns = namespace::of(&request)?;
        let (stream, append) = append_of(request.into_inner())?;
        let (id, duplicate) = self.events.append(&ns, &stream, append).await?;
        Ok(Response::new(pb::EventsAppendResponse { id, duplicate }))
    }

    type AppendStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::EventsAppendStreamResponse, Status>> + Send>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<pb::EventsAppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let ns = namespace::of(&request)?;
        let events = self.events.clone();
        let answers = in_bursts(&self.events, &ns, request.into_inner(), move |burst, ns| {
            append_burst(&events, &ns, burst)
        });
        Ok(Response::new(Box::pin(answers)))
    }

    type PublishStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::EventsPublishStreamResponse, Status>> + Send>>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::EventsPublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let ns = namespace::of(&request)?;
        let events = self.events.clone();
        let answers = in_bursts(&self.events, &ns, request.into_inner(), move |burst, ns| {
            publish_burst(events.clone(), ns, burst)
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn append_many(
        &self,
        request: Request<pb::EventsAppendManyRequest>,
    ) -> Result<Response<pb::EventsAppendManyResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsAppendManyRequest { stream, entries, max_len, max_age } = request.into_inner();
        let entries = entries
            .into_iter()
            .map(|pb::EventsNewEntry { fields, idempotency_key }| NewEntry {
                fields,
                idempotency_key: (!idempotency_key.is_empty()).then_some(idempotency_key),
            })
            .collect();
        let max_age = duration_in("max_age", max_age)?;
        let appended = self.events.append_many(&ns, &stream, entries, max_len, max_age).await?;
        let appended =
            appended.into_iter().map(|(id, duplicate)| pb::EventsAppendResponse { id, duplicate }).collect();
        Ok(Response::new(pb::EventsAppendManyResponse { appended }))
    }

    type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::EventsReadResponse, Status>> + Send>>;

    async fn read(
        &self,
        request: Request<pb::EventsReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsReadRequest { stream, after, follow, dead_letters } = request.into_inner();
        let batches = self.events.read(&ns, &stream, &after, follow, dead_letters).await?;
        let stream = ReceiverStream::new(batches).map(|batch| {
            batch
                .map(|entries| pb::EventsReadResponse {
                    entries: entries
                        .into_iter()
                        .map(|StreamEntry { id, fields }| pb::EventsEntry { id, fields })
                        .collect(),
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::EventsSubscribeResponse, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<pb::EventsSubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsSubscribeRequest { channels, patterns, batch } = request.into_inner();
        let events = self.events.subscribe(&ns, channels, patterns).await?;
        if batch {
            // Whatever is ready when the connection can take more leaves together; nothing waits.
            let ready = futures::StreamExt::ready_chunks(events, MAX_BATCH_MESSAGES);
            let batches = futures::StreamExt::flat_map(ready, |ready| futures::stream::iter(batched(ready)));
            return Ok(Response::new(Box::pin(batches)));
        }
        let stream = events.map(|event| event.map(event_out).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_group(
        &self,
        request: Request<pb::EventsCreateGroupRequest>,
    ) -> Result<Response<pb::EventsCreateGroupResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsCreateGroupRequest { stream, group, start, settings } = request.into_inner();
        self.events.create_group(&ns, &stream, &group, &start, settings_in(settings)?).await?;
        Ok(Response::new(pb::EventsCreateGroupResponse {}))
    }

    async fn delete_group(
        &self,
        request: Request<pb::EventsDeleteGroupRequest>,
    ) -> Result<Response<pb::EventsDeleteGroupResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsDeleteGroupRequest { stream, group } = request.into_inner();
        let deleted = self.events.delete_group(&ns, &stream, &group).await?;
        Ok(Response::new(pb::EventsDeleteGroupResponse { deleted }))
    }

    type ConsumeStream = Pin<Box<dyn Stream<Item = Result<pb::EventsConsumeResponse, Status>> + Send>>;

    async fn consume(
        &self,
        request: Request<pb::EventsConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let ns = namespace::of(&request)?;
        let deliveries = self.deliveries(&ns, request.into_inner()).await?;
        Ok(Response::new(Box::pin(deliveries)))
    }

    type ConsumeWithAcksStream =
        Pin<Box<dyn Stream<Item = Result<pb::EventsConsumeResponse, Status>> + Send>>;

    async fn consume_with_acks(
        &self,
        request: Request<Streaming<pb::EventsConsumeWithAcksRequest>>,
    ) -> Result<Response<Self::ConsumeWithAcksStream>, Status> {
        use pb::events_consume_with_acks_request::Message;
        let ns = namespace::of(&request)?;
        let mut requests = request.into_inner();
        let Some(pb::EventsConsumeWithAcksRequest { message: Some(Message::Start(start)) }) =
            requests.message().await?
        else {
            return Err(Status::invalid_argument("the first message of ConsumeWithAcks must be `start`"));
        };
        let (stream, group) = (start.stream.clone(), start.group.clone());
        let deliveries = self.deliveries(&ns, start).await?;
        // Acks are made in the order they came, each answered among the deliveries; the call
        // ends when the deliveries do (the request side closing stops nothing).
        let (acked_tx, acked) = tokio::sync::mpsc::channel(ACKS_IN_FLIGHT);
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                let Some(Message::Ack(pb::EventsAckIds { ids })) = request.message else {
                    let refused =
                        Status::invalid_argument("only the first message of ConsumeWithAcks is `start`");
                    let _ = acked_tx.send(Err(refused)).await;
                    return;
                };
                // A failed ack ends the call, as a failed Ack call fails: answering it with 0
                // and going on would leave its entries pending, filling the consumer's in-flight
                // bound until the ack timeout, while a consumer that starts again gets its own
                // pending entries back at once.
                let acked = match events.ack(&ns, &stream, &group, &ids).await {
                    Ok(acked) => acked,
                    Err(e) => {
                        let _ = acked_tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let answer = pb::EventsConsumeResponse {
                    event: Some(pb::events_consume_response::Event::Acked(pb::EventsAcked { acked })),
                };
                if acked_tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        let deliveries = deliveries.map(Some).chain(tokio_stream::once(None));
        let merged = deliveries.merge(ReceiverStream::new(acked).map(Some));
        // A failed or invalid ack ends the call with its status (tonic sends no more after an
        // error), as the deliveries' own errors do.
        Ok(Response::new(Box::pin(merged.map_while(|item| item))))
    }

    async fn ack(
        &self,
        request: Request<pb::EventsAckRequest>,
    ) -> Result<Response<pb::EventsAckResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsAckRequest { stream, group, ids } = request.into_inner();
        let acked = self.events.ack(&ns, &stream, &group, &ids).await?;
        Ok(Response::new(pb::EventsAckResponse { acked }))
    }

    async fn nack(
        &self,
        request: Request<pb::EventsNackRequest>,
    ) -> Result<Response<pb::EventsNackResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsNackRequest { stream, group, consumer, ids, delay } = request.into_inner();
        let delay = duration_in("delay", delay)?.unwrap_or_default();
        let (requeued, dead_lettered) =
            self.events.nack(&ns, &stream, &group, &consumer, &ids, delay).await?;
        Ok(Response::new(pb::EventsNackResponse { requeued, dead_lettered }))
    }

    async fn describe_stream(
        &self,
        request: Request<pb::EventsDescribeStreamRequest>,
    ) -> Result<Response<pb::EventsDescribeStreamResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsDescribeStreamRequest { stream } = request.into_inner();
        Ok(Response::new(describe_out(self.events.describe(&ns, &stream).await?)))
    }
}
