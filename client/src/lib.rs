//! Rust client for Rookery, the gRPC coordination service.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! let client = rookery_client::Client::connect("http://127.0.0.1:50051")
//!     .await?
//!     .with_namespace("my-team")?;
//! let cache = client.cache();
//! cache.set("greeting", b"hello".to_vec(), Duration::from_secs(60)).await?;
//! let user = cache
//!     .get_or_load("user:42", Duration::from_secs(300), || async {
//!         // Runs once per key across all callers and server replicas; the others wait for
//!         // its value instead of stampeding the database.
//!         Ok::<_, std::io::Error>(b"{\"name\":\"Ada\"}".to_vec())
//!     })
//!     .await?;
//! # let _ = user;
//!
//! // A lock held (and renewed) while the closure runs; the fencing token goes with every
//! // write to the protected resource, so a holder that paused past its lease is refused.
//! let options = rookery_client::LockOptions::new(Duration::from_secs(10)).wait(Duration::from_secs(30));
//! let written = client
//!     .lock()
//!     .with_lock("nightly-report", &options, |context| async move {
//!         if context.is_held() { Some(context.fence()) } else { None }
//!     })
//!     .await?;
//! # let _ = written;
//! # Ok(())
//! # }
//! ```
//!
//! The generated stubs and messages are re-exported as [`pb`] for anyone who needs a call the
//! ergonomic API does not wrap.

mod cache;
mod connect;
mod convert;
mod events;
mod lock;
mod near;
mod pipelined;
mod rate_limiter;
mod session;

/// The byte buffer of pub/sub payloads and near-cache values.
pub use bytes::Bytes;
pub use cache::{
    CacheClient, Entry, FetchOptions, Fetched, GetOrLoadError, LoadOptions, SetCondition, SetOptions,
};
pub use connect::{CallInterceptor, ConnectOptions, TokenSource};
pub use events::{
    Acker, AppendOptions, ConsumeOptions, Consumer, ConsumerSettings, Deliveries, Delivery, EntryStream,
    Event, EventStream, EventsClient, GapReason, GroupSettings, NewEntry, StreamEntry,
};
pub use lock::{
    CampaignEvent, CampaignStream, HeldLock, Leader, LeaderStream, Lease, LockClient, LockContext, LockLost,
    LockOptions, WithLockError,
};
pub use near::{NearCache, NearOptions, NearStats};
pub use pipelined::{Appender, Publisher};
pub use rate_limiter::{Algorithm, Decision, RateLimit, RateLimitCheck, RateLimiterClient, WhenUnavailable};
/// The generated `rookery.v1` messages and client stubs.
pub use rookery::v1 as pb;
pub use session::{
    CreatedSession, Session, SessionClient, SessionOptions, SessionSummary, SessionUpdate, json_attributes,
    session_hint,
};

#[cfg(feature = "cli")]
pub mod bench;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The metadata header that selects the namespace (tenant) of a call.
pub const NAMESPACE_HEADER: &str = "x-rookery-namespace";

/// Errors of connecting and configuring a [`Client`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is malformed or the server cannot be reached.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL that was asked for.
        url: String,
        /// The transport's reason.
        source: tonic::transport::Error,
    },
    /// The host name could not be resolved.
    #[error("cannot resolve {url}: {source}")]
    Resolve {
        /// The URL that was asked for.
        url: String,
        /// The resolver's reason.
        source: std::io::Error,
    },
    /// The namespace is not a valid header value.
    #[error("invalid namespace {0:?}: use letters, digits, '.', '_' and '-'")]
    Namespace(String),
    /// The bearer token could not be read or is not a valid header value.
    #[error("bearer token: {0}")]
    Token(String),
}

/// The channel type every service client of this crate uses.
pub type ClientChannel = InterceptedService<Channel, CallInterceptor>;

/// A connection to a Rookery server (one HTTP/2 connection, multiplexing every call). Cheap to
/// clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    interceptor: CallInterceptor,
}

impl Client {
    /// Connects to `url` (e.g. `http://127.0.0.1:50051`; `https://` uses TLS with the
    /// system's roots).
    pub async fn connect(url: impl Into<String>) -> Result<Self, Error> {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    /// Connects to `url` with TLS settings and a bearer token:
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let options = rookery_client::ConnectOptions::new()
    ///     .ca_certificate(std::fs::read("/etc/rookery/ca.crt")?)
    ///     .token_file("/var/run/secrets/tokens/rookery", Duration::from_secs(60));
    /// let client = rookery_client::Client::connect_with("https://rookery.team-a.svc:50051", &options)
    ///     .await?
    ///     .with_namespace("team-a")?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(url: impl Into<String>, options: &ConnectOptions) -> Result<Self, Error> {
        let url = url.into();
        let connect_error = |source| Error::Connect { url: url.clone(), source };
        let mut endpoint = Endpoint::from_shared(url.clone()).map_err(connect_error)?.tcp_nodelay(true);
        if url.starts_with("https://") {
            endpoint = endpoint.tls_config(options.tls()).map_err(connect_error)?;
        }
        let token = options.token_cell()?;
        let channel = endpoint.connect().await.map_err(connect_error)?;
        let mut client = Self::from_channel(channel);
        client.interceptor.token = token;
        Ok(client)
    }

