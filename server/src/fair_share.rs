//! A fair share of each replica per namespace, enforced in one tower layer.
//!
//! Many teams share one Rookery; a namespace that floods it must slow only itself. Each
//! namespace gets, on each replica (the bounds are per replica, not cluster-wide: replicas
//! share nothing but Redis, and a cluster-wide count would cost a Redis round trip per call):
//!
//! - a bound on unary calls in flight (`max_concurrent_calls`), counted from the request until
//!   its handler has answered;
//! - a bound on open server streams (`max_open_streams`: subscriptions, followers, consumers,
//!   lock holds, elections), counted until the stream's body is dropped;
//! - a bound on dedicated blocking Redis connections (`max_blocking_connections`), taken by
//!   Events followers and consumers through [`FairShare::blocking`]; a reader over it polls
//!   instead of waiting on Redis, so it is slower to see new entries but never fails;
//! - optionally a request rate (`requests_per_second` with a `burst`), a GCRA on the
//!   replica's monotonic clock.
//!
//! Over a share a call is answered RESOURCE_EXHAUSTED with a message naming the share and its
//! config field, before any of its work is done. The call's namespace is the one the auth layer
//! (`crate::auth::layer`) decided and put in the request's extensions.
//!
//! Per-namespace metrics carry a bounded label: the namespace's name when the config names it
//! (under `fair_share.namespaces`) or it is `default`, `other` for every other namespace.
//!
//! The table of namespaces in use is one mutex-guarded map: two short critical sections per
//! call (enter, leave), far cheaper than the call. An entry lives while the namespace has
//! calls, streams or connections, or a rate debt; idle entries are swept once the table grows,
//! so a caller inventing namespace names cannot grow it without bound.
//!
//! One room on purpose: the shares, their configuration, their metrics and the layer that
//! enforces them change together; the unit tests at the end make up much of the length.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::config::ConfigError;
use crate::namespace::{self, Namespace};

/// One namespace's share of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShareConfig {
    /// Most unary calls of the namespace in flight at once on one replica.
    pub max_concurrent_calls: u32,
    /// Most server streams of the namespace open at once on one replica.
    pub max_open_streams: u32,
    /// Most dedicated blocking Redis connections (Events followers and consumers waiting for
    /// new entries) the namespace holds at once on one replica.
    pub max_blocking_connections: u32,
    /// Sustained calls per second (unary calls and stream opens) the namespace may start on
    /// one replica; 0 means no rate bound.
    pub requests_per_second: u32,
    /// Calls beyond the sustained rate that may start at once after a quiet period.
    pub burst: u32,
}

impl Default for ShareConfig {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 1024,
            max_open_streams: 10_000,
            max_blocking_connections: 64,
            requests_per_second: 0,
            burst: 0,
        }
    }
}

/// A namespace's overrides of the default share; fields left out keep the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShareOverride {
    /// See [`ShareConfig::max_concurrent_calls`].
    pub max_concurrent_calls: Option<u32>,
    /// See [`ShareConfig::max_open_streams`].
    pub max_open_streams: Option<u32>,
    /// See [`ShareConfig::max_blocking_connections`].
    pub max_blocking_connections: Option<u32>,
    /// See [`ShareConfig::requests_per_second`].
    pub requests_per_second: Option<u32>,
    /// See [`ShareConfig::burst`].
    pub burst: Option<u32>,
}

impl ShareOverride {
    fn over(&self, base: ShareConfig) -> ShareConfig {
        ShareConfig {
            max_concurrent_calls: self.max_concurrent_calls.unwrap_or(base.max_concurrent_calls),
            max_open_streams: self.max_open_streams.unwrap_or(base.max_open_streams),
            max_blocking_connections: self.max_blocking_connections.unwrap_or(base.max_blocking_connections),
            requests_per_second: self.requests_per_second.unwrap_or(base.requests_per_second),
            burst: self.burst.unwrap_or(base.burst),
        }
    }
}

/// The `[fair_share]` section of the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FairShareConfig {
    /// Whether shares are counted and enforced; off, the layer only resolves each call's
    /// namespace (no per-namespace metrics either).
    pub enabled: bool,
    /// The share of every namespace not named below.
    pub default: ShareConfig,
    /// Per-namespace overrides, by namespace name.
    pub namespaces: BTreeMap<String, ShareOverride>,
}

