//! The transport of the pipelined calls (`AppendStream`, `PublishStream`): many requests in
//! flight on one call, each answered on its own with its sequence number.
//!
//! [`in_bursts`] takes the requests that have already arrived together and hands them to one
//! task, which answers each as soon as it is ready: appends to one stream join the group commit
//! as one group (`AppendStream`), publishes go to Redis as one pipeline (`PublishStream`), and a
//! burst costs one task, one wait and one wake-up instead of one per request. Each request
//! counts against the namespace's fair share as a call would.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

use super::Events;
use crate::fair_share::ShareGuard;
use crate::namespace;

/// Requests of one pipelined call (`AppendStream`, `PublishStream`) taken and not yet answered;
/// the call's requests are not read further until one is, so HTTP/2 flow control slows a
/// producer that sends faster.
pub(super) const PIPELINED_IN_FLIGHT: usize = 256;

/// A call's requests, ending when the server starts shutting down.
fn until_draining<Req>(
    events: &Arc<Events>,
    requests: Streaming<Req>,
) -> impl Stream<Item = Result<Req, Status>> + use<Req> {
    let events = events.clone();
    futures::StreamExt::take_until(requests, async move { events.draining().await })
}

/// The answers of a call whose requests are handled in bursts: whatever requests have arrived
/// when one is read (up to the room left of [`PIPELINED_IN_FLIGHT`]) go together to `handle`,
/// each with whether the namespace's fair share admitted it; one task forwards the burst's
/// answers as `handle`'s stream yields them, each as soon as it is ready. A request counts
/// against [`PIPELINED_IN_FLIGHT`] from when it is taken until its answer is handed to the
/// transport; its share is held until its burst's work is done. A broken request side ends the
/// call with its status; on shutdown no more requests are taken, those taken are answered, and
/// the call ends.
pub(super) fn in_bursts<Req, Resp, Handle, Answers>(
    events: &Arc<Events>,
    ns: &namespace::Namespace,
    requests: Streaming<Req>,
    handle: Handle,
) -> impl Stream<Item = Result<Resp, Status>> + Send + 'static
where
    Req: Send + 'static,
    Resp: Send + 'static,
    Handle: Fn(Vec<(Req, Result<(), Status>)>, namespace::Namespace) -> Answers + Send + 'static,
    Answers: Stream<Item = Resp> + Send + 'static,
{
    // Each answer carries its request's room, freed when the transport takes the answer: as
    // many answers as requests in flight, so a send never waits.
    let (answers, answered) = mpsc::channel(PIPELINED_IN_FLIGHT + 1);
    tokio::spawn(take_bursts(events.clone(), ns.clone(), requests, handle, answers));
    ReceiverStream::new(answered).map(|(answer, _room): Answer<Resp>| answer)
}

/// An answer, with the room its request took.
type Answer<Resp> = (Result<Resp, Status>, Option<OwnedSemaphorePermit>);

/// Reads `requests` in bursts for [`in_bursts`] until they end, break, the server drains, or
/// the caller stops reading answers.
async fn take_bursts<Req, Resp, Handle, Answers>(
    events: Arc<Events>,
    ns: namespace::Namespace,
    requests: Streaming<Req>,
    handle: Handle,
    answers: mpsc::Sender<Answer<Resp>>,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
    Handle: Fn(Vec<(Req, Result<(), Status>)>, namespace::Namespace) -> Answers + Send + 'static,
    Answers: Stream<Item = Resp> + Send + 'static,
{
    let room = Arc::new(Semaphore::new(PIPELINED_IN_FLIGHT));
    let mut requests = std::pin::pin!(until_draining(&events, requests));
    loop {
        // Room for a request before it is read: a caller that sends faster than its requests
        // are answered is slowed by HTTP/2 flow control.
        let Ok(mut taken) = room.clone().acquire_owned().await else { return };
        let first = tokio::select! {
            next = requests.next() => next,
            () = answers.closed() => return,
        };
        let (mut burst, mut broken, mut ended) = (Vec::new(), None, false);
        match first {
            Some(Ok(request)) => burst.push(request),
            Some(Err(status)) => broken = Some(status),
            None => ended = true,
        }
        while broken.is_none() && !ended {
            let Ok(more) = room.clone().try_acquire_owned() else { break };
            match requests.next().now_or_never() {
                Some(Some(Ok(request))) => {
                    burst.push(request);
                    taken.merge(more);
                }
                Some(Some(Err(status))) => broken = Some(status),
                Some(None) => ended = true,
                None => break,
            }
        }
        if !burst.is_empty() {
            let mut shares = Vec::with_capacity(burst.len());
            let admitted = burst
                .into_iter()
                .map(|request| match events.enter_call(&ns) {
                    Ok(share) => {
                        shares.push(share);
                        (request, Ok(()))
                    }
                    Err(refused) => (request, Err(Status::from(refused))),
                })
                .collect();
            let work = handle(admitted, ns.clone());
            // Its own task: the work, and the shares it holds, end when it is done, even if
            // the caller is slow to read the answers.
            tokio::spawn(forward(work, shares, taken, answers.clone()));
        }
        if let Some(status) = broken {
            let _ = answers.send((Err(crate::honest_codes::honest_request_error(status)), None)).await;
            return;
        }
        if ended {
            return;
        }
    }
}

/// Forwards a burst's answers as its work yields them, each with one request's room; a panic in
/// the work ends the call with INTERNAL, so that no request of it waits for an answer forever.
async fn forward<Resp, Answers>(
    work: Answers,
    shares: Vec<ShareGuard>,
    mut taken: OwnedSemaphorePermit,
    answers: mpsc::Sender<Answer<Resp>>,
) where
    Answers: Stream<Item = Resp> + Send + 'static,
{
    let mut work = std::pin::pin!(futures::StreamExt::catch_unwind(std::panic::AssertUnwindSafe(work)));
    while let Some(answer) = work.next().await {
        let answer =
            answer.map_err(|_| Status::internal("requests of this call failed unexpectedly; retry them"));
        if answers.send((answer, taken.split(1))).await.is_err() {
            break;
        }
    }
    drop(shares);
}