    /// Connects to every address `host` resolves to, balancing calls over them, and follows the
    /// DNS answer as it changes (re-resolved every `refresh`). Point it at a Kubernetes headless
    /// Service (`rookery-headless.<namespace>.svc`): its name resolves to every ready pod, so
    /// calls spread over all replicas, where one connection through a plain Service would pin
    /// every call to one pod. The refresh task stops when the last clone of the client is
    /// dropped.
    pub async fn connect_balanced(
        host: &str,
        port: u16,
        refresh: std::time::Duration,
    ) -> Result<Self, Error> {
        Self::connect_balanced_with(&format!("http://{host}:{port}"), refresh, &ConnectOptions::default())
            .await
    }

    /// [`connect_balanced`](Self::connect_balanced) with TLS settings and a bearer token:
    /// `url` is `https://host:port` (or `http://`); each replica's certificate must name `host`
    /// (or the options' TLS domain).
    pub async fn connect_balanced_with(
        url: &str,
        refresh: std::time::Duration,
        options: &ConnectOptions,
    ) -> Result<Self, Error> {
        use std::collections::HashSet;
        use std::net::SocketAddr;
        use tonic::transport::channel::Change;

        let connect_error = |source| Error::Connect { url: url.to_owned(), source };
        let parsed = Endpoint::from_shared(url.to_owned()).map_err(connect_error)?;
        let (tls, host, port) = {
            let uri = parsed.uri();
            let tls = uri.scheme_str() == Some("https");
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_owned();
            (tls, host, uri.port_u16().unwrap_or(if tls { 443 } else { 80 }))
        };
        let tls_config = tls.then(|| options.tls_for_host(&host));
        let resolve = {
            let target = format!("{host}:{port}");
            move || {
                let target = target.clone();
                async move {
                    tokio::net::lookup_host(target).await.map(|addrs| addrs.collect::<HashSet<SocketAddr>>())
                }
            }
        };
        let first = resolve().await.map_err(|e| Error::Resolve { url: url.to_owned(), source: e })?;
        let token = options.token_cell()?;
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
        let endpoint = move |addr: SocketAddr| {
            let scheme = if tls_config.is_some() { "https" } else { "http" };
            let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?.tcp_nodelay(true);
            match &tls_config {
                Some(tls) => endpoint.tls_config(tls.clone()),
                None => Ok(endpoint),
            }
        };
        for addr in &first {
            let endpoint = endpoint(*addr).map_err(connect_error)?;
            let _ = changes.send(Change::Insert(*addr, endpoint)).await;
        }
        tokio::spawn(async move {
            let mut known = first;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(refresh) => {}
                    // Every clone of the channel is gone.
                    () = changes.closed() => return,
                }
                // A failed lookup keeps the known addresses.
                let Ok(now) = resolve().await else { continue };
                for gone in known.difference(&now) {
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for new in now.difference(&known) {
                    if let Ok(endpoint) = endpoint(*new)
                        && changes.send(Change::Insert(*new, endpoint)).await.is_err()
                    {
                        return;
                    }
                }
                known = now;
            }
        });
        let mut client = Self::from_channel(channel);
        client.interceptor.token = token;
        Ok(client)
    }

    /// Uses an existing channel (for custom TLS, load balancing or timeouts).
    pub fn from_channel(channel: Channel) -> Self {
        Self { channel, interceptor: CallInterceptor::default() }
    }

    /// The same connection, with every call in `namespace` (the server's default namespace is
    /// `default`).
    pub fn with_namespace(mut self, namespace: &str) -> Result<Self, Error> {
        let value =
            namespace.parse::<MetadataValue<Ascii>>().map_err(|_| Error::Namespace(namespace.to_owned()))?;
        self.interceptor.namespace = Some(value);
        Ok(self)
    }

    /// The Cache service.
    pub fn cache(&self) -> CacheClient {
        CacheClient::new(self.intercepted())
    }

    /// The Events service.
    pub fn events(&self) -> EventsClient {
        EventsClient::new(self.intercepted())
    }

    /// The Lock service.
    pub fn lock(&self) -> LockClient {
        LockClient::new(self.intercepted())
    }

    /// The RateLimiter service.
    pub fn rate_limiter(&self) -> RateLimiterClient {
        RateLimiterClient::new(self.intercepted())
    }

    /// The Session service.
    pub fn session(&self) -> SessionClient {
        SessionClient::new(self.intercepted())
    }

    /// The underlying channel, for the raw stubs in [`pb`].
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The underlying channel with this client's namespace and token on every call, for
    /// stubs this crate does not wrap (reflection, health, Envoy's rate limit service).
    pub fn intercepted_channel(&self) -> ClientChannel {
        InterceptedService::new(self.channel.clone(), self.interceptor.clone())
    }

    fn intercepted(&self) -> ClientChannel {
        self.intercepted_channel()
    }
}
