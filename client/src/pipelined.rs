//! Pipelined calls: many `Events` appends ([`Appender`], `AppendStream`) or publishes
//! ([`Publisher`], `PublishStream`) in flight over one long-lived call, each answered on its
//! own, without the cost of a call per message.
//!
//! One task reads the call's answers and hands each to the request awaiting its sequence
//! number. The table of awaited answers and the call's end share one lock, so a request either
//! is registered before the call ends (and then fails with the end's status) or sees the end
//! and fails at once: none waits forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status, Streaming};

use crate::events::AppendOptions;
use crate::{EventsClient, pb};

/// Requests queued for the call before a request waits for room.
const QUEUED_REQUESTS: usize = 1024;

/// The answers awaited, and how the call ended once it has.
struct Awaited<T> {
    next_sequence: u64,
    answers: HashMap<u64, oneshot::Sender<Result<T, Status>>>,
    ended: Option<Status>,
}

/// One pipelined call: its request queue and the answers awaited.
struct Pipeline<Req, T> {
    requests: mpsc::Sender<Req>,
    awaited: Arc<Mutex<Awaited<T>>>,
}

impl<Req, T> Clone for Pipeline<Req, T> {
    fn clone(&self) -> Self {
        Self { requests: self.requests.clone(), awaited: self.awaited.clone() }
    }
}

fn lock<T>(awaited: &Mutex<Awaited<T>>) -> std::sync::MutexGuard<'_, Awaited<T>> {
    awaited.lock().unwrap_or_else(|e| e.into_inner())
}

/// A failure the server answered for one request.
fn failed(failure: pb::EventsAppendFailure) -> Status {
    Status::new(Code::from(failure.code), failure.message)
}

impl<Req: Send + 'static, T: Send + 'static> Pipeline<Req, T> {
    /// Opens the call with `open` and starts the task that reads its answers; `answer` splits
    /// each into its sequence number and outcome.
    async fn open<Resp, Open, Opened>(
        open: Open,
        answer: fn(Resp) -> (u64, Result<T, Status>),
        what: &'static str,
    ) -> Result<Self, Status>
    where
        Resp: Send + 'static,
        Open: FnOnce(tokio_stream::wrappers::ReceiverStream<Req>) -> Opened,
        Opened: Future<Output = Result<tonic::Response<Streaming<Resp>>, Status>>,
    {
        let (requests, requests_rx) = mpsc::channel(QUEUED_REQUESTS);
        let mut answers = open(tokio_stream::wrappers::ReceiverStream::new(requests_rx)).await?.into_inner();
        let awaited =
            Arc::new(Mutex::new(Awaited { next_sequence: 0, answers: HashMap::new(), ended: None }));
        let reader = awaited.clone();
        tokio::spawn(async move {
            let ended = loop {
                match answers.message().await {
                    Ok(Some(response)) => {
                        let (sequence, outcome) = answer(response);
                        if let Some(waiting) = lock(&reader).answers.remove(&sequence) {
                            let _ = waiting.send(outcome);
                        }
                    }
                    Ok(None) => break Status::unavailable("the server ended the call"),
                    Err(status) => break status,
                }
            };
            let mut awaited = lock(&reader);
            for (_, waiting) in awaited.answers.drain() {
                let _ = waiting.send(Err(Status::unavailable(format!(
                    "the {what} call ended before this was answered ({}: {}); it may have taken \
                     effect",
                    ended.code(),
                    ended.message()
                ))));
            }
            awaited.ended = Some(ended);
        });
        Ok(Self { requests, awaited })
    }

    /// Sends the request `request` builds from its sequence number and waits for its answer.
    async fn call(&self, request: impl FnOnce(u64) -> Req) -> Result<T, Status> {
        let (answer, answered) = oneshot::channel();
        let sequence = {
            let mut awaited = lock(&self.awaited);
            if let Some(ended) = &awaited.ended {
                return Err(Status::unavailable(format!(
                    "the call has ended ({}: {}); open a new one",
                    ended.code(),
                    ended.message()
                )));
            }
            awaited.next_sequence += 1;
            let sequence = awaited.next_sequence;
            awaited.answers.insert(sequence, answer);
            sequence
        };
        // A caller that gives up takes its entry with it.
        let _registered = Registered { awaited: &self.awaited, sequence };
        let ended = |_| Err(Status::unavailable("the call ended"));
        let mut answered = std::pin::pin!(answered);
        // If the call ends while this waits for room in the queue, its reader answers at once.
        tokio::select! {
            answer = &mut answered => return answer.unwrap_or_else(ended),
            _ = self.requests.send(request(sequence)) => {}
        }
        answered.await.unwrap_or_else(ended)
    }
}

