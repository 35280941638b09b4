//! Traces across services: W3C trace context in, OpenTelemetry spans out over OTLP/gRPC.
//!
//! - **In.** With export on, [`set_parent`] reads `traceparent` and `tracestate` from a call's
//!   metadata (opentelemetry's `TraceContextPropagator`), and the call's span becomes a child
//!   of the caller's. Sampling is parent-based: a caller's sampled flag decides; a call without
//!   one is recorded with probability `telemetry.otlp.sampling_ratio`.
//! - **Out.** [`layer`] is a `tracing-opentelemetry` layer in the process's subscriber (see
//!   `init_tracing`): the per-RPC span and the Redis spans under it ([`redis_span`]) become
//!   OpenTelemetry spans, batched and sent to `telemetry.otlp.endpoint` by a
//!   `BatchSpanProcessor` over tonic. Only spans are sent; log events stay in the logs.
//! - **Off** (the default): no exporter exists, the layer's filter lets nothing through, no
//!   Redis span is made and no metadata is parsed. One atomic load per call and per Redis
//!   operation is the whole cost.
//!
//! Why a switch rather than a provider per server: the `tracing` subscriber is process-wide
//! and installed once (`init_tracing`, before any config is known to the test harness), while
//! the export config arrives with [`crate::serve`]. So the layer and its tracer provider exist
//! once per process, and [`start`] plugs an exporter into the provider's one span processor
//! slot; [`Export::shutdown`] flushes it and unplugs it. One exporter per process: a second
//! server in the same process that starts exporting replaces the first one's exporter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Link, SamplingResult, SpanKind, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, ShouldSample, Span, SpanData, SpanProcessor,
};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::OtlpConfig;

/// Whether an exporter is plugged in: the one switch every traced path reads first.
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// `telemetry.otlp.sampling_ratio` of the exporter plugged in, as `f64` bits.
static RATIO: AtomicU64 = AtomicU64::new(0);
/// The exporter's span processor, while one is plugged in, with the number of its [`start`].
static PROCESSOR: RwLock<Option<(u64, BatchSpanProcessor)>> = RwLock::new(None);

/// Whether spans are being exported: trace context is read and Redis spans are made only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The process's tracer provider: parent-based sampling at the configured ratio, every
/// finished span handed to the plugged-in exporter, if any.
fn provider() -> &'static SdkTracerProvider {
    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(ConfiguredRatio)))
            .with_span_processor(Slot)
            .build()
    })
}

/// The layer that turns this crate's spans into OpenTelemetry spans while exporting. Other
/// crates' spans (tonic, h2, redis) and log events are never exported.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    // Which callsites could ever be exported is fixed, and cached by `tracing` per callsite;
    // whether they are now is not, so they are "sometimes" interesting and the switch is read
    // per span. (A plain `filter_fn` would cache the answer of the moment for good.)
    let exportable = |metadata: &tracing::Metadata<'_>| {
        metadata.is_span()
            && metadata.target().starts_with("rookery_server")
            && *metadata.level() <= tracing::Level::INFO
    };
    let filter =
        tracing_subscriber::filter::dynamic_filter_fn(move |metadata, _| exportable(metadata) && exporting())
            .with_callsite_filter(move |metadata| {
                if exportable(metadata) {
                    tracing::subscriber::Interest::sometimes()
                } else {
                    tracing::subscriber::Interest::never()
                }
            })
            // Keeps callsites below INFO (every crate's debug and trace spans) switched off for good.
            .with_max_level_hint(tracing::Level::INFO);
    tracing_opentelemetry::layer().with_tracer(provider().tracer("rookery-server")).with_filter(filter)
}

/// Makes `span` (a call's, not yet entered) a child of the trace context in the call's
/// metadata, if it carries a valid one; does nothing while not exporting.
pub fn set_parent(span: &tracing::Span, metadata: &http::HeaderMap) {
    if !exporting() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&MetadataExtractor(metadata));
    if context.span().span_context().is_valid() {
        // Fails only if the span is not recorded (export switched off meanwhile): no parent then.
        let _ = span.set_parent(context);
    }
}

