//! The gRPC adapter of the Lock service: converts messages to domain calls and back.
//!
//! Handlers destructure each request message completely, so a field added to the proto is a
//! compile error here until it is handled. Streaming RPCs hand back the domain task's event
//! channel, mapped to messages; dropping the response stream (client gone) closes the channel,
//! which the task notices and releases what it holds.

use std::pin::Pin;
use std::sync::Arc;

use rookery::v1 as pb;
use rookery::v1::lock_server;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{EventStream, Grant, HoldEvent, Kind, Leader, LeaseRequest, LeaseTime, Locks, LostReason};
use crate::convert::{duration_in, duration_out, grpc_timeout};
use crate::namespace;

/// `rookery.v1.Lock` over the domain [`Locks`].
#[derive(Debug, Clone)]
pub struct LockApi {
    locks: Arc<Locks>,
}

impl LockApi {
    /// Serves `locks` over gRPC.
    pub fn new(locks: Arc<Locks>) -> Self {
        Self { locks }
    }
}

/// A server stream of `T` messages.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Maps a domain event stream to a response stream, skipping events `map` drops.
fn respond<E, T>(events: EventStream<E>, map: fn(E) -> Option<T>) -> Response<ResponseStream<T>>
where
    E: Send + 'static,
    T: Send + 'static,
{
    let stream =
        ReceiverStream::new(events).filter_map(move |event| event.map(map).map_err(Status::from).transpose());
    Response::new(Box::pin(stream))
}

fn lost(reason: LostReason) -> pb::LockLost {
    let code = match reason {
        LostReason::Revoked => pb::LockLostReason::Revoked,
        LostReason::Unreachable => pb::LockLostReason::Unreachable,
        LostReason::OutOfMemory => pb::LockLostReason::RedisOutOfMemory,
    };
    pb::LockLost { reason: code.into(), message: reason.message().to_owned() }
}

fn acquired(Grant { token, fence, lease: LeaseTime { expires_at, ttl } }: Grant) -> pb::LockAcquired {
    pb::LockAcquired { token, fence, expires_at: Some(expires_at.into()), ttl: Some(duration_out(ttl)) }
}

fn hold_event(event: HoldEvent) -> Option<pb::LockHoldResponse> {
    use pb::lock_hold_response::Event;
    let event = match event {
        HoldEvent::Acquired(grant) => Event::Acquired(acquired(grant)),
        HoldEvent::Renewed(LeaseTime { expires_at, ttl }) => Event::Renewed(pb::LockRenewed {
            expires_at: Some(expires_at.into()),
            ttl: Some(duration_out(ttl)),
        }),
        HoldEvent::Lost(reason) => Event::Lost(lost(reason)),
        HoldEvent::NotAcquired => Event::NotAcquired(pb::LockNotAcquired {}),
    };
    Some(pb::LockHoldResponse { event: Some(event) })
}

fn campaign_event(event: HoldEvent) -> Option<pb::LockCampaignResponse> {
    use pb::lock_campaign_response::Event;
    let event = match event {
        HoldEvent::Acquired(grant) => {
            let pb::LockAcquired { token, fence, expires_at, ttl } = acquired(grant);
            Event::Elected(pb::LockElected { token, fence, expires_at, ttl })
        }
        HoldEvent::Lost(reason) => Event::Lost(lost(reason)),
        // Renewals are not reported to candidates; a campaign never stops waiting.
        HoldEvent::Renewed(_) | HoldEvent::NotAcquired => return None,
    };
    Some(pb::LockCampaignResponse { event: Some(event) })
}

fn observe_event(leader: Option<Leader>) -> Option<pb::LockObserveResponse> {
    let leader = leader.map(|Leader { candidate, fence, elected_at }| pb::LockLeader {
        candidate,
        fence,
        elected_at: Some(elected_at.into()),
    });
    Some(pb::LockObserveResponse { leader })
}