impl Default for FairShareConfig {
    fn default() -> Self {
        Self { enabled: true, default: ShareConfig::default(), namespaces: BTreeMap::new() }
    }
}

impl FairShareConfig {
    /// The share of `namespace`.
    pub fn share_of(&self, namespace: &str) -> ShareConfig {
        self.namespaces.get(namespace).map_or(self.default, |o| o.over(self.default))
    }

    /// Checks every share; the error names the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, message: String| ConfigError::Invalid { field, message };
        for name in self.namespaces.keys() {
            Namespace::new(name).map_err(|e| invalid("fair_share.namespaces", format!("{name:?}: {e}")))?;
        }
        let shares = std::iter::once(("default".to_owned(), self.default))
            .chain(self.namespaces.keys().map(|name| (name.clone(), self.share_of(name))));
        for (name, share) in shares {
            if share.max_concurrent_calls == 0 {
                return Err(invalid(
                    "fair_share.max_concurrent_calls",
                    format!("{name}: must be at least 1"),
                ));
            }
            if share.max_open_streams == 0 {
                return Err(invalid("fair_share.max_open_streams", format!("{name}: must be at least 1")));
            }
            if share.requests_per_second == 0 && share.burst != 0 {
                return Err(invalid(
                    "fair_share.burst",
                    format!("{name}: a burst needs requests_per_second above 0"),
                ));
            }
        }
        Ok(())
    }
}

/// Which share a refused call ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Calls = 0,
    Streams = 1,
    Blocking = 2,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Streams => "streams",
            Self::Blocking => "blocking_connections",
        }
    }

    fn gauge(self) -> &'static str {
        match self {
            Self::Calls => "rookery_namespace_calls_in_flight",
            Self::Streams => "rookery_namespace_open_streams",
            Self::Blocking => "rookery_namespace_blocking_connections",
        }
    }
}

/// What one namespace uses right now on this replica.
#[derive(Debug, Default)]
struct Usage {
    calls: u32,
    streams: u32,
    blocking: u32,
    /// GCRA's theoretical arrival time: the rate bound is met while it is at most `burst`
    /// intervals ahead of now.
    rate_debt_until: Option<Instant>,
}

impl Usage {
    fn count(&mut self, kind: Kind) -> &mut u32 {
        match kind {
            Kind::Calls => &mut self.calls,
            Kind::Streams => &mut self.streams,
            Kind::Blocking => &mut self.blocking,
        }
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.calls == 0
            && self.streams == 0
            && self.blocking == 0
            && self.rate_debt_until.is_none_or(|t| t <= now)
    }
}

/// The metric label of every namespace the config does not name.
const OTHER_LABEL: &str = "other";

/// Entries in the table past which idle ones are first swept.
const SWEEP_AT: usize = 1024;

/// The per-namespace accounting of one replica; cheap to share.
#[derive(Debug)]
pub struct FairShare {
    config: FairShareConfig,
    /// The gauges (calls, streams, blocking connections) of every metric label, registered
    /// once: the label set is known at start-up, and a gauge handle updates without a lookup.
    gauges: HashMap<String, [metrics::Gauge; 3]>,
    table: Mutex<HashMap<Namespace, Usage>>,
    /// The table's size that triggers the next sweep of idle entries.
    sweep_at: std::sync::atomic::AtomicUsize,
}

impl FairShare {
    /// Accounting under `config`.
    pub fn new(config: FairShareConfig) -> Arc<Self> {
        let labels = config
            .namespaces
            .keys()
            .map(String::as_str)
            .chain([namespace::DEFAULT_NAMESPACE, OTHER_LABEL])
            .map(|label| {
                let gauge = |kind: Kind| metrics::gauge!(kind.gauge(), "namespace" => label.to_owned());
                (label.to_owned(), [gauge(Kind::Calls), gauge(Kind::Streams), gauge(Kind::Blocking)])
            })
            .collect();
        Arc::new(Self {
            config,
            gauges: labels,
            table: Mutex::new(HashMap::new()),
            sweep_at: std::sync::atomic::AtomicUsize::new(SWEEP_AT),
        })
    }