/// A request's entry among the awaited answers, removed when its caller stops waiting (the
/// reader removes it first when it answers).
struct Registered<'a, T> {
    awaited: &'a Mutex<Awaited<T>>,
    sequence: u64,
}

impl<T> Drop for Registered<'_, T> {
    fn drop(&mut self) {
        lock(self.awaited).answers.remove(&self.sequence);
    }
}

/// Appends over one `Events.AppendStream` call. Cheap to clone: clones share the call, which
/// ends when the last clone is dropped (appends still in flight are answered first).
#[derive(Clone)]
pub struct Appender(Pipeline<pb::EventsAppendStreamRequest, (String, bool)>);

/// Publishes over one `Events.PublishStream` call. Cheap to clone, as [`Appender`].
#[derive(Clone)]
pub struct Publisher(Pipeline<pb::EventsPublishStreamRequest, u64>);

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl EventsClient {
    /// Opens an [`Appender`]: one call that carries many appends at once.
    pub async fn appender(&self) -> Result<Appender, Status> {
        use pb::events_append_stream_response::Outcome;
        let mut raw = self.raw();
        let pipeline = Pipeline::open(
            |requests| raw.append_stream(requests),
            |pb::EventsAppendStreamResponse { sequence, outcome }| {
                let outcome = match outcome {
                    Some(Outcome::Appended(pb::EventsAppendResponse { id, duplicate })) => {
                        Ok((id, duplicate))
                    }
                    Some(Outcome::Failed(failure)) => Err(failed(failure)),
                    None => Err(Status::internal("an append was answered without an outcome")),
                };
                (sequence, outcome)
            },
            "AppendStream",
        )
        .await?;
        Ok(Appender(pipeline))
    }

    /// Opens a [`Publisher`]: one call that carries many publishes at once.
    pub async fn publisher(&self) -> Result<Publisher, Status> {
        use pb::events_publish_stream_response::Outcome;
        let mut raw = self.raw();
        let pipeline = Pipeline::open(
            |requests| raw.publish_stream(requests),
            |pb::EventsPublishStreamResponse { sequence, outcome }| {
                let outcome = match outcome {
                    Some(Outcome::Published(pb::EventsPublishResponse { receivers })) => Ok(receivers),
                    Some(Outcome::Failed(failure)) => Err(failed(failure)),
                    None => Err(Status::internal("a publish was answered without an outcome")),
                };
                (sequence, outcome)
            },
            "PublishStream",
        )
        .await?;
        Ok(Publisher(pipeline))
    }
}

impl Appender {
    /// Appends one entry, as `EventsClient::append`, and waits for its own answer. Appends made
    /// concurrently may be added in any order: await one before making another that must
    /// follow it.
    pub async fn append(
        &self,
        stream: impl Into<String>,
        fields: HashMap<String, Vec<u8>>,
        options: &AppendOptions,
    ) -> Result<(String, bool), Status> {
        let append = crate::events::append_request(stream.into(), fields, options);
        self.0.call(|sequence| pb::EventsAppendStreamRequest { sequence, append: Some(append) }).await
    }
}

impl Publisher {
    /// Publishes one message, as `EventsClient::publish`, and waits for its own answer: how
    /// many server replicas received it. Publishes made concurrently may reach subscribers in
    /// either order.
    pub async fn publish(
        &self,
        channel: impl Into<String>,
        payload: impl Into<bytes::Bytes>,
    ) -> Result<u64, Status> {
        let publish = pb::EventsPublishRequest { channel: channel.into(), payload: payload.into() };
        self.0.call(|sequence| pb::EventsPublishStreamRequest { sequence, publish: Some(publish) }).await
    }
}