#[tonic::async_trait]
impl lock_server::Lock for LockApi {
    async fn acquire(
        &self,
        request: Request<pb::LockAcquireRequest>,
    ) -> Result<Response<pb::LockAcquireResponse>, Status> {
        let ns = namespace::of(&request)?;
        let deadline = grpc_timeout(request.metadata());
        let pb::LockAcquireRequest { name, ttl, wait, limit, owner } = request.into_inner();
        let request = LeaseRequest {
            name,
            ttl: duration_in("ttl", ttl)?,
            wait: duration_in("wait", wait)?,
            limit,
            owner,
        };
        let response = match self.locks.acquire(&ns, request, deadline).await? {
            Some(grant) => {
                let pb::LockAcquired { token, fence, expires_at, ttl } = acquired(grant);
                pb::LockAcquireResponse { acquired: true, token, fence, expires_at, ttl }
            }
            None => pb::LockAcquireResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn release(
        &self,
        request: Request<pb::LockReleaseRequest>,
    ) -> Result<Response<pb::LockReleaseResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::LockReleaseRequest { name, token } = request.into_inner();
        let released = self.locks.release(Kind::Lock, &ns, &name, &token).await?;
        Ok(Response::new(pb::LockReleaseResponse { released }))
    }

    async fn extend(
        &self,
        request: Request<pb::LockExtendRequest>,
    ) -> Result<Response<pb::LockExtendResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::LockExtendRequest { name, token, ttl } = request.into_inner();
        let extended = self.locks.extend(&ns, &name, &token, duration_in("ttl", ttl)?).await?;
        Ok(Response::new(pb::LockExtendResponse {
            extended: extended.is_some(),
            expires_at: extended.map(|lease| lease.expires_at.into()),
        }))
    }

    type HoldStream = ResponseStream<pb::LockHoldResponse>;

    async fn hold(
        &self,
        request: Request<pb::LockHoldRequest>,
    ) -> Result<Response<Self::HoldStream>, Status> {
        let ns = namespace::of(&request)?;
        let pb::LockHoldRequest { name, ttl, wait, limit, owner } = request.into_inner();
        let request = LeaseRequest {
            name,
            ttl: duration_in("ttl", ttl)?,
            wait: duration_in("wait", wait)?,
            limit,
            owner,
        };
        Ok(respond(self.locks.hold(Kind::Lock, &ns, request)?, hold_event))
    }

    async fn inspect(
        &self,
        request: Request<pb::LockInspectRequest>,
    ) -> Result<Response<pb::LockInspectResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::LockInspectRequest { name } = request.into_inner();
        let state = self.locks.inspect(&ns, &name).await?;
        let holders = state
            .holders
            .into_iter()
            .map(|h| pb::LockHolder {
                owner: h.owner,
                fence: h.fence,
                acquired_at: Some(h.acquired_at.into()),
                expires_at: Some(h.expires_at.into()),
            })
            .collect();
        Ok(Response::new(pb::LockInspectResponse {
            holders,
            limit: state.limit,
            last_fence: state.last_fence,
        }))
    }

    type CampaignStream = ResponseStream<pb::LockCampaignResponse>;

    async fn campaign(
        &self,
        request: Request<pb::LockCampaignRequest>,
    ) -> Result<Response<Self::CampaignStream>, Status> {
        let ns = namespace::of(&request)?;
        let pb::LockCampaignRequest { election, candidate, ttl } = request.into_inner();
        let request = LeaseRequest {
            name: election,
            ttl: duration_in("ttl", ttl)?,
            wait: None,
            limit: 1,
            owner: candidate,
        };
        Ok(respond(self.locks.hold(Kind::Election, &ns, request)?, campaign_event))
    }

    type ObserveStream = ResponseStream<pb::LockObserveResponse>;

    async fn observe(
        &self,
        request: Request<pb::LockObserveRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let ns = namespace::of(&request)?;
        let pb::LockObserveRequest { election } = request.into_inner();
        Ok(respond(self.locks.observe(&ns, &election)?, observe_event))
    }

    async fn resign(
        &self,
        request: Request<pb::LockResignRequest>,
    ) -> Result<Response<pb::LockResignResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::LockResignRequest { election, token } = request.into_inner();
        let resigned = self.locks.release(Kind::Election, &ns, &election, &token).await?;
        Ok(Response::new(pb::LockResignResponse { resigned }))
    }
}
