//! The Rookery server as a library: [`serve`] builds the Redis backends, the services, the
//! layers, health and reflection, and runs them until shutdown.
//!
//! The binary (`main.rs`) only turns flags into a [`Config`] and calls [`serve`]; the tests call
//! [`serve`] in-process on `127.0.0.1:0`.
//!
//! Module map: `config` (the one Config struct), `error` (the domain error and its one mapping
//! to gRPC codes), `tls` (the listener's transport, certificates reloaded), `auth` (identity,
//! grants, the one table of RPC classes, one tower layer), `reload` (files followed while the
//! server runs), `namespace` (tenant of each request), `fair_share` (each namespace's share of
//! a replica, one tower layer), `honest_codes` (tonic's own rejections mapped to the table),
//! `redis` (connections, keys, scripts, pub/sub), `telemetry` (logs, metrics, the per-RPC
//! layer, traces exported over OTLP), and one folder per service.

pub mod auth;
pub mod cache;
pub mod config;
mod convert;
pub mod drain;
pub mod error;
pub mod events;
pub mod fair_share;
mod honest_codes;
pub mod lock;
pub mod namespace;
pub mod rate_limiter;
pub mod redis;
pub mod reload;
pub mod session;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use rookery::v1::cache_server::CacheServer;
use rookery::v1::events_server::EventsServer;
use rookery::v1::lock_server::LockServer;
use rookery::v1::rate_limiter_server::RateLimiterServer;
use rookery::v1::session_server::SessionServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::Auth;
use crate::auth::layer::AuthLayer;
use crate::cache::{Cache, CacheApi};
pub use crate::config::Config;
use crate::drain::CutLayer;
use crate::events::{Events, EventsApi};
use crate::fair_share::{FairShare, FairShareLayer};
use crate::honest_codes::honest_codes;
use crate::lock::{LockApi, Locks};
use crate::rate_limiter::envoy::EnvoyRateLimitApi;
use crate::rate_limiter::{RateLimiter, RateLimiterApi};
use crate::redis::{RedisPool, RedisRole, StartupError};
use crate::session::{SessionApi, Sessions};
use crate::telemetry::RpcMetricsLayer;

/// The gRPC name of the Cache service, as used by grpc.health.v1.
pub const CACHE_SERVICE_NAME: &str = "rookery.v1.Cache";
/// The gRPC name of the Lock service, as used by grpc.health.v1.
pub const LOCK_SERVICE_NAME: &str = "rookery.v1.Lock";
/// The gRPC name of the Session service, as used by grpc.health.v1.
pub const SESSION_SERVICE_NAME: &str = "rookery.v1.Session";
/// The gRPC name of the RateLimiter service, as used by grpc.health.v1.
pub const RATE_LIMITER_SERVICE_NAME: &str = "rookery.v1.RateLimiter";
/// The gRPC name of the Events service, as used by grpc.health.v1.
pub const EVENTS_SERVICE_NAME: &str = "rookery.v1.Events";
/// The gRPC name of Envoy's rate limit service, as used by grpc.health.v1.
pub const ENVOY_RATE_LIMIT_SERVICE_NAME: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// The encoded descriptors of Envoy's rate limit service and its imports (`server/build.rs`).
const ENVOY_RATE_LIMIT_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_rls_descriptor.bin"));
/// A grpc.health.v1 name that is SERVING for as long as the process serves gRPC, whatever
/// Redis does: for liveness probes (a Redis outage is no reason to restart the server).
pub const LIVENESS_SERVICE_NAME: &str = "liveness";
/// How often health follows Redis reachability.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A Redis the server needs is unusable.
    #[error(transparent)]
    Redis(#[from] StartupError),
    /// A listener could not be bound or served.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A TLS certificate, key, CA, token file or JWKS could not be loaded.
    #[error("{0}")]
    Credentials(String),
    /// The OTLP exporter could not be built.
    #[error("{0}")]
    Telemetry(String),
}

/// The server's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC listener.
    pub grpc: TcpListener,
    /// The admin HTTP listener (`/metrics`, `/healthz`).
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds `config.listen` and `config.admin_listen`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind(config.listen).await?,
            admin: TcpListener::bind(config.admin_listen).await?,
        })
    }

    /// The bound gRPC address (useful with port 0).
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The bound admin address (useful with port 0).
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

