//! How a [`crate::Client`] reaches a server that wants TLS and credentials, and the metadata
//! every call carries (namespace, bearer token).
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

/// Adds the namespace header and the bearer token to every call.
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
        Ok(request)
    }
}
