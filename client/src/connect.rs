//! How a [`crate::Client`] reaches a server that wants TLS and credentials, and the metadata
//! every call carries (namespace, bearer token, and with the `otel` feature the W3C trace
//! context of the current `tracing` span).
//!
//! A token read from a file is re-read every `refresh` by a task that lives as long as the
//! client: Kubernetes rotates projected ServiceAccount tokens in place, and a client holding
//! the first one would be refused once it expires.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::{Error, NAMESPACE_HEADER};

/// Where the bearer token of every call comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A token given once (a static token or a long-lived JWT).
    Static(String),
    /// A file holding the token, re-read every `refresh` (a projected ServiceAccount token).
    File {
        /// The token file.
        path: PathBuf,
        /// How often it is re-read.
        refresh: Duration,
    },
}

/// TLS and credentials for [`crate::Client::connect_with`]. TLS is used for `https://` URLs:
/// with the given CA, or the system's roots when none is given.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
    token: Option<TokenSource>,
}

impl ConnectOptions {
    /// No TLS settings and no token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates in `pem` (instead of the system's roots).
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate chain and key (PEM) for mTLS.
    pub fn client_certificate(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Expects the server's certificate to name `domain` (when the URL's host does not).
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Sends `token` as `authorization: Bearer …` on every call.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenSource::Static(token.into()));
        self
    }

    /// Sends the token in `path` on every call, re-reading the file every `refresh`.
    pub fn token_file(mut self, path: impl Into<PathBuf>, refresh: Duration) -> Self {
        self.token = Some(TokenSource::File { path: path.into(), refresh });
        self
    }

    /// The TLS settings for tonic, for `https://` URLs.
    pub(crate) fn tls(&self) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_pem {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        tls
    }

    /// The TLS settings for connections to addresses `host` resolved to: the certificate
    /// must name `host` unless a TLS domain was given.
    pub(crate) fn tls_for_host(&self, host: &str) -> ClientTlsConfig {
        let tls = self.tls();
        if self.domain.is_some() { tls } else { tls.domain_name(host) }
    }

    /// The token cell calls read, filled now (an unreadable file is an error) and kept fresh.
    pub(crate) fn token_cell(&self) -> Result<Option<Arc<TokenCell>>, Error> {
        let Some(source) = &self.token else { return Ok(None) };
        let cell = Arc::new(TokenCell::default());
        match source {
            TokenSource::Static(token) => cell.set(token)?,
            TokenSource::File { path, refresh } => {
                let read = |path: &PathBuf| {
                    std::fs::read_to_string(path)
                        .map_err(|e| Error::Token(format!("{}: {e}", path.display())))
                };
                cell.set(&read(path)?)?;
                let weak = Arc::downgrade(&cell);
                let (path, refresh) = (path.clone(), *refresh);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(refresh).await;
                        let Some(cell) = weak.upgrade() else { return };
                        // A failed read keeps the last token: the server says when it no longer
                        // works.
                        if let Ok(token) = tokio::fs::read_to_string(&path).await {
                            let _ = cell.set(&token);
                        }
                    }
                });
            }
        }
        Ok(Some(cell))
    }
}

/// The current `authorization` value.
#[derive(Debug, Default)]
pub(crate) struct TokenCell(RwLock<Option<MetadataValue<Ascii>>>);

impl TokenCell {
    fn set(&self, token: &str) -> Result<(), Error> {
        let mut value = format!("Bearer {}", token.trim())
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| Error::Token("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(())
    }
}

/// Adds the namespace header and the bearer token to every call; with the `otel` feature, also
/// `traceparent` (and `tracestate`) from the OpenTelemetry context of the `tracing` span the
/// call is made in, when it has one, so the server's spans join the caller's trace.
#[derive(Debug, Clone, Default)]
pub struct CallInterceptor {
    pub(crate) namespace: Option<MetadataValue<Ascii>>,
    pub(crate) token: Option<Arc<TokenCell>>,
}

impl Interceptor for CallInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(namespace) = &self.namespace {
            request.metadata_mut().insert(NAMESPACE_HEADER, namespace.clone());
        }
        if let Some(token) = &self.token
            && let Some(value) = token.0.read().unwrap_or_else(|e| e.into_inner()).clone()
        {
            request.metadata_mut().insert("authorization", value);
        }
        #[cfg(feature = "otel")]
        trace_context::inject(request.metadata_mut());
        Ok(request)
    }
}

/// W3C trace context out of the current `tracing` span (tracing-opentelemetry) into a call's
/// metadata.
#[cfg(feature = "otel")]
mod trace_context {
    use opentelemetry::propagation::{Injector, TextMapPropagator};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// Writes the current span's context; the propagator writes nothing for a span that has
    /// none (no OpenTelemetry layer, or no span at all).
    pub(super) fn inject(metadata: &mut MetadataMap) {
        let context = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
    }

    struct MetadataInjector<'a>(&'a mut MetadataMap);

    impl Injector for MetadataInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(key), Ok(value)) =
                (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value))
            {
                self.0.insert(key, value);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use opentelemetry::trace::TracerProvider as _;
        use tracing::instrument::WithSubscriber;
        use tracing_subscriber::layer::SubscriberExt;

        use super::*;

        #[tokio::test]
        async fn the_current_span_context_goes_into_the_metadata() {
            let mut metadata = MetadataMap::new();
            inject(&mut metadata);
            assert!(metadata.get("traceparent").is_none(), "no span, no trace context");

            let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("test");
            let subscriber =
                tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
            let (metadata, expected) = async {
                let span = tracing::info_span!("caller");
                let _entered = span.enter();
                let mut metadata = MetadataMap::new();
                inject(&mut metadata);
                let context = span.context();
                let expected = {
                    use opentelemetry::trace::TraceContextExt;
                    let span = context.span();
                    let context = span.span_context();
                    format!("00-{}-{}-01", context.trace_id(), context.span_id())
                };
                (metadata, expected)
            }
            .with_subscriber(subscriber)
            .await;
            assert_eq!(metadata.get("traceparent").unwrap().to_str().unwrap(), expected);
        }
    }
}