    /// The bounded metric label of `ns`.
    fn label<'a>(&self, ns: &'a Namespace) -> &'a str {
        if self.gauges.contains_key(ns.as_str()) { ns.as_str() } else { OTHER_LABEL }
    }

    /// The gauge counting `ns`'s use of `kind`.
    fn gauge(&self, ns: &Namespace, kind: Kind) -> &metrics::Gauge {
        let gauges = self.gauges.get(ns.as_str()).or_else(|| self.gauges.get(OTHER_LABEL));
        &gauges.expect("the other label is always registered")[kind as usize]
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Namespace, Usage>> {
        // A panic while holding the lock cannot leave the counts half-updated (each update is
        // one increment or decrement), so a poisoned table is still right.
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one unit of `kind` (and, for calls and streams, one request of the rate) for
    /// `ns`, or says which share is used up.
    fn enter(self: &Arc<Self>, ns: &Namespace, kind: Kind) -> Result<ShareGuard, Refusal> {
        if !self.config.enabled {
            return Ok(ShareGuard { held: None });
        }
        let share = self.config.share_of(ns.as_str());
        let limit = match kind {
            Kind::Calls => share.max_concurrent_calls,
            Kind::Streams => share.max_open_streams,
            Kind::Blocking => share.max_blocking_connections,
        };
        let now = Instant::now();
        let sweep_at = self.sweep_at.load(std::sync::atomic::Ordering::Relaxed);
        {
            let mut table = self.table();
            if table.len() >= sweep_at && !table.contains_key(ns) {
                table.retain(|_, usage| !usage.is_idle(now));
                // Sweep again only once the table has doubled: busy namespaces stay, and a
                // sweep per call would cost every call the whole table.
                self.sweep_at.store((table.len() * 2).max(SWEEP_AT), std::sync::atomic::Ordering::Relaxed);
            }
            let usage = table.entry(ns.clone()).or_default();
            if *usage.count(kind) >= limit {
                drop(table);
                return Err(self.refuse(ns, kind, limit, None));
            }
            if kind != Kind::Blocking && share.requests_per_second > 0 {
                let interval = Duration::from_secs(1) / share.requests_per_second;
                let tolerance = interval * share.burst;
                let due = usage.rate_debt_until.map_or(now, |t| t.max(now));
                if due > now + tolerance {
                    let wait = due - now - tolerance;
                    drop(table);
                    return Err(self.refuse(ns, kind, share.requests_per_second, Some(wait)));
                }
                usage.rate_debt_until = Some(due + interval);
            }
            *usage.count(kind) += 1;
        }
        self.gauge(ns, kind).increment(1.0);
        Ok(ShareGuard { held: Some((self.clone(), ns.clone(), kind)) })
    }

    fn refuse(&self, ns: &Namespace, kind: Kind, limit: u32, rate_wait: Option<Duration>) -> Refusal {
        let share = if rate_wait.is_some() { "rate" } else { kind.label() };
        metrics::counter!("rookery_namespace_refused_total", "namespace" => self.label(ns).to_owned(), "share" => share)
            .increment(1);
        let ns = ns.as_str();
        let message = match (rate_wait, kind) {
            (Some(wait), _) => format!(
                "namespace {ns:?} is over its request rate on this replica ({limit}/s, \
                 fair_share.requests_per_second); retry after {}ms",
                wait.as_millis().max(1)
            ),
            (None, Kind::Calls) => format!(
                "namespace {ns:?} has {limit} calls in flight on this replica, its share \
                 (fair_share.max_concurrent_calls); retry with backoff or ask for a larger share"
            ),
            (None, Kind::Streams) => format!(
                "namespace {ns:?} has {limit} streams open on this replica, its share \
                 (fair_share.max_open_streams); close streams it no longer reads or ask for a larger share"
            ),
            (None, Kind::Blocking) => format!(
                "namespace {ns:?} holds {limit} blocking Redis connections on this replica, its share \
                 (fair_share.max_blocking_connections)"
            ),
        };
        Refusal(message)
    }

    fn leave(&self, ns: &Namespace, kind: Kind) {
        {
            let mut table = self.table();
            if let Some(usage) = table.get_mut(ns) {
                let count = usage.count(kind);
                *count = count.saturating_sub(1);
                if usage.is_idle(Instant::now()) {
                    table.remove(ns);
                }
            }
        }
        self.gauge(ns, kind).decrement(1.0);
    }

    /// Takes one of `ns`'s dedicated blocking connections, or `None` when its share is used
    /// up (the caller then polls instead of blocking on Redis). Hold the guard while the
    /// connection is held.
    pub fn blocking(self: &Arc<Self>, ns: &Namespace) -> Option<ShareGuard> {
        self.enter(ns, Kind::Blocking).ok()
    }

    /// Takes one of `ns`'s calls in flight (and one request of its rate) for work that arrives
    /// inside a call, as each append of `Events.AppendStream` does; or says, as a refused call
    /// would be told, which share is used up. Hold the guard until the work is answered.
    pub fn call(self: &Arc<Self>, ns: &Namespace) -> Result<ShareGuard, String> {
        self.enter(ns, Kind::Calls).map_err(|Refusal(message)| message)
    }

    /// What `ns` uses right now on this replica: (unary calls in flight, open streams,
    /// blocking connections). For tests and diagnostics.
    pub fn usage(&self, ns: &Namespace) -> (u32, u32, u32) {
        self.table().get(ns).map_or((0, 0, 0), |u| (u.calls, u.streams, u.blocking))
    }
}

/// Why a call was refused: the message, naming the share.
#[derive(Debug)]
struct Refusal(String);

/// One unit of a namespace's share, given back when dropped (nothing, with shares off).
#[derive(Debug)]
pub struct ShareGuard {
    held: Option<(Arc<FairShare>, Namespace, Kind)>,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        if let Some((shares, ns, kind)) = &self.held {
            shares.leave(ns, *kind);
        }
    }
}