/// A span for one Redis operation, named after it (`db.operation`, the script's or command's
/// name such as `lock.acquire`; never a key or value), while exporting and inside a traced
/// span; `None` otherwise, so background work makes no traces of its own.
pub fn redis_span(operation: &'static str) -> Option<tracing::Span> {
    if !exporting() || tracing::Span::current().is_none() {
        return None;
    }
    Some(tracing::info_span!(
        "redis",
        otel.name = operation,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system = "redis",
        db.operation = operation,
    ))
}

/// Reads gRPC metadata (the HTTP/2 headers of a call) for the propagator.
struct MetadataExtractor<'a>(&'a http::HeaderMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// What [`start`] plugged in; [`Export::shutdown`] flushes and unplugs it. Dropped without
/// that (a server that failed to start), it unplugs and flushes in the background.
#[derive(Debug)]
#[must_use = "spans are flushed only by Export::shutdown"]
pub struct Export {
    generation: u64,
}

/// Builds the OTLP/gRPC exporter for `config` and plugs it in. Must run inside the tokio
/// runtime, which drives the exporter's connection.
pub fn start(config: &OtlpConfig) -> Result<Export, String> {
    use opentelemetry_otlp::WithExportConfig;
    static GENERATIONS: AtomicU64 = AtomicU64::new(0);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.endpoint.clone())
        .with_timeout(config.export_timeout)
        .build()
        .map_err(|e| format!("telemetry.otlp: cannot build the OTLP exporter: {e}"))?;
    let mut processor = BatchSpanProcessor::builder(exporter).build();
    processor.set_resource(&Resource::builder().with_service_name(config.service_name.clone()).build());
    let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    RATIO.store(config.sampling_ratio.to_bits(), Ordering::Relaxed);
    let replaced = PROCESSOR.write().unwrap_or_else(|e| e.into_inner()).replace((generation, processor));
    EXPORTING.store(true, Ordering::Relaxed);
    if let Some((_, replaced)) = replaced {
        tracing::warn!("another server in this process was exporting spans; it no longer does");
        std::thread::spawn(move || replaced.shutdown());
    }
    tracing::info!(endpoint = %config.endpoint, "exporting spans over OTLP");
    Ok(Export { generation })
}

impl Export {
    /// Stops exporting and sends the spans still queued (within the export timeout).
    pub async fn shutdown(self) {
        if let Some(processor) = self.unplug() {
            // Blocks until the last batch is sent; off the runtime's threads, which must stay
            // free to drive the exporter's connection.
            let flushed = tokio::task::spawn_blocking(move || processor.shutdown()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "could not send the last spans to the OTLP collector");
            }
        }
    }

    /// Takes this export's processor out of the slot, unless another has replaced it.
    fn unplug(&self) -> Option<BatchSpanProcessor> {
        let mut slot = PROCESSOR.write().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|(generation, _)| *generation != self.generation) {
            return None;
        }
        EXPORTING.store(false, Ordering::Relaxed);
        slot.take().map(|(_, processor)| processor)
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        if let Some(processor) = self.unplug() {
            std::thread::spawn(move || processor.shutdown());
        }
    }
}

/// The provider's one span processor: forwards to the plugged-in exporter's, if any.
#[derive(Debug)]
struct Slot;

impl SpanProcessor for Slot {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        if let Some((_, processor)) = PROCESSOR.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            processor.on_start(span, cx);
        }
    }

    fn on_end(&self, span: SpanData) {
        if let Some((_, processor)) = PROCESSOR.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            metrics::counter!("rookery_otlp_spans_total").increment(1);
            processor.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match PROCESSOR.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some((_, processor)) => processor.force_flush(),
            None => Ok(()),
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // The plugged-in processor is shut down by `Export::shutdown`, which owns it.
        Ok(())
    }
}

/// The root sampler under `ParentBased`: the plugged-in exporter's ratio of new traces.
#[derive(Debug, Clone)]
struct ConfiguredRatio;

impl ShouldSample for ConfiguredRatio {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
        Sampler::TraceIdRatioBased(ratio).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_trace_context_from_metadata() {
        let mut metadata = http::HeaderMap::new();
        metadata.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap(),
        );
        let context = TraceContextPropagator::new().extract(&MetadataExtractor(&metadata));
        let span = context.span();
        let parent = span.span_context();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(parent.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(parent.span_id().to_string(), "b7ad6b7169203331");
    }

    #[test]
    fn nothing_is_traced_while_not_exporting() {
        assert!(!exporting());
        assert!(redis_span("cache.get").is_none());
    }
}
