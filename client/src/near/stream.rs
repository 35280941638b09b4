//! The near cache's invalidation stream (`Cache.Track`): one task per near cache keeps it
//! open, reconnecting with backoff, installs each connection's [`Link`] and applies what the
//! server sends, probing again as each probe is confirmed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Status;

use super::coherence::{Link, Shared};
use crate::cache::CacheClient;

/// Reconnection backoff bounds of the invalidation stream.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Keeps the invalidation stream open, reconnecting with backoff, for as long as `shared` has
/// handles.
pub(super) async fn follow(client: CacheClient, shared: std::sync::Weak<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let result = follow_once(&client, &shared).await;
        let Some(state) = shared.upgrade() else { return };
        state.unlink();
        drop(state);
        if result.is_ok() {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection of the stream, until it ends.
async fn follow_once(client: &CacheClient, shared: &std::sync::Weak<Shared>) -> Result<(), Status> {
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let mut stream = client
        .raw()
        .track(tokio_stream::wrappers::UnboundedReceiverStream::new(requests_rx))
        .await?
        .into_inner();
    let first = stream.message().await?.ok_or_else(|| Status::unavailable("the stream ended at once"))?;
    let bucket_count = first.bucket_count;
    if bucket_count == 0 {
        return Err(Status::internal("the server announced no buckets"));
    }
    let link = Arc::new(Link::new(bucket_count, requests));
    {
        let Some(state) = shared.upgrade() else { return Ok(()) };
        *state.link.write().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
        state.probe(&link);
    }
    while let Some(message) = stream.message().await? {
        let Some(state) = shared.upgrade() else { return Ok(()) };
        // One probe at a time: the next leaves when one is confirmed, so the newest
        // confirmation is at most about a heartbeat interval and a round trip old.
        if state.apply(&link, message) {
            state.probe(&link);
        }
    }
    Err(Status::unavailable("the invalidation stream ended"))
}

/// The stream task's handle: the task ends when the last near-cache handle is dropped.
#[derive(Debug)]
pub(super) struct Follower(pub(super) JoinHandle<()>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}
