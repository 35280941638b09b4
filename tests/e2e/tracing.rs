//! Traces across services: a call carrying W3C trace context gets a server span that is the
//! caller's child, with Redis spans under it, exported over OTLP/gRPC to a collector the test
//! runs itself (the collector's `TraceService`, from `opentelemetry-proto`, keeping every
//! export in memory); and with OTLP off, the default, nothing is exported.
//!
//! The subscriber and its OpenTelemetry layer are process-wide, so the tests here take turns
//! ([`EXCLUSIVE`]); servers of other tests running meanwhile may export to this collector too,
//! which is why every check picks spans by trace ID.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use rookery_client::pb;
use rookery_client::pb::cache_client::CacheClient;
use rookery_server::config::OtlpConfig;
use tracing::instrument::WithSubscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use crate::harness::{TestServer, eventually, namespace, shared_redis, test_config};

/// One test at a time turns the process's exporter on or checks that it is off.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The key and value the calls use: neither may appear in any exported attribute.
const KEY: &str = "secret-key-5d1f";
const VALUE: &[u8] = b"secret-value-9c2e";

/// An OTLP/gRPC collector on a free port that keeps what it receives.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Starts serving; returns the collector and its `http://` endpoint.
    async fn start() -> (Self, String) {
        let collector = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, endpoint)
    }

    /// Every span received in trace `trace_id` (hex), with its resource's `service.name`.
    fn spans_of(&self, trace_id: &str) -> Vec<(String, Span)> {
        let received = self.received.lock().unwrap();
        let mut spans = Vec::new();
        for request in received.iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|resource| attribute(&resource.attributes, "service.name"))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        if hex(&span.trace_id) == trace_id {
                            spans.push((service.clone(), span.clone()));
                        }
                    }
                }
            }
        }
        spans
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn render(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).map(render)
}

/// A raw Cache stub call's request in `namespace` with `traceparent`.
fn traced<T>(message: T, namespace: &str, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(rookery_client::NAMESPACE_HEADER, namespace.parse().unwrap());
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    request
}

/// `rookery_otlp_spans_total` (0 before the first span), from the process's metrics
/// recorder, which every server's `/metrics` renders.
fn spans_total() -> f64 {
    rookery_server::telemetry::prometheus()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix("rookery_otlp_spans_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn rpc_spans_join_the_callers_trace_with_redis_spans_under_them() {
    let _exclusive = EXCLUSIVE.lock().await;
    let ns = namespace("tracing");
    // A call while export is off first, as in a process that turns it on later: the spans'
    // callsites, first seen then, must still be exported once it is on.
    let off = TestServer::start(test_config(&shared_redis().url())).await;
    CacheClient::new(off.client(&ns).await.channel())
        .get(traced(
            pb::CacheGetRequest { key: KEY.into() },
            &ns,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ))
        .await
        .unwrap();
    off.stop().await;

    let (collector, endpoint) = Collector::start().await;
    let mut config = test_config(&shared_redis().url());
    // Ratio 0: only calls whose caller sampled their trace are exported (parent-based), so
    // health checks and other tests' calls add nothing here.
    config.telemetry.otlp = Some(OtlpConfig {
        endpoint,
        service_name: "rookery-e2e".into(),
        sampling_ratio: 0.0,
        export_timeout: Duration::from_secs(5),
    });
    let server = TestServer::start(config).await;
    let client = server.client(&ns).await;
    let mut cache = CacheClient::new(client.channel());

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (set_parent, get_parent, bad_parent) = ("00f067aa0ba902b7", "1a2b3c4d5e6f7081", "0102030405060708");
    let set = pb::CacheSetRequest {
        key: KEY.into(),
        value: VALUE.to_vec(),
        ttl: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        ..Default::default()
    };
    cache.set(traced(set, &ns, &format!("00-{trace}-{set_parent}-01"))).await.unwrap();
    let got = cache
        .get(traced(pb::CacheGetRequest { key: KEY.into() }, &ns, &format!("00-{trace}-{get_parent}-01")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, VALUE);
    let bad = cache
        .get(traced(pb::CacheGetRequest { key: String::new() }, &ns, &format!("00-{trace}-{bad_parent}-01")))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // A caller that did not sample its trace: nothing of it is exported.
    let unsampled = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    cache
        .get(traced(pb::CacheGetRequest { key: KEY.into() }, &ns, &format!("00-{unsampled}-{get_parent}-00")))
        .await
        .unwrap();

    // The batch processor sends every few seconds: wait for what the collector received.
    let complete = |spans: &[(String, Span)]| {
        let rpc_ids: Vec<_> = spans
            .iter()
            .filter(|(_, s)| s.name.starts_with("rookery.v1.Cache/"))
            .map(|(_, s)| s.span_id.clone())
            .collect();
        rpc_ids.len() == 3 && spans.iter().filter(|(_, s)| rpc_ids.contains(&s.parent_span_id)).count() >= 2
    };
    let arrived =
        eventually(Duration::from_secs(60), || async { complete(&collector.spans_of(trace)) }).await;
    assert!(arrived, "spans never reached the collector: {:?}", collector.spans_of(trace));
    assert!(spans_total() >= 5.0, "rookery_otlp_spans_total counts exported spans");

    let spans = collector.spans_of(trace);
    let rpc = |parent: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| hex(&s.parent_span_id) == parent)
            .unwrap_or_else(|| panic!("no span is the child of the caller's span {parent}: {spans:?}"))
    };
    let children = |of: &Span| {
        spans.iter().map(|(_, s)| s).filter(|s| s.parent_span_id == of.span_id).collect::<Vec<_>>()
    };
    for (parent, method, operation, code) in [
        (set_parent, "Set", Some("cache.set"), "0"),
        (get_parent, "Get", Some("cache.get"), "0"),
        (bad_parent, "Get", None, "3"),
    ] {
        let span = rpc(parent);
        assert_eq!(span.name, format!("rookery.v1.Cache/{method}"));
        assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
        for (key, value) in [
            ("rpc.system", "grpc"),
            ("rpc.service", "rookery.v1.Cache"),
            ("rpc.method", method),
            ("rpc.grpc.status_code", code),
            ("rookery.namespace", ns.as_str()),
        ] {
            assert_eq!(attribute(&span.attributes, key).as_deref(), Some(value), "{key} of {span:?}");
        }
        let redis = children(span);
        match operation {
            Some(operation) => {
                let redis = redis
                    .iter()
                    .find(|s| attribute(&s.attributes, "db.operation").as_deref() == Some(operation))
                    .unwrap_or_else(|| panic!("no {operation} span under {method}: {redis:?}"));
                assert_eq!(redis.name, operation);
                assert_eq!(redis.kind, 3, "SPAN_KIND_CLIENT");
                assert_eq!(attribute(&redis.attributes, "db.system").as_deref(), Some("redis"));
            }
            // Refused before Redis: no round trip to show.
            None => assert!(redis.is_empty(), "{redis:?}"),
        }
    }
    for (service, span) in &spans {
        assert_eq!(service, "rookery-e2e");
        for kv in &span.attributes {
            let value = kv.value.as_ref().map(render).unwrap_or_default();
            assert!(
                !value.contains(KEY) && !value.contains(std::str::from_utf8(VALUE).unwrap()),
                "{} = {value:?} leaks a key or value",
                kv.key
            );
        }
    }

    // Stopping flushes what is queued: after it, the unsampled trace is known to be absent.
    server.stop().await;
    assert!(!rookery_server::telemetry::otel::exporting());
    assert!(collector.spans_of(unsampled).is_empty(), "an unsampled caller's trace was exported");
}

