//! Graceful shutdown state shared by the server and the services.
//!
//! Two moments: *draining* (shutdown was asked: health says NOT_SERVING, no new calls, calls
//! that are only waiting — such as a `Fetch` waiting for someone else's fill — end at once with
//! UNAVAILABLE so the client retries on another replica) and *cut* (the drain timeout passed:
//! every call still running is answered UNAVAILABLE by [`CutLayer`], so a stuck call cannot
//! hold the exit).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::sync::watch;

/// The message of calls ended by shutdown.
pub const SHUTDOWN_MESSAGE: &str = "the server is shutting down; retry on another replica";

/// A handle on the shutdown state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Drain {
    draining: watch::Receiver<bool>,
    cut: watch::Receiver<bool>,
}

/// The side that moves the shutdown state forward.
#[derive(Debug)]
pub struct DrainControl {
    draining: watch::Sender<bool>,
    cut: watch::Sender<bool>,
}

/// A new shutdown state, with its control.
pub fn channel() -> (DrainControl, Drain) {
    let (draining_tx, draining) = watch::channel(false);
    let (cut_tx, cut) = watch::channel(false);
    (DrainControl { draining: draining_tx, cut: cut_tx }, Drain { draining, cut })
}

impl DrainControl {
    /// Starts draining.
    pub fn start_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Cuts every call still running.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drain {
    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves when draining starts (at once if it has).
    pub async fn draining(&self) {
        let mut draining = self.draining.clone();
        let _ = draining.wait_for(|d| *d).await;
    }

    /// Resolves when running calls are cut (at once if they were).
    pub async fn cut(&self) {
        let mut cut = self.cut.clone();
        let _ = cut.wait_for(|c| *c).await;
    }
}

/// Tower layer that answers UNAVAILABLE for every call still running when the drain timeout
/// passes.
#[derive(Debug, Clone)]
pub struct CutLayer {
    drain: Drain,
}

impl CutLayer {
    /// Cuts calls when `drain` says so.
    pub fn new(drain: Drain) -> Self {
        Self { drain }
    }
}

impl<S> tower::Layer<S> for CutLayer {
    type Service = Cut<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cut { inner, drain: self.drain.clone() }
    }
}

/// The service made by [`CutLayer`].
#[derive(Debug, Clone)]
pub struct Cut<S> {
    inner: S,
    drain: Drain,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Cut<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        let drain = self.drain.clone();
        Box::pin(async move {
            tokio::select! {
                response = response => response,
                () = drain.cut() => Ok(tonic::Status::unavailable(SHUTDOWN_MESSAGE).into_http()),
            }
        })
    }
}
