//! The gRPC adapter of the Cache service: converts messages to domain calls and back.
//!
//! Handlers destructure each request message completely, so a field added to the proto is a
//! compile error here until it is handled.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rookery::v1 as pb;
use rookery::v1::cache_server;
use tokio_util::task::AbortOnDropHandle;
use tonic::{Request, Response, Status, Streaming};

use super::{
    BUCKETS, Cache, Changes, Condition, Entry, FetchOptions, FetchOutcome, InvalidateTarget, WriteOptions,
};
use crate::convert::{duration_in, duration_out, grpc_timeout};
use crate::drain::SHUTDOWN_MESSAGE;
use crate::error::Error;
use crate::namespace;

/// `rookery.v1.Cache` over the domain [`Cache`].
#[derive(Debug, Clone)]
pub struct CacheApi {
    cache: Arc<Cache>,
}

impl CacheApi {
    /// Serves `cache` over gRPC.
    pub fn new(cache: Arc<Cache>) -> Self {
        Self { cache }
    }
}

fn condition(value: i32) -> Result<Condition, Error> {
    match pb::CacheSetCondition::try_from(value) {
        Ok(pb::CacheSetCondition::Unspecified | pb::CacheSetCondition::Always) => Ok(Condition::Always),
        Ok(pb::CacheSetCondition::IfAbsent) => Ok(Condition::IfAbsent),
        Ok(pb::CacheSetCondition::IfPresent) => Ok(Condition::IfPresent),
        Err(_) => Err(Error::InvalidArgument(format!("unknown condition {value}"))),
    }
}

fn lookup(entry: Option<Entry>) -> pb::CacheLookup {
    match entry {
        Some(Entry { value, ttl }) => pb::CacheLookup { found: true, value, ttl: ttl.map(duration_out) },
        None => pb::CacheLookup::default(),
    }
}

