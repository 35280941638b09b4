//! JWTs verified against a JWKS: Kubernetes projected ServiceAccount tokens, or any issuer's.
//!
//! Verification is `jsonwebtoken`'s (RustCrypto backend: pure Rust, and only public-key
//! verification runs here), with these rules on top of it, checked before any signature:
//! the header's `alg` must be in `auth.jwt.algorithms`, which admits only public-key
//! algorithms (so `alg: none` and an HS256 token "signed" with a public key are refused); the
//! header must name a `kid` the JWKS has; the key's family, and its own `alg` when it states
//! one, must match the header's. Then the signature, `exp` and `nbf` (with `leeway`), `iss`
//! and `aud` are checked, and the identity is the `identity_claim` (default `sub`, which for a
//! ServiceAccount token is `system:serviceaccount:<namespace>:<name>`).
//!
//! A verified token's verdict is cached until the token expires, keyed by the token itself (a
//! hit compares the whole token; only verified tokens are cached, so no one can fill the cache
//! with tokens of their choosing), so a client sending the same token on every call costs one
//! signature check per token, not per call. Hashing the token with SHA-256 for the key instead
//! cost 1.4 % of the server's CPU at 64 calls in flight; a process that decodes every token from
//! HTTP/2 holds them in memory anyway. A JWKS change empties the cache: a key removed
//! from the set stops its tokens at the next reload. The cache is bounded; when full it drops
//! expired verdicts, and if none had expired, all of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// Most cached verdicts.
const VERDICT_CACHE_ENTRIES: usize = 10_000;

/// JWT authentication (the `[auth.jwt]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The JWKS (JSON Web Key Set) file; re-read when it changes. For Kubernetes, the
    /// cluster's `/openid/v1/jwks`.
    pub jwks_file: PathBuf,
    /// The required `iss` (for Kubernetes, the API server's `--service-account-issuer`).
    pub issuer: String,
    /// Accepted `aud` values; a token must name one.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
    /// Accepted signature algorithms: public-key ones only (RS*, PS*, ES256, ES384, EdDSA).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// The claim holding the identity.
    #[serde(default = "default_identity_claim")]
    pub identity_claim: String,
}

fn default_audiences() -> Vec<String> {
    vec!["rookery".into()]
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_identity_claim() -> String {
    "sub".into()
}

impl JwtConfig {
    /// Checks the settings; `Err` says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.algorithms.is_empty() {
            return Err("algorithms must name at least one algorithm".into());
        }
        if let Some(hmac) = self.algorithms.iter().find(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
        {
            return Err(format!(
                "{hmac:?} is a shared-secret algorithm; only public-key algorithms are accepted"
            ));
        }
        if self.issuer.is_empty() || self.audiences.is_empty() || self.identity_claim.is_empty() {
            return Err("issuer, audiences and identity_claim must not be empty".into());
        }
        if self.leeway > Duration::from_secs(300) {
            return Err("leeway above 5 minutes would accept long-expired tokens".into());
        }
        Ok(())
    }
}

/// Why a JWT was refused; the label is the `reason` of `rookery_auth_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtRejection {
    /// Not a JWT, or a header or claims that do not parse (`alg: none` included).
    Malformed,
    /// An algorithm not in the allow-list, or not the key's.
    Algorithm,
    /// No `kid`, or one the JWKS does not have.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// Past `exp` (plus leeway).
    Expired,
    /// Before `nbf` (minus leeway).
    NotYetValid,
    /// The wrong `iss`.
    Issuer,
    /// No accepted `aud`.
    Audience,
    /// No identity claim, or not a string.
    NoIdentity,
}

impl JwtRejection {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "jwt_malformed",
            Self::Algorithm => "jwt_algorithm",
            Self::UnknownKey => "jwt_unknown_key",
            Self::Signature => "jwt_signature",
            Self::Expired => "jwt_expired",
            Self::NotYetValid => "jwt_not_yet_valid",
            Self::Issuer => "jwt_issuer",
            Self::Audience => "jwt_audience",
            Self::NoIdentity => "jwt_no_identity",
        }
    }
}