/// Runs the server on `listeners` until `shutdown` resolves, then drains: health turns
/// NOT_SERVING (calls are still accepted for `shutdown.pre_drain_delay`), then new calls are
/// refused, in-flight calls get `shutdown.drain_timeout` to finish, and whatever is still
/// running after that is cut.
///
/// Fails before serving if the config is invalid, Redis stays unreachable for
/// `redis.startup_timeout`, or the coordination Redis may evict keys (see
/// `redis.allow_eviction`).
pub async fn serve(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate()?;
    // The metrics recorder must exist before anything records (connection gauges included).
    telemetry::prometheus();
    // Credentials first: a bad certificate or JWKS should stop the server before it waits on Redis.
    let (auth, mut reload_tasks) = Auth::start(&config.auth).map_err(ServeError::Credentials)?;
    let mut start_tls = |protocols| -> Result<_, ServeError> {
        let Some(tls_config) = &config.tls else { return Ok(None) };
        if protocols == tls::Protocols::Admin && !tls_config.admin {
            return Ok(None);
        }
        let (tls, task) = tls::Tls::start(tls_config, protocols).map_err(ServeError::Credentials)?;
        reload_tasks.push(task);
        Ok(Some(tls))
    };
    let tls = start_tls(tls::Protocols::Grpc)?;
    let admin_tls = start_tls(tls::Protocols::Admin)?;
    if auth.enabled() && tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!("auth is on without TLS: bearer tokens cross the network in plaintext");
    }
    // Before Redis: a start-up that waits on Redis is worth a trace too, and a bad endpoint
    // should stop the server early.
    let export = match &config.telemetry.otlp {
        Some(otlp) => Some(telemetry::otel::start(otlp).map_err(ServeError::Telemetry)?),
        None => None,
    };
    let coordination =
        Arc::new(RedisPool::connect(&config.redis.url, &config.redis, RedisRole::Coordination).await?);
    coordination.check_no_eviction(config.redis.allow_eviction).await?;
    // Warns only: whether Redis frees large values in the background is its operator's call.
    coordination.check_lazy_free().await;
    let cache_redis = match &config.redis.cache_url {
        Some(url) => {
            let pool = Arc::new(RedisPool::connect(url, &config.redis, RedisRole::Cache).await?);
            pool.check_lazy_free().await;
            pool
        }
        None => coordination.clone(),
    };
    let (drain_control, drain) = drain::channel();
    let shares = FairShare::new(config.fair_share.clone());
    let cache = Arc::new(
        Cache::start(
            cache_redis,
            config.limits.clone(),
            config.cache.clone(),
            drain.clone(),
            config.redis.startup_timeout,
        )
        .await,
    );
    let locks = Arc::new(
        Locks::start(
            coordination.clone(),
            config.limits.clone(),
            config.lock.clone(),
            drain.clone(),
            config.redis.startup_timeout,
        )
        .await,
    );

    let sessions =
        Arc::new(Sessions::new(coordination.clone(), config.limits.clone(), config.session.clone()));

    let events = Arc::new(
        Events::start(
            coordination.clone(),
            config.limits.clone(),
            config.events.clone(),
            shares.clone(),
            drain.clone(),
            config.redis.startup_timeout,
        )
        .await,
    );
    let limiter = Arc::new(
        RateLimiter::new(coordination.clone(), config.limits.clone(), &config.rate_limiter).map_err(|e| {
            config::ConfigError::Invalid { field: "rate_limiter.policies", message: e.to_string() }
        })?,
    );

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_service_status(LIVENESS_SERVICE_NAME, ServingStatus::Serving).await;
    let (serving_tx, serving_rx) = watch::channel(false);
    let serving_tx = Arc::new(serving_tx);
    let health_task = tokio::spawn(follow_health(
        health_reporter.clone(),
        cache.clone(),
        locks.clone(),
        events.clone(),
        serving_tx.clone(),
    ));

    // Both versions of reflection: grpcurl and grpc-java speak v1, grpcio-reflection, older
    // grpcurl builds and several GUI tools only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rookery::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(ENVOY_RATE_LIMIT_FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e| std::io::Error::other(format!("reflection: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;

    let message_limit = config.limits.max_message_bytes;
    let cache_service = CacheServer::new(CacheApi::new(cache.clone()))
        .max_decoding_message_size(message_limit)
        .max_encoding_message_size(message_limit);
    let session_service = SessionServer::new(SessionApi::new(sessions))
        .max_decoding_message_size(message_limit)
        .max_encoding_message_size(message_limit);
    let events_service = EventsServer::new(EventsApi::new(events))
        .max_decoding_message_size(message_limit)
        .max_encoding_message_size(message_limit);
    let rate_limiter_service = RateLimiterServer::new(RateLimiterApi::new(limiter.clone()))
        .max_decoding_message_size(message_limit)
        .max_encoding_message_size(message_limit);
    let envoy_service =
        RateLimitServiceServer::new(EnvoyRateLimitApi::new(limiter, config.rate_limiter.envoy.clone()));
    let lock_service = LockServer::new(LockApi::new(locks.clone()))
        .max_decoding_message_size(message_limit)
        .max_encoding_message_size(message_limit);

    let grpc_addr = listeners.grpc.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let admin_task = tokio::spawn(async move {
        let router = telemetry::admin_router(serving_rx);
        let served = match admin_tls {
            Some(tls) => match tls::AdminListener::new(listeners.admin, tls) {
                Ok(listener) => axum::serve(listener, router).await,
                Err(e) => Err(e),
            },
            None => axum::serve(listeners.admin, router).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    let upkeep_task = tokio::spawn(telemetry::run_metrics_upkeep());
    tracing::info!(grpc = %grpc_addr, admin = %admin_addr, "rookery-server listening");

    let drain_control = Arc::new(drain_control);
    let pre_drain_delay = config.shutdown.pre_drain_delay;
    let signal = {
        let reporter = health_reporter.clone();
        let drain_control = drain_control.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: refusing new calls, draining in-flight ones");
            // Stop the health follower (and wait until it has stopped, so that a check already
            // running cannot write SERVING after the NOT_SERVING below).
            health_task.abort();
            let _ = health_task.await;
            serving_tx.send_replace(false);
            set_all(&reporter, ServingStatus::NotServing).await;
            if !pre_drain_delay.is_zero() {
                tracing::info!(
                    ?pre_drain_delay,
                    "NOT_SERVING; still accepting calls until load balancers notice"
                );
                tokio::time::sleep(pre_drain_delay).await;
            }
            drain_control.start_draining();
        }
    };
    let incoming = tls::incoming(listeners.grpc, tls);
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(config.limits.max_concurrent_streams)
        // Outermost first: metrics see the final code of every call, refusals included.
        .layer(RpcMetricsLayer)
        .layer(tower::util::MapResponseLayer::new(honest_codes::<tonic::body::Body>))
        .layer(AuthLayer::new(auth))
        .layer(FairShareLayer::new(shares))
        .layer(CutLayer::new(drain.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(cache_service)
        .add_service(lock_service)
        .add_service(session_service)
        .add_service(rate_limiter_service)
        .add_service(events_service)
        .add_service(envoy_service)
        .serve_with_incoming_shutdown(incoming, signal);
    let drain_timeout = config.shutdown.drain_timeout;
    let drain_deadline = async move {
        drain.draining().await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result.map_err(ServeError::from),
        () = drain_deadline => {
            tracing::warn!(?drain_timeout, "drain timeout reached; cutting the remaining calls");
            drain_control.cut();
            // The cut calls answer at once; give their responses a moment to be written.
            tokio::time::timeout(Duration::from_millis(250), &mut server).await.unwrap_or(Ok(())).map_err(ServeError::from)
        }
    };
    admin_task.abort();
    upkeep_task.abort();
    for task in reload_tasks {
        task.abort();
    }
    if let Some(export) = export {
        export.shutdown().await;
    }
    tracing::info!("rookery-server stopped");
    result
}

/// Sets every service's health status, and the overall one ("").
async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in [
        "",
        CACHE_SERVICE_NAME,
        LOCK_SERVICE_NAME,
        SESSION_SERVICE_NAME,
        RATE_LIMITER_SERVICE_NAME,
        ENVOY_RATE_LIMIT_SERVICE_NAME,
        EVENTS_SERVICE_NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}

/// Keeps grpc.health.v1 and `/healthz` following Redis: a service is SERVING only while the
/// Redis it needs answers and its wake-up subscription is live.
async fn follow_health(
    reporter: HealthReporter,
    cache: Arc<Cache>,
    locks: Arc<Locks>,
    events: Arc<Events>,
    serving: Arc<watch::Sender<bool>>,
) {
    let mut interval = tokio::time::interval(HEALTH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status = |ok: bool| if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
    loop {
        interval.tick().await;
        let (cache_ok, lock_ok, events_ok) = tokio::join!(
            tokio::time::timeout(HEALTH_INTERVAL, cache.is_healthy()),
            tokio::time::timeout(HEALTH_INTERVAL, locks.is_healthy()),
            tokio::time::timeout(HEALTH_INTERVAL, events.is_healthy()),
        );
        let cache_ok = cache_ok.unwrap_or(false);
        let lock_ok = lock_ok.unwrap_or(false);
        let events_ok = events_ok.unwrap_or(false);
        for (role, ok) in [(locks.redis().role(), lock_ok), (cache.redis().role(), cache_ok)] {
            metrics::gauge!("rookery_redis_up", "redis" => role.label()).set(if ok { 1.0 } else { 0.0 });
        }
        let all_ok = cache_ok && lock_ok && events_ok;
        reporter.set_service_status(CACHE_SERVICE_NAME, status(cache_ok)).await;
        reporter.set_service_status(LOCK_SERVICE_NAME, status(lock_ok)).await;
        reporter.set_service_status(EVENTS_SERVICE_NAME, status(events_ok)).await;
        // Sessions and rate limits need only the coordination Redis, which the Lock's check pings.
        for name in [SESSION_SERVICE_NAME, RATE_LIMITER_SERVICE_NAME, ENVOY_RATE_LIMIT_SERVICE_NAME] {
            reporter.set_service_status(name, status(lock_ok)).await;
        }
        reporter.set_service_status("", status(all_ok)).await;
        serving.send_if_modified(|current| std::mem::replace(current, all_ok) != all_ok);
    }
}
