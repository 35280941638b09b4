//! Logs, metrics and the per-RPC layer.
//!
//! - Logs: a `tracing` subscriber, pretty or JSON by config, and one span per RPC. Payloads,
//!   keys' values, session IDs and tokens are never logged.
//! - Traces: the same per-RPC span, named and attributed after OpenTelemetry's RPC
//!   conventions, is exported with the Redis spans under it when `telemetry.otlp` is set
//!   ([`otel`]).
//! - Metrics: the process-wide Prometheus recorder, rendered by the admin HTTP server at
//!   `/metrics`. RPC count and latency by method and code are recorded by [`RpcMetricsLayer`],
//!   a tower layer around every service, so no handler repeats that code. Process metrics
//!   (resident memory, CPU, open files, threads) are collected at each scrape.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;
use tracing::Instrument;

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

pub mod otel;

/// Installs the global `tracing` subscriber (once per process; later calls do nothing): logs
/// filtered by `log.level`, and the OpenTelemetry layer, which exports nothing until a server
/// with `telemetry.otlp` starts ([`otel`]). The log filter applies to the logs only, so a
/// `warn` log level still exports every RPC's span.
pub fn init_tracing(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match config.format {
        LogFormat::Pretty => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry().with(logs.with_filter(filter)).with(otel::layer()).try_init();
}

/// The process-wide Prometheus recorder, installed on first use. Several servers in one
/// process (as in tests) share it.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let latency_buckets = [
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0,
        ];
        let builder =
            PrometheusBuilder::new().set_buckets(&latency_buckets).expect("bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        handle
    })
}

/// Collects the process metrics (`process_resident_memory_bytes`, …) and renders every metric.
fn render_metrics() -> String {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    let handle = prometheus();
    PROCESS
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
    handle.render()
}

/// Runs the recorder's periodic upkeep (draining histogram buckets) until dropped; the
/// exporter's own HTTP listener would do this, but we serve `/metrics` ourselves.
pub async fn run_metrics_upkeep() {
    let mut interval = tokio::time::interval(Duration::from_secs(5));
    loop {
        interval.tick().await;
        prometheus().run_upkeep();
    }
}

/// Where the admin HTTP server serves Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Where the admin HTTP server answers 200 while the server is SERVING, 503 otherwise.
pub const HEALTHZ_PATH: &str = "/healthz";

/// The admin HTTP router: `/metrics` (Prometheus text) and `/healthz` (200 while serving,
/// 503 otherwise).
pub fn admin_router(serving: watch::Receiver<bool>) -> Router {
    Router::new()
        .route(METRICS_PATH, get(|| async { render_metrics() }))
        .route(HEALTHZ_PATH, get(healthz))
        .with_state(Arc::new(serving))
}

async fn healthz(State(serving): State<Arc<watch::Receiver<bool>>>) -> (StatusCode, &'static str) {
    if *serving.borrow() {
        (StatusCode::OK, "SERVING\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
    }
}

/// Counts itself in a gauge while it lives: callers waiting, streams open.
#[derive(Debug)]
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    /// Adds one to `gauge` until the guard is dropped.
    pub fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Tower layer recording, per RPC, `rookery_rpc_requests_total{method,code}` and
/// `rookery_rpc_duration_seconds{method}`, inside the call's `tracing` span ([`rpc_span`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// The service made by [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

/// Method label: the gRPC path for our own and the standard services; anything else (a
/// client calling a method that does not exist) is folded into one label to bound cardinality.
fn method_label(path: &str) -> String {
    if path.starts_with("/rookery.") || path.starts_with("/grpc.") {
        path.to_owned()
    } else {
        "other".to_owned()
    }
}

/// The gRPC code of a response whose status travelled in the headers (errors are sent
/// "trailers-only"); a unary success carries its status in the trailers, so no header means OK.
fn response_code(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

/// The span of one call, after OpenTelemetry's RPC conventions: named `rookery.v1.Cache/Get`
/// (`otel.name`), kind server, `rpc.system`, `rpc.service`, `rpc.method`; the auth layer
/// records `rookery.namespace` once it has decided it, and [`RpcMetrics`] records
/// `rpc.grpc.status_code` when the call answers. `method` is [`method_label`]'s bounded label.
fn rpc_span(method: &str) -> tracing::Span {
    let name = method.strip_prefix('/').unwrap_or(method);
    let (service, rpc) = name.split_once('/').unwrap_or((name, name));
    tracing::info_span!(
        "rpc",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = rpc,
        rpc.grpc.status_code = tracing::field::Empty,
        rookery.namespace = tracing::field::Empty,
    )
}

/// Codes that mean the server failed the call (OpenTelemetry's list for gRPC servers); the
/// others are the caller's business, not the span's error.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let span = rpc_span(&method);
        otel::set_parent(&span, request.headers());
        let start = Instant::now();
        // Entered while the inner layers take the request, so the auth layer can record the
        // namespace on it.
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = response.await;
                let code = match &result {
                    Ok(response) => {
                        let code = response_code(response.headers());
                        let span = tracing::Span::current();
                        span.record("rpc.grpc.status_code", code as i64);
                        if is_server_error(code) {
                            span.record("otel.status_code", "ERROR");
                        }
                        format!("{code:?}")
                    }
                    Err(_) => "TransportError".to_owned(),
                };
                metrics::histogram!("rookery_rpc_duration_seconds", "method" => method.clone())
                    .record(start.elapsed().as_secs_f64());
                metrics::counter!("rookery_rpc_requests_total", "method" => method, "code" => code)
                    .increment(1);
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_named() {
        assert_eq!(method_label("/rookery.v1.Cache/Get"), "/rookery.v1.Cache/Get");
        assert_eq!(method_label("/evil/x"), "other");
        let mut headers = http::HeaderMap::new();
        assert_eq!(response_code(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", "3".parse().unwrap());
        assert_eq!(response_code(&headers), tonic::Code::InvalidArgument);
    }
}
