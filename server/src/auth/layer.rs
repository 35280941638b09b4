//! The tower layer that ties each call to an identity and a namespace, or refuses it.
//!
//! It runs before the fair-share layer, so refused calls take no namespace's share, and it is
//! the one place a call's [`Namespace`] is decided: from the header with auth off, from the
//! header or the identity's default with auth on, checked against the grants. Health checks
//! pass untouched (probes carry no credentials, even over plaintext to the TLS port); with
//! auth on, reflection answers authenticated callers only.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use super::{Auth, Denial, Identity, access};
use crate::namespace::{self, NAMESPACE_HEADER, Namespace};
use crate::tls::{ConnInfo, Transport};

/// Tower layer enforcing [`Auth`].
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    /// Enforces `auth`.
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.auth.clone() }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    RB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !request.uri().path().starts_with("/grpc.health.") {
            match admit(&self.auth, &request) {
                Ok(Admitted { namespace, identity }) => {
                    if let Some(namespace) = namespace {
                        // The call's span (entered by the RPC layer) carries its tenant.
                        tracing::Span::current().record("rookery.namespace", namespace.as_str());
                        request.extensions_mut().insert(namespace);
                    }
                    if let Some(identity) = identity {
                        request.extensions_mut().insert(identity);
                    }
                }
                Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
            }
        }
        let response = self.inner.call(request);
        Box::pin(async move { Ok(response.await?.map(tonic::body::Body::new)) })
    }
}

/// What a call was admitted with.
struct Admitted {
    /// `None` for reflection, which serves no namespace.
    namespace: Option<Namespace>,
    identity: Option<Identity>,
}

/// Decides a call (all but health checks): its identity, namespace and grant.
fn admit<B>(auth: &Auth, request: &http::Request<B>) -> Result<Admitted, tonic::Status> {
    let path = request.uri().path();
    let headers = request.headers();
    let conn = request.extensions().get::<ConnInfo>();
    let transport = conn.map_or(&Transport::Plaintext, |c| &c.transport);
    let deny = |denial: Denial, identity: Option<&Identity>, detail: Option<&str>| {
        metrics::counter!("rookery_auth_denied_total", "reason" => denial.label()).increment(1);
        let namespace = headers.get(NAMESPACE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        tracing::warn!(
            identity = identity.map_or("", |i| &i.0),
            namespace,
            method = path,
            reason = denial.label(),
            detail = detail.unwrap_or(""),
            remote = conn.and_then(|c| c.remote).map(|r| r.to_string()).unwrap_or_default(),
            "call denied"
        );
        denial.status()
    };
    let reflection = path.starts_with("/grpc.reflection.");
    if !auth.enabled() {
        if *transport == Transport::PlaintextOnTlsPort {
            return Err(deny(Denial::TlsRequired, None, None));
        }
        if reflection {
            return Ok(Admitted { namespace: None, identity: None });
        }
        return Ok(Admitted { namespace: Some(namespace::resolve(headers)?), identity: None });
    }
    let identity = auth.authenticate(headers, transport).map_err(|denial| {
        let detail = match transport {
            Transport::Tls(crate::tls::ClientCert::Refused(reason)) => Some(&**reason),
            _ => None,
        };
        deny(denial, None, detail)
    })?;
    if reflection {
        return Ok(Admitted { namespace: None, identity: Some(identity) });
    }
    let Some((service, access)) = access::classify(path) else {
        return Err(deny(Denial::UnknownMethod, Some(&identity), None));
    };
    let namespace = if headers.contains_key(NAMESPACE_HEADER) {
        namespace::resolve(headers)?
    } else {
        let name = auth.default_namespace(&identity).unwrap_or(namespace::DEFAULT_NAMESPACE);
        Namespace::new(name).map_err(|_| deny(Denial::InvalidNamespace, Some(&identity), None))?
    };
    auth.authorize(&identity, namespace.as_str(), service, access)
        .map_err(|denial| deny(denial, Some(&identity), Some(namespace.as_str())))?;
    Ok(Admitted { namespace: Some(namespace), identity: Some(identity) })
}