#[tokio::test]
async fn the_rust_client_sends_its_spans_context() {
    let _exclusive = EXCLUSIVE.lock().await;
    let (collector, endpoint) = Collector::start().await;
    let mut config = test_config(&shared_redis().url());
    config.telemetry.otlp = Some(OtlpConfig { endpoint, sampling_ratio: 0.0, ..OtlpConfig::default() });
    let server = TestServer::start(config).await;
    let ns = namespace("tracing-client");
    let client = server.client(&ns).await;

    // The caller's own tracing stack, as an application with tracing-opentelemetry has it.
    let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("caller");
    let caller = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
    let (trace, parent) = async {
        let span = tracing::info_span!("caller");
        let context = {
            use opentelemetry::trace::TraceContextExt;
            span.context().span().span_context().clone()
        };
        let _entered = span.enter();
        client.cache().get(KEY).await.unwrap();
        (context.trace_id().to_string(), context.span_id().to_string())
    }
    .with_subscriber(caller)
    .await;

    let arrived = eventually(Duration::from_secs(60), || async {
        collector.spans_of(&trace).iter().any(|(_, s)| hex(&s.parent_span_id) == parent)
    })
    .await;
    assert!(arrived, "the server's span never joined the client's trace");
    let spans = collector.spans_of(&trace);
    let (_, span) = spans.iter().find(|(_, s)| hex(&s.parent_span_id) == parent).unwrap();
    assert_eq!(span.name, "rookery.v1.Cache/Get");
    assert_eq!(attribute(&span.attributes, "rookery.namespace"), Some(ns.clone()));
    server.stop().await;
}

#[tokio::test]
async fn nothing_is_exported_by_default() {
    let _exclusive = EXCLUSIVE.lock().await;
    let config = test_config(&shared_redis().url());
    assert_eq!(config.telemetry.otlp, None, "export is off unless configured");
    let server = TestServer::start(config).await;
    let ns = namespace("tracing-off");
    let before = spans_total();
    let mut cache = CacheClient::new(server.client(&ns).await.channel());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for _ in 0..10 {
        cache.get(traced(pb::CacheGetRequest { key: KEY.into() }, &ns, traceparent)).await.unwrap();
    }
    assert!(!rookery_server::telemetry::otel::exporting());
    server.stop().await;
    // Counted when a finished span is handed to an exporter: none was made at all.
    assert_eq!(spans_total(), before, "spans were handed to an exporter with OTLP off");
}
