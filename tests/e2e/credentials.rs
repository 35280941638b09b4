//! Credentials the auth tests make for themselves: certificate authorities, server and client
//! certificates (rcgen), JWT signing keys for RS256, ES256 and EdDSA with their JWKS, static
//! tokens and their hashes, and a scratch directory for the files the server reads.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair, SanType,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain and its key, in PEM.
#[derive(Clone)]
pub struct CertAndKey {
    /// The certificate (PEM).
    pub cert: String,
    /// Its private key (PKCS#8 PEM).
    pub key: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// The CA's certificate (PEM), for trust bundles.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> CertAndKey {
        self.issue(
            "rookery-server",
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ],
        )
    }

    /// A client certificate with common name `cn` and the given subject alternative names.
    pub fn client(&self, cn: &str, sans: Vec<SanType>) -> CertAndKey {
        self.issue(cn, sans)
    }

    fn issue(&self, cn: &str, sans: Vec<SanType>) -> CertAndKey {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        CertAndKey { cert: cert.pem(), key: key.serialize_pem() }
    }
}

/// A SPIFFE ID as a URI SAN.
pub fn spiffe(id: &str) -> SanType {
    SanType::URI(id.try_into().unwrap())
}

/// A JWT signing key with its `kid`, and its public half as a JWK.
pub struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
    /// The public key's bytes, for the "HMAC keyed with the public key" attack.
    pub public: Vec<u8>,
}

impl Signer {
    /// A new P-256 key (ES256).
    pub fn es256(kid: &str) -> Self {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw().to_vec();
        // Uncompressed point: 0x04 || x || y.
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..])});
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk,
            public: raw,
        }
    }

    /// A new Ed25519 key (EdDSA).
    pub fn eddsa(kid: &str) -> Self {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let raw = pair.public_key_raw().to_vec();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw)});
        let key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
        Self { kid: kid.into(), alg: Algorithm::EdDSA, key, jwk, public: raw }
    }

    /// An RSA-2048 key (RS256). Generating one is slow, so the tests share one.
    pub fn rs256(kid: &str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::EncodePublicKey;
        static KEY: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
        let (der, public) = KEY.get_or_init(|| {
            let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
            let public = private.to_public_key().to_public_key_der().unwrap().as_bytes().to_vec();
            (private.to_pkcs1_der().unwrap().as_bytes().to_vec(), public)
        });
        let key = EncodingKey::from_rsa_der(der);
        let mut jwk =
            serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap())
                .unwrap();
        jwk["kid"] = json!(kid);
        Self { kid: kid.into(), alg: Algorithm::RS256, key, jwk, public: public.clone() }
    }

    /// Signs `claims` with this key, naming its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    /// This key as a JWK.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }
}

/// A JWKS document of `signers`' public keys.
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims valid for an hour from `issuer` to `audience`, for `subject`.
pub fn claims(issuer: &str, audience: &str, subject: &str) -> Value {
    json!({"iss": issuer, "aud": audience, "sub": subject, "iat": now(), "nbf": now() - 5, "exp": now() + 3600})
}

/// An unsigned token (`alg: none`) naming `kid`.
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// An HS256 token whose HMAC key is `secret` (an attacker's use of a public key).
pub fn hs256(kid: &str, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

/// The token with one signature character changed.
pub fn tampered(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let at = token.rfind('.').unwrap() + 5;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

/// `sha256(token)` in hex, as `auth.tokens` wants it.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A random token.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A scratch directory, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new empty directory.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "rookery-{name}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `file` (atomically: a reader never sees half a file) and returns its path.
    pub fn write(&self, file: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(file);
        let partial = self.0.join(format!(".{file}.partial"));
        std::fs::write(&partial, contents).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