/// The gRPC paths of every server-streaming RPC the server serves, read once from the API's
/// file descriptor set (so a new streaming RPC needs no edit here).
fn streaming_paths() -> &'static HashSet<String> {
    static PATHS: OnceLock<HashSet<String>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let set: prost_types::FileDescriptorSet =
            prost::Message::decode(rookery::FILE_DESCRIPTOR_SET).expect("the API's descriptor set decodes");
        let mut paths = HashSet::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    if method.server_streaming() || method.client_streaming() {
                        paths.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                    }
                }
            }
        }
        paths
    })
}

/// Services that serve no namespace's data (health probes, reflection): outside every share,
/// so a busy namespace can never make a replica look dead to its orchestrator.
fn is_shared_infrastructure(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

/// Tower layer resolving each call's namespace and enforcing its [`FairShare`].
#[derive(Debug, Clone)]
pub struct FairShareLayer {
    shares: Arc<FairShare>,
}

impl FairShareLayer {
    /// Enforces `shares`.
    pub fn new(shares: Arc<FairShare>) -> Self {
        Self { shares }
    }
}

impl<S> tower::Layer<S> for FairShareLayer {
    type Service = FairShareService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FairShareService { inner, shares: self.shares.clone() }
    }
}

/// The service made by [`FairShareLayer`].
#[derive(Debug, Clone)]
pub struct FairShareService<S> {
    inner: S,
    shares: Arc<FairShare>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for FairShareService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if is_shared_infrastructure(path) {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(tonic::body::Body::new)) });
        }
        let kind = if streaming_paths().contains(path) { Kind::Streams } else { Kind::Calls };
        // The auth layer has decided the namespace; the header is read only where that layer
        // is absent (unit tests of this layer).
        let namespace = match request.extensions().get::<Namespace>() {
            Some(ns) => Ok(ns.clone()),
            None => namespace::resolve(request.headers()),
        };
        let guard = namespace
            .and_then(|ns| {
                let guard =
                    self.shares.enter(&ns, kind).map_err(|Refusal(m)| Status::resource_exhausted(m))?;
                request.extensions_mut().insert(ns);
                Ok(guard)
            })
            .map_err(Status::into_http);
        let guard = match guard {
            Ok(guard) => guard,
            Err(refused) => return Box::pin(async move { Ok(refused) }),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if kind == Kind::Calls {
                // A unary call's work is done once its handler has answered: the share is
                // given back here, and the answer's body is passed on as it is.
                drop(guard);
                return Ok(response.map(tonic::body::Body::new));
            }
            Ok(response.map(|body| tonic::body::Body::new(Guarded { body, _guard: guard })))
        })
    }
}