#[tonic::async_trait]
impl cache_server::Cache for CacheApi {
    async fn get(
        &self,
        request: Request<pb::CacheGetRequest>,
    ) -> Result<Response<pb::CacheGetResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::CacheGetRequest { key } = request.into_inner();
        let pb::CacheLookup { found, value, ttl } = lookup(self.cache.get(&ns, &key).await?);
        Ok(Response::new(pb::CacheGetResponse { found, value, ttl }))
    }

    async fn get_many(
        &self,
        request: Request<pb::CacheGetManyRequest>,
    ) -> Result<Response<pb::CacheGetManyResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::CacheGetManyRequest { keys } = request.into_inner();
        let results = self.cache.get_many(&ns, &keys).await?;
        Ok(Response::new(pb::CacheGetManyResponse { results: results.into_iter().map(lookup).collect() }))
    }

    async fn set(
        &self,
        request: Request<pb::CacheSetRequest>,
    ) -> Result<Response<pb::CacheSetResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::CacheSetRequest { key, value, ttl, ttl_jitter, condition: cond, tags, origin } =
            request.into_inner();
        let options = WriteOptions {
            ttl: duration_in("ttl", ttl)?,
            ttl_jitter: duration_in("ttl_jitter", ttl_jitter)?,
            tags,
            origin,
        };
        let stored = self.cache.set(&ns, key, value, condition(cond)?, &options).await?;
        Ok(Response::new(pb::CacheSetResponse { stored }))
    }

    async fn set_many(
        &self,
        request: Request<pb::CacheSetManyRequest>,
    ) -> Result<Response<pb::CacheSetManyResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::CacheSetManyRequest { entries, ttl, ttl_jitter, condition: cond, tags } =
            request.into_inner();
        let options = WriteOptions {
            ttl: duration_in("ttl", ttl)?,
            ttl_jitter: duration_in("ttl_jitter", ttl_jitter)?,
            tags,
            origin: 0,
        };
        let entries = entries
            .into_iter()
            .map(|pb::CacheEntry { key, value, ttl }| Ok((key, value, duration_in("entries.ttl", ttl)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let stored = self.cache.set_many(&ns, &entries, condition(cond)?, &options).await?;
        Ok(Response::new(pb::CacheSetManyResponse { stored }))
    }

    async fn delete(
        &self,
        request: Request<pb::CacheDeleteRequest>,
    ) -> Result<Response<pb::CacheDeleteResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::CacheDeleteRequest { keys } = request.into_inner();
        let deleted = self.cache.delete(&ns, &keys).await?;
        Ok(Response::new(pb::CacheDeleteResponse { deleted }))
    }

    async fn invalidate(
        &self,
        request: Request<pb::CacheInvalidateRequest>,
    ) -> Result<Response<pb::CacheInvalidateResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::CacheInvalidateRequest { target } = request.into_inner();
        let target = match target {
            Some(pb::cache_invalidate_request::Target::Tags(pb::CacheTags { tags })) => {
                InvalidateTarget::Tags(tags)
            }
            Some(pb::cache_invalidate_request::Target::Prefix(prefix)) => InvalidateTarget::Prefix(prefix),
            None => return Err(Status::invalid_argument("give either tags or prefix")),
        };
        let removed = self.cache.invalidate(&ns, &target).await?;
        Ok(Response::new(pb::CacheInvalidateResponse { removed }))
    }

    async fn fetch(
        &self,
        request: Request<pb::CacheFetchRequest>,
    ) -> Result<Response<pb::CacheFetchResponse>, Status> {
        let ns = namespace::of(&request)?;
        let deadline = grpc_timeout(request.metadata());
        let pb::CacheFetchRequest { key, wait, lease_ttl, refresh_ahead } = request.into_inner();
        let options = FetchOptions {
            wait: duration_in("wait", wait)?.filter(|w| !w.is_zero()),
            lease_ttl: duration_in("lease_ttl", lease_ttl)?,
            refresh_ahead: duration_in("refresh_ahead", refresh_ahead)?.filter(|w| !w.is_zero()),
            deadline,
        };
        let response = match self.cache.fetch(&ns, &key, &options).await? {
            FetchOutcome::Hit(Entry { value, ttl }) => pb::CacheFetchResponse {
                outcome: pb::CacheFetchOutcome::Hit.into(),
                value,
                ttl: ttl.map(duration_out),
                ..Default::default()
            },
            FetchOutcome::Refresh(Entry { value, ttl }, lease) => pb::CacheFetchResponse {
                outcome: pb::CacheFetchOutcome::Refresh.into(),
                value,
                ttl: ttl.map(duration_out),
                lease_token: lease.token,
                lease_ttl: Some(duration_out(lease.ttl)),
            },
            FetchOutcome::Fill(lease) => pb::CacheFetchResponse {
                outcome: pb::CacheFetchOutcome::Fill.into(),
                lease_token: lease.token,
                lease_ttl: Some(duration_out(lease.ttl)),
                ..Default::default()
            },
            FetchOutcome::WaitExpired => pb::CacheFetchResponse {
                outcome: pb::CacheFetchOutcome::WaitExpired.into(),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn fill(
        &self,
        request: Request<pb::CacheFillRequest>,
    ) -> Result<Response<pb::CacheFillResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::CacheFillRequest { key, lease_token, value, ttl, ttl_jitter, tags } = request.into_inner();
        let options = WriteOptions {
            ttl: duration_in("ttl", ttl)?,
            ttl_jitter: duration_in("ttl_jitter", ttl_jitter)?,
            tags,
            origin: 0,
        };
        self.cache.fill(&ns, &key, &lease_token, &value, &options).await?;
        Ok(Response::new(pb::CacheFillResponse {}))
    }

    async fn release_lease(
        &self,
        request: Request<pb::CacheReleaseLeaseRequest>,
    ) -> Result<Response<pb::CacheReleaseLeaseResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::CacheReleaseLeaseRequest { key, lease_token } = request.into_inner();
        let released = self.cache.release_lease(&ns, &key, &lease_token).await?;
        Ok(Response::new(pb::CacheReleaseLeaseResponse { released }))
    }

    type TrackStream = Pin<Box<dyn Stream<Item = Result<pb::CacheTrackResponse, Status>> + Send>>;

    async fn track(
        &self,
        request: Request<Streaming<pb::CacheTrackRequest>>,
    ) -> Result<Response<Self::TrackStream>, Status> {
        let ns = namespace::of(&request)?;
        let mut requests = request.into_inner();
        let watch = Arc::new(self.cache.near().watch(&ns).await?);
        // Track requests are applied as they come; an invalid one ends the call with its status
        // (through `refused`). The request side closing stops nothing: changes keep coming.
        let (refuse, refused) = tokio::sync::oneshot::channel::<Status>();
        let tracker = {
            let watch = Arc::downgrade(&watch);
            AbortOnDropHandle::new(tokio::spawn(async move {
                loop {
                    let pb::CacheTrackRequest { track, probe } = match requests.message().await {
                        Ok(Some(request)) => request,
                        Ok(None) => return,
                        Err(status) => {
                            let _ = refuse.send(crate::honest_codes::honest_request_error(status));
                            return;
                        }
                    };
                    let Some(watch) = watch.upgrade() else { return };
                    if let Err(e) = watch.track(&track) {
                        let _ = refuse.send(e.into());
                        return;
                    }
                    watch.probe(probe);
                }
            }))
        };
        let first = pb::CacheTrackResponse {
            bucket_count: BUCKETS,
            heartbeat_interval: Some(duration_out(self.cache.near().heartbeat_interval())),
            ..Default::default()
        };
        let state = Tracking { cache: self.cache.clone(), watch, refused, _tracker: tracker };
        let rest = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            let next = tokio::select! {
                changes = state.watch.next() => Ok(changes_out(changes)),
                Ok(status) = &mut state.refused => Err(status),
                () = state.cache.draining() => Err(Status::unavailable(SHUTDOWN_MESSAGE)),
            };
            match next {
                Ok(response) => Some((Ok(response), Some(state))),
                // The status ends the call: nothing after it.
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            futures::stream::once(async { Ok(first) }),
            rest,
        ))))
    }
}

/// A Track call's state: its watch, the request reader (stopped with the call) and how an
/// invalid request ends the call.
struct Tracking {
    cache: Arc<Cache>,
    watch: Arc<super::Watch>,
    refused: tokio::sync::oneshot::Receiver<Status>,
    _tracker: AbortOnDropHandle<()>,
}

fn changes_out(changes: Changes) -> pb::CacheTrackResponse {
    let Changes { gap, keys, origins, tracked, confirmed } = changes;
    pb::CacheTrackResponse {
        gap,
        keys,
        origins,
        tracked,
        confirmed: confirmed.unwrap_or(0),
        ..Default::default()
    }
}
