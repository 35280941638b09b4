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
use tonic::{Request, Response, Status};

use super::{Append, Event, Events, StreamEntry};
use crate::convert::duration_in;
use crate::namespace;

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
}

fn event_out(event: Event) -> pb::EventsSubscribeResponse {
    use pb::events_subscribe_response::Event as Out;
    let event = match event {
        Event::Subscribed => Out::Subscribed(pb::EventsSubscribed {}),
        Event::Message { channel, pattern, payload } => {
            Out::Message(pb::EventsMessage { channel, pattern: pattern.unwrap_or_default(), payload })
        }
        Event::SlowSubscriberGap(missed) => {
            Out::Gap(pb::EventsGap { reason: pb::EventsGapReason::SlowSubscriber.into(), missed })
        }
        Event::ReconnectedGap => {
            Out::Gap(pb::EventsGap { reason: pb::EventsGapReason::Reconnected.into(), missed: 0 })
        }
    };
    pb::EventsSubscribeResponse { event: Some(event) }
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
        let pb::EventsAppendRequest { stream, fields, max_len, max_age, idempotency_key } =
            request.into_inner();
        let append = Append {
            fields,
            max_len,
            max_age: duration_in("max_age", max_age)?,
            idempotency_key: (!idempotency_key.is_empty()).then_some(idempotency_key),
        };
        let (id, duplicate) = self.events.append(&ns, &stream, append).await?;
        Ok(Response::new(pb::EventsAppendResponse { id, duplicate }))
    }

    type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::EventsReadResponse, Status>> + Send>>;

    async fn read(
        &self,
        request: Request<pb::EventsReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace::of(&request)?;
        let pb::EventsReadRequest { stream, after, follow } = request.into_inner();
        let batches = self.events.read(&ns, &stream, &after, follow)?;
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
        let pb::EventsSubscribeRequest { channels, patterns } = request.into_inner();
        let events = self.events.subscribe(&ns, channels, patterns).await?;
        let stream = ReceiverStream::new(events).map(|event| event.map(event_out).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