/// A JWKS key, by `kid`.
struct Key {
    decoding: DecodingKey,
    /// The key's own `alg`, when the JWKS states one.
    alg: Option<String>,
}

/// The keys in force.
pub struct Keys(HashMap<String, Key>);

impl Keys {
    /// Parses a JWKS document. Keys without a `kid` and symmetric (`oct`) keys are skipped:
    /// a token could not name the one, and the other would let anyone who reads the JWKS sign.
    pub fn parse(contents: &[u8]) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_slice(contents).map_err(|e| format!("JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else { continue };
            if matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let Ok(decoding) = DecodingKey::from_jwk(jwk) else { continue };
            let alg = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
            keys.insert(kid.clone(), Key { decoding, alg });
        }
        if keys.is_empty() {
            return Err("JWKS holds no usable public key with a kid".into());
        }
        Ok(Self(keys))
    }
}

struct Verdict {
    identity: Arc<str>,
    /// Unix seconds after which the verdict no longer holds (`exp` + leeway).
    until: u64,
}

/// Verifies JWTs and caches verdicts.
pub struct JwtVerifier {
    config: JwtConfig,
    keys: RwLock<Arc<Keys>>,
    verdicts: Mutex<HashMap<Box<str>, Verdict>>,
}

impl JwtVerifier {
    /// A verifier with `keys`.
    pub fn new(config: JwtConfig, keys: Keys) -> Self {
        Self { config, keys: RwLock::new(Arc::new(keys)), verdicts: Mutex::default() }
    }

    /// Puts a new key set in force and forgets every cached verdict.
    pub fn set_keys(&self, keys: Keys) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        self.verdicts.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The identity `token` proves, or why it proves none.
    pub fn verify(&self, token: &str) -> Result<Arc<str>, JwtRejection> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(verdict) = self.verdicts.lock().unwrap_or_else(|e| e.into_inner()).get(token)
            && verdict.until >= now
        {
            return Ok(verdict.identity.clone());
        }
        let (identity, exp) = self.verify_uncached(token)?;
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if verdicts.len() >= VERDICT_CACHE_ENTRIES {
            verdicts.retain(|_, v| v.until >= now);
            if verdicts.len() >= VERDICT_CACHE_ENTRIES {
                verdicts.clear();
            }
        }
        verdicts.insert(
            token.into(),
            Verdict { identity: identity.clone(), until: exp + self.config.leeway.as_secs() },
        );
        Ok(identity)
    }

    fn verify_uncached(&self, token: &str) -> Result<(Arc<str>, u64), JwtRejection> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRejection::Malformed)?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(JwtRejection::Algorithm);
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let key = header.kid.as_ref().and_then(|kid| keys.0.get(kid)).ok_or(JwtRejection::UnknownKey)?;
        if key.decoding.family() != header.alg.family()
            || key.alg.as_ref().is_some_and(|alg| *alg != format!("{:?}", header.alg))
        {
            return Err(JwtRejection::Algorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.decoding,
            &validation,
        )
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => JwtRejection::Signature,
            ErrorKind::ExpiredSignature => JwtRejection::Expired,
            ErrorKind::ImmatureSignature => JwtRejection::NotYetValid,
            ErrorKind::InvalidIssuer => JwtRejection::Issuer,
            ErrorKind::InvalidAudience => JwtRejection::Audience,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => JwtRejection::Algorithm,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => JwtRejection::Audience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => JwtRejection::Issuer,
            _ => JwtRejection::Malformed,
        })?;
        let identity = data
            .claims
            .get(&self.config.identity_claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(JwtRejection::NoIdentity)?;
        let exp = data.claims.get("exp").and_then(|v| v.as_u64()).ok_or(JwtRejection::Malformed)?;
        Ok((identity.into(), exp))
    }
}
