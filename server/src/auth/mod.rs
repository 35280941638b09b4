//! Who is calling, and may they: authentication, authorization and the audit of refusals.
//!
//! Every call passes [`layer::AuthLayer`], which ties it to an identity and a namespace
//! before any handler runs:
//! - **authentication** ([`Auth::authenticate`]) turns the call's credential into one
//!   identity: a bearer token (a JWT, verified by [`jwt`], when it has the three dot-separated
//!   parts of one; otherwise a static token, [`tokens`]), else the connection's verified client
//!   certificate ([`crate::tls`]). A credential that is presented and bad is refused even when
//!   another one would do;
//! - **authorization** ([`Auth::authorize`]): the RPC's service and class come from the one
//!   table in [`access`], the namespace from the `x-rookery-namespace` header or, without one,
//!   the identity's default; [`grants`] decide.
//!
//! Missing or bad credentials are UNAUTHENTICATED, a known identity without the grant
//! PERMISSION_DENIED, and the client learns no more than that. The log says which check failed
//! (identity, namespace, method, reason; never a token), and `rookery_auth_denied_total{reason}`
//! counts refusals with a reason from a fixed set, never an identity.
//!
//! With auth off, the namespace header alone decides, as before; [`AuthConfig::allow_unauthenticated`]
//! must say so in so many words for a listener that is not on loopback (`Config::validate`).

pub mod access;
pub mod grants;
pub mod jwt;
pub mod layer;
pub mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use self::access::{Access, Service};
use self::grants::{Grant, Grants};
use self::jwt::{JwtConfig, JwtRejection, JwtVerifier, Keys};
use self::tokens::{StaticToken, StaticTokens};
use crate::reload::WatchedFiles;
use crate::tls::{ClientCert, Transport};

/// Authentication and authorization (the `[auth]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require every call (but health checks) to authenticate and be granted. Needs at least
    /// one method: `tokens`, `tokens_file`, `jwt`, or `tls.client_ca_file`.
    pub enabled: bool,
    /// With auth off, serve on a listen address that is not loopback anyway: anyone who
    /// reaches the port acts in any namespace.
    pub allow_unauthenticated: bool,
    /// Static bearer tokens, as SHA-256 hashes.
    pub tokens: Vec<StaticToken>,
    /// A TOML file of more static tokens (`[[token]]` tables with `identity` and `sha256`),
    /// re-read when it changes.
    pub tokens_file: Option<PathBuf>,
    /// JWT authentication.
    pub jwt: Option<JwtConfig>,
    /// Grants of access; with auth on, nothing else is allowed.
    pub grants: Vec<Grant>,
    /// How often `tokens_file` and `jwt.jwks_file` are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_unauthenticated: false,
            tokens: Vec::new(),
            tokens_file: None,
            jwt: None,
            grants: Vec::new(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl AuthConfig {
    /// Checks the section; `Err` names the field and the problem.
    pub fn validate(&self, client_certificates: bool) -> Result<(), (&'static str, String)> {
        if self.enabled
            && self.tokens.is_empty()
            && self.tokens_file.is_none()
            && self.jwt.is_none()
            && !client_certificates
        {
            return Err((
                "auth.enabled",
                "auth is on but no caller could authenticate: configure auth.tokens, auth.tokens_file, \
                 auth.jwt or tls.client_ca_file"
                    .into(),
            ));
        }
        let configured = !self.tokens.is_empty()
            || self.tokens_file.is_some()
            || self.jwt.is_some()
            || !self.grants.is_empty();
        if !self.enabled && configured {
            // Credentials and grants that nothing checks would look like protection.
            return Err((
                "auth.enabled",
                "[auth] configures tokens, a JWKS or grants but auth is off: set auth.enabled = true, or \
                 remove them"
                    .into(),
            ));
        }
        StaticTokens::new(&self.tokens).map_err(|e| ("auth.tokens", e))?;
        if let Some(jwt) = &self.jwt {
            jwt.validate().map_err(|e| ("auth.jwt", e))?;
        }
        for (i, grant) in self.grants.iter().enumerate() {
            grant.validate().map_err(|e| ("auth.grants", format!("grant {}: {e}", i + 1)))?;
        }
        if self.reload_interval < Duration::from_millis(10) {
            return Err(("auth.reload_interval", "must be at least 10ms".into()));
        }
        Ok(())
    }
}

/// The authenticated caller of a call (in its request extensions, when auth is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(pub Arc<str>);

/// Why a call was refused. The label is the `reason` of `rookery_auth_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Plaintext sent to the TLS listener.
    TlsRequired,
    /// No credential at all.
    NoCredentials,
    /// An `authorization` header that is not one `Bearer <token>`.
    MalformedCredentials,
    /// A token that is neither a static token nor (with JWT on) a JWT.
    UnknownToken,
    /// A JWT refused for this reason.
    Jwt(JwtRejection),
    /// A client certificate that does not chain to the client CA or names no identity.
    UntrustedCertificate,
    /// The namespace header is not a valid namespace.
    InvalidNamespace,
    /// No grant gives the identity anything in the namespace.
    NamespaceNotGranted,
    /// Grants in the namespace, but none for this service and class.
    AccessNotGranted,
    /// A method the access table does not list.
    UnknownMethod,
}