/// A response body holding a share until the body is finished or dropped (a stream's body
/// lives as long as the stream).
struct Guarded<B> {
    body: B,
    _guard: ShareGuard,
}

impl<B: http_body::Body + Unpin> http_body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Namespace {
        Namespace::new(name).unwrap()
    }

    #[test]
    fn streaming_rpcs_are_found_in_the_descriptor() {
        let paths = streaming_paths();
        assert!(paths.contains("/rookery.v1.Events/Subscribe"), "{paths:?}");
        assert!(paths.contains("/rookery.v1.Lock/Hold"), "{paths:?}");
        assert!(!paths.contains("/rookery.v1.Cache/Get"));
    }

    #[test]
    fn each_share_is_counted_per_namespace_and_given_back() {
        let mut config = FairShareConfig::default();
        config.default.max_concurrent_calls = 2;
        config
            .namespaces
            .insert("big".into(), ShareOverride { max_concurrent_calls: Some(3), ..Default::default() });
        let shares = FairShare::new(config);
        let a = ns("a");
        let held: Vec<_> = (0..2).map(|_| shares.enter(&a, Kind::Calls).unwrap()).collect();
        let refused = shares.enter(&a, Kind::Calls).unwrap_err();
        assert!(refused.0.contains("fair_share.max_concurrent_calls"), "{}", refused.0);
        // Another namespace is unaffected, and an override applies to its namespace alone.
        let big = ns("big");
        let big_held: Vec<_> = (0..3).map(|_| shares.enter(&big, Kind::Calls).unwrap()).collect();
        assert!(shares.enter(&big, Kind::Calls).is_err());
        assert_eq!(shares.usage(&a), (2, 0, 0));
        drop(held);
        assert_eq!(shares.usage(&a), (0, 0, 0));
        assert!(shares.enter(&a, Kind::Calls).is_ok());
        drop(big_held);
        assert!(shares.table().is_empty(), "idle namespaces leave the table");
    }

    #[test]
    fn the_rate_admits_the_burst_then_the_sustained_rate() {
        let mut config = FairShareConfig::default();
        config.default.requests_per_second = 10;
        config.default.burst = 4;
        let shares = FairShare::new(config);
        let a = ns("a");
        // 1 + burst at once, then refused with the time to wait.
        for _ in 0..5 {
            drop(shares.enter(&a, Kind::Calls).unwrap());
        }
        let refused = shares.enter(&a, Kind::Streams).unwrap_err();
        assert!(refused.0.contains("fair_share.requests_per_second"), "{}", refused.0);
        // The rate debt keeps the entry until it is paid.
        assert_eq!(shares.table().len(), 1);
        assert!(shares.enter(&ns("b"), Kind::Calls).is_ok());
    }

    #[test]
    fn disabled_shares_neither_count_nor_refuse() {
        let mut config = FairShareConfig { enabled: false, ..Default::default() };
        config.default.max_concurrent_calls = 1;
        let shares = FairShare::new(config);
        let a = ns("a");
        let _one = shares.enter(&a, Kind::Calls).unwrap();
        let _two = shares.enter(&a, Kind::Calls).unwrap();
        assert_eq!(shares.usage(&a), (0, 0, 0));
        assert!(shares.table().is_empty());
    }

    #[test]
    fn labels_are_bounded() {
        let mut config = FairShareConfig::default();
        config.namespaces.insert("team-a".into(), ShareOverride::default());
        let shares = FairShare::new(config);
        assert_eq!(shares.label(&ns("team-a")), "team-a");
        assert_eq!(shares.label(&ns("default")), "default");
        assert_eq!(shares.label(&ns("x1")), "other");
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let mut config = FairShareConfig::default();
        config.namespaces.insert("a:b".into(), ShareOverride::default());
        assert!(config.validate().unwrap_err().to_string().contains("fair_share.namespaces"));
        let mut config = FairShareConfig::default();
        config
            .namespaces
            .insert("a".into(), ShareOverride { max_open_streams: Some(0), ..Default::default() });
        assert!(config.validate().unwrap_err().to_string().contains("fair_share.max_open_streams"));
        FairShareConfig::default().validate().unwrap();
    }
}