impl Denial {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::TlsRequired => "tls_required",
            Self::NoCredentials => "no_credentials",
            Self::MalformedCredentials => "malformed_credentials",
            Self::UnknownToken => "unknown_token",
            Self::Jwt(rejection) => rejection.label(),
            Self::UntrustedCertificate => "untrusted_certificate",
            Self::InvalidNamespace => "invalid_namespace",
            Self::NamespaceNotGranted => "namespace_not_granted",
            Self::AccessNotGranted => "access_not_granted",
            Self::UnknownMethod => "unknown_method",
        }
    }

    /// What the caller is told: the code and a message that names no check.
    pub fn status(self) -> tonic::Status {
        match self {
            Self::TlsRequired => tonic::Status::unauthenticated("this port requires TLS"),
            Self::NoCredentials => tonic::Status::unauthenticated("credentials required"),
            Self::InvalidNamespace => tonic::Status::invalid_argument("invalid namespace header"),
            Self::NamespaceNotGranted | Self::AccessNotGranted | Self::UnknownMethod => {
                tonic::Status::permission_denied("permission denied")
            }
            _ => tonic::Status::unauthenticated("invalid credentials"),
        }
    }
}

/// The authenticators and grants in force.
pub struct Auth {
    enabled: bool,
    tokens: Option<Arc<StaticTokens>>,
    jwt: Option<Arc<JwtVerifier>>,
    grants: Grants,
}

impl Auth {
    /// Builds the authenticators (reading `tokens_file` and the JWKS; an error stops the
    /// server) and starts following those files; abort the returned tasks on shutdown.
    pub fn start(config: &AuthConfig) -> Result<(Arc<Self>, Vec<JoinHandle<()>>), String> {
        let mut tasks = Vec::new();
        let tokens =
            if config.tokens.is_empty() && config.tokens_file.is_none() {
                None
            } else {
                let tokens = Arc::new(StaticTokens::new(&config.tokens)?);
                if let Some(path) = &config.tokens_file {
                    let files = WatchedFiles::new("tokens", vec![path.clone()]);
                    let parse = |files: &[Vec<u8>]| StaticTokens::parse_file(&files[0]);
                    let (first, read) = files.load(&parse)?;
                    tokens.set_file_tokens(first);
                    let target = tokens.clone();
                    tasks.push(files.follow(read, config.reload_interval, parse, move |table| {
                        target.set_file_tokens(table)
                    }));
                }
                Some(tokens)
            };
        let jwt = match &config.jwt {
            None => None,
            Some(jwt_config) => {
                let files = WatchedFiles::new("jwks", vec![jwt_config.jwks_file.clone()]);
                let parse = |files: &[Vec<u8>]| Keys::parse(&files[0]);
                let (keys, read) = files.load(&parse)?;
                let verifier = Arc::new(JwtVerifier::new(jwt_config.clone(), keys));
                let target = verifier.clone();
                tasks.push(
                    files.follow(read, config.reload_interval, parse, move |keys| target.set_keys(keys)),
                );
                Some(verifier)
            }
        };
        let auth = Self { enabled: config.enabled, tokens, jwt, grants: Grants::new(config.grants.clone()) };
        Ok((Arc::new(auth), tasks))
    }

    /// Whether calls must authenticate.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The identity of a call: from its bearer token, else its client certificate.
    pub fn authenticate(&self, headers: &http::HeaderMap, transport: &Transport) -> Result<Identity, Denial> {
        let certificate = match transport {
            Transport::PlaintextOnTlsPort => return Err(Denial::TlsRequired),
            Transport::Tls(ClientCert::Refused(_)) => return Err(Denial::UntrustedCertificate),
            Transport::Tls(ClientCert::Verified(identity)) => Some(identity.clone()),
            Transport::Tls(ClientCert::None) | Transport::Plaintext => None,
        };
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return certificate.map(Identity).ok_or(Denial::NoCredentials);
        };
        if values.next().is_some() {
            return Err(Denial::MalformedCredentials);
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or(Denial::MalformedCredentials)?;
        let looks_like_jwt = token.split('.').count() == 3;
        if looks_like_jwt && let Some(jwt) = &self.jwt {
            return jwt.verify(token).map(Identity).map_err(Denial::Jwt);
        }
        self.tokens
            .as_ref()
            .and_then(|tokens| tokens.identify(token))
            .map(Identity)
            .ok_or(Denial::UnknownToken)
    }

    /// The namespace a call of `identity` runs in when it names none.
    pub fn default_namespace(&self, identity: &Identity) -> Option<&str> {
        self.grants.default_namespace(&identity.0)
    }

    /// Whether `identity` may call a `service` RPC of class `access` in `namespace`.
    pub fn authorize(
        &self,
        identity: &Identity,
        namespace: &str,
        service: Service,
        access: Access,
    ) -> Result<(), Denial> {
        if self.grants.allows(&identity.0, namespace, service, access) {
            Ok(())
        } else if self.grants.any_in(&identity.0, namespace) {
            Err(Denial::AccessNotGranted)
        } else {
            Err(Denial::NamespaceNotGranted)
        }
    }
}
