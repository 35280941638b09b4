//! Identity, authorization and TLS, end to end: a server with TLS, client certificates, static
//! tokens, JWTs and grants, all made by the tests (`credentials`), driven through the real
//! client crate. Every refusal is checked for its code and for what it does not reveal; the
//! log and `rookery_auth_denied_total` carry the reason.

use std::time::Duration;

use rookery_client::{Client, ConnectOptions, GroupSettings, LockOptions, RateLimit, SessionOptions};
use rookery_server::Config;
use rookery_server::auth::access::Access;
use rookery_server::auth::grants::{Grant, ServiceSelector};
use rookery_server::auth::jwt::JwtConfig;
use rookery_server::tls::{CertIdentity, TlsConfig};
use rustls::pki_types::pem::PemObject;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::credentials::{self, Ca, CertAndKey, Scratch, Signer, spiffe};
use crate::harness::{TestServer, eventually, namespace, shared_redis, test_config};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// One authenticated deployment: its credentials, files and server.
struct Secured {
    ca: Ca,
    files: Scratch,
    team: String,
    other_team: String,
    /// Static tokens by identity.
    reader: String,
    writer: String,
    admin: String,
    cache_only: String,
    es256: Signer,
    eddsa: Signer,
    rs256: Signer,
    server: TestServer,
}

impl Secured {
    async fn start() -> Self {
        let ca = Ca::new("rookery-test-ca");
        let files = Scratch::new("auth");
        let team = namespace("team");
        let other_team = namespace("other");
        let server_cert = ca.server();
        let (es256, eddsa, rs256) = (Signer::es256("k-es"), Signer::eddsa("k-ed"), Signer::rs256("k-rs"));
        let tokens: Vec<(String, String)> = ["reader", "writer", "admin", "cache-only"]
            .iter()
            .map(|identity| (identity.to_string(), credentials::random_token()))
            .collect();
        let tokens_file: String = tokens
            .iter()
            .map(|(identity, token)| {
                format!(
                    "[[token]]\nidentity = \"{identity}\"\nsha256 = \"{}\"\n",
                    credentials::sha256_hex(token)
                )
            })
            .collect();
        let mut config = test_config(&shared_redis().url());
        config.tls = Some(TlsConfig {
            cert_file: files.write("tls.crt", &server_cert.cert),
            key_file: files.write("tls.key", &server_cert.key),
            client_ca_file: Some(files.write("client-ca.crt", ca.pem())),
            require_client_cert: false,
            client_identity: CertIdentity::Spiffe,
            reload_interval: Duration::from_millis(100),
            handshake_timeout: Duration::from_secs(10),
            admin: false,
        });
        config.auth.enabled = true;
        config.auth.reload_interval = Duration::from_millis(100);
        config.auth.tokens_file = Some(files.write("tokens.toml", tokens_file));
        config.auth.jwt = Some(JwtConfig {
            jwks_file: files.write("jwks.json", credentials::jwks(&[&es256, &eddsa, &rs256])),
            issuer: ISSUER.into(),
            audiences: vec!["rookery".into()],
            algorithms: vec![
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::EdDSA,
            ],
            leeway: Duration::from_secs(30),
            identity_claim: "sub".into(),
        });
        let grant =
            |identities: &[&str], access: Access, services: Vec<ServiceSelector>, default: bool| Grant {
                identities: identities.iter().map(|s| s.to_string()).collect(),
                namespaces: vec![team.clone(), format!("{team}-*")],
                access,
                services,
                default_namespace: default.then(|| team.clone()),
            };
        config.auth.grants = vec![
            grant(&["reader"], Access::Read, vec![], false),
            grant(&["writer", "spiffe://rookery.test/team/*"], Access::Write, vec![], true),
            grant(&["admin"], Access::Admin, vec![], false),
            grant(
                &["cache-only"],
                Access::Write,
                vec![ServiceSelector::One(rookery_server::auth::access::Service::Cache)],
                false,
            ),
            grant(&[&format!("system:serviceaccount:{team}:*")], Access::Write, vec![], true),
        ];
        let server = TestServer::start(config).await;
        let token = |name: &str| tokens.iter().find(|(identity, _)| identity == name).unwrap().1.clone();
        Self {
            reader: token("reader"),
            writer: token("writer"),
            admin: token("admin"),
            cache_only: token("cache-only"),
            ca,
            files,
            team,
            other_team,
            es256,
            eddsa,
            rs256,
            server,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.server.addr.port())
    }

    fn tls(&self) -> ConnectOptions {
        ConnectOptions::new().ca_certificate(self.ca.pem()).tls_domain("localhost")
    }

    async fn connect(&self, options: ConnectOptions, namespace: Option<&str>) -> Client {
        let client = Client::connect_with(self.url(), &options).await.expect("TLS connection");
        match namespace {
            Some(ns) => client.with_namespace(ns).unwrap(),
            None => client,
        }
    }

    async fn with_token(&self, token: &str, namespace: &str) -> Client {
        self.connect(self.tls().token(token), Some(namespace)).await
    }

    fn service_account_token(&self, signer: &Signer, name: &str) -> String {
        signer.sign(&credentials::claims(
            ISSUER,
            "rookery",
            &format!("system:serviceaccount:{}:{name}", self.team),
        ))
    }

    async fn denied_count(&self, reason: &str) -> f64 {
        let (_, body) = self.server.admin_get("/metrics").await;
        let prefix = format!("rookery_auth_denied_total{{reason=\"{reason}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// The code of a Cache.Get through `client`.
async fn get_code(client: &Client) -> Code {
    match client.cache().get("k").await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn every_bad_credential_is_unauthenticated_and_says_no_more() {
    let s = Secured::start().await;
    let sa = |signer: &Signer, claims: serde_json::Value| signer.sign(&claims);
    let subject = format!("system:serviceaccount:{}:api", s.team);
    let valid = credentials::claims(ISSUER, "rookery", &subject);
    let with = |field: &str, value: serde_json::Value| {
        let mut claims = valid.clone();
        claims[field] = value;
        claims
    };
    let now = credentials::now();
    let stranger = Signer::es256("k-unknown");
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown static token", credentials::random_token(), "unknown_token"),
        ("expired JWT", sa(&s.es256, with("exp", (now - 3600).into())), "jwt_expired"),
        ("JWT not yet valid", sa(&s.es256, with("nbf", (now + 3600).into())), "jwt_not_yet_valid"),
        ("wrong issuer", sa(&s.es256, with("iss", "https://evil.example".into())), "jwt_issuer"),
        ("wrong audience", sa(&s.es256, with("aud", "vault".into())), "jwt_audience"),
        ("tampered signature", credentials::tampered(&sa(&s.eddsa, valid.clone())), "jwt_signature"),
        ("alg none", credentials::unsigned("k-es", &valid), "jwt_malformed"),
        (
            "HS256 keyed with the RSA public key",
            credentials::hs256("k-rs", &s.rs256.public, &valid),
            "jwt_algorithm",
        ),
        ("unknown kid", stranger.sign(&valid), "jwt_unknown_key"),
    ];
    for (case, token, reason) in cases {
        let before = s.denied_count(reason).await;
        let client = s.with_token(&token, &s.team).await;
        let status = client.cache().get("k").await.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert_eq!(status.message(), "invalid credentials", "{case}: the caller learns no more");
        assert!(s.denied_count(reason).await > before, "{case}: counted as {reason}");
    }

    // No credentials at all.
    let anonymous = s.connect(s.tls(), Some(&s.team)).await;
    let status = anonymous.cache().get("k").await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "credentials required"));

    // A malformed authorization header (not "Bearer <token>"), sent through the raw stub.
    let raw = s.connect(s.tls(), None).await;
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer "] {
        let mut request = tonic::Request::new(rookery_client::pb::CacheGetRequest { key: "k".into() });
        request.metadata_mut().insert("authorization", header.parse().unwrap());
        let status = raw.cache().raw().get(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{header:?}: {status:?}");
    }

    // A client certificate from a CA the server does not trust: the handshake completes, every
    // call is refused.
    let rogue = Ca::new("rogue-ca").client("intruder", vec![spiffe("spiffe://rookery.test/team/api")]);
    let intruder = s.connect(s.tls().client_certificate(rogue.cert, rogue.key), Some(&s.team)).await;
    assert_eq!(get_code(&intruder).await, Code::Unauthenticated);
    // … even with a good token beside it: a bad credential presented is never ignored.
    let rogue = Ca::new("rogue-ca-2").client("intruder", vec![]);
    let mixed =
        s.connect(s.tls().client_certificate(rogue.cert, rogue.key).token(&s.writer), Some(&s.team)).await;
    assert_eq!(get_code(&mixed).await, Code::Unauthenticated);

    // Plaintext to the TLS port: UNAUTHENTICATED with a reason a human can act on; health still
    // answers (probes speak plaintext).
    let plain = Client::connect(format!("http://127.0.0.1:{}", s.server.addr.port())).await.unwrap();
    let status = plain.with_namespace(&s.team).unwrap().cache().get("k").await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "this port requires TLS"));
    let plain = Client::connect(format!("http://127.0.0.1:{}", s.server.addr.port())).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain.channel());
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
}

#[tokio::test]
async fn each_method_yields_an_identity_and_its_default_namespace() {
    let s = Secured::start().await;
    // A static token, naming the namespace.
    let writer = s.with_token(&s.writer, &s.team).await;
    writer.cache().set("from-token", b"1".to_vec(), Duration::from_secs(60)).await.unwrap();
    // JWTs with each allowed algorithm, without a namespace header: the service account's
    // default namespace applies, so they read what the writer wrote in the team's namespace.
    for signer in [&s.es256, &s.eddsa, &s.rs256] {
        let token = s.service_account_token(signer, "api");
        let client = s.connect(s.tls().token(&token), None).await;
        let entry = client.cache().get("from-token").await.unwrap();
        assert_eq!(entry.map(|e| e.value.to_vec()), Some(b"1".to_vec()), "{token:.20}");
    }
    // A client certificate with a SPIFFE ID.
    let cert: CertAndKey = s.ca.client("api", vec![spiffe("spiffe://rookery.test/team/api")]);
    let workload = s.connect(s.tls().client_certificate(cert.cert, cert.key), Some(&s.team)).await;
    assert_eq!(
        workload.cache().get("from-token").await.unwrap().map(|e| e.value.to_vec()),
        Some(b"1".to_vec())
    );
    // A certificate without the configured kind of identity (no SPIFFE URI) names nobody.
    let cert = s.ca.client("cn-only", vec![]);
    let nameless = s.connect(s.tls().client_certificate(cert.cert, cert.key), Some(&s.team)).await;
    assert_eq!(get_code(&nameless).await, Code::Unauthenticated);
    // A token file, as a projected ServiceAccount token is mounted.
    let path = s.files.write("projected-token", s.service_account_token(&s.es256, "worker"));
    let projected = s.connect(s.tls().token_file(&path, Duration::from_secs(60)), None).await;
    assert_eq!(get_code(&projected).await, Code::Ok);
}

#[tokio::test]
async fn grants_decide_every_service_and_class() {
    let s = Secured::start().await;
    let team = s.team.clone();
    let ttl = Duration::from_secs(60);
    let writer = s.with_token(&s.writer, &team).await;
    let reader = s.with_token(&s.reader, &team).await;
    let admin = s.with_token(&s.admin, &team).await;
    let cache_only = s.with_token(&s.cache_only, &team).await;
    let outsider = s.with_token(&s.writer, &s.other_team).await;
    let code = |result: Result<(), tonic::Status>| result.map_or_else(|s| s.code(), |()| Code::Ok);
    let denied = Code::PermissionDenied;

    // Cache: read vs write, and a namespace not granted.
    assert_eq!(code(writer.cache().set("k", b"v".to_vec(), ttl).await.map(drop)), Code::Ok);
    assert_eq!(code(reader.cache().get("k").await.map(drop)), Code::Ok);
    assert_eq!(code(reader.cache().set("k", b"w".to_vec(), ttl).await.map(drop)), denied);
    assert_eq!(code(outsider.cache().get("k").await.map(drop)), denied);
    // A prefix grant covers the team's sub-namespaces.
    let sub = s.with_token(&s.writer, &format!("{team}-jobs")).await;
    assert_eq!(code(sub.cache().set("k", b"v".to_vec(), ttl).await.map(drop)), Code::Ok);

    // Lock.
    let options = LockOptions::new(ttl);
    assert_eq!(code(reader.lock().acquire("l", &options).await.map(drop)), denied);
    assert_eq!(code(reader.lock().inspect("l").await.map(drop)), Code::Ok);
    assert_eq!(code(writer.lock().acquire("l", &options).await.map(drop)), Code::Ok);
    assert_eq!(
        code(cache_only.lock().inspect("l").await.map(drop)),
        denied,
        "a grant covers only its services"
    );
    assert_eq!(code(cache_only.cache().get("k").await.map(drop)), Code::Ok);
    assert_eq!(code(outsider.lock().inspect("l").await.map(drop)), denied);

    // RateLimiter: checking spends quota (write); Reset is admin.
    let limit = RateLimit::per(10, Duration::from_secs(1));
    assert_eq!(code(reader.rate_limiter().check("r", &limit, 1).await.map(drop)), denied);
    assert_eq!(code(writer.rate_limiter().check("r", &limit, 1).await.map(drop)), Code::Ok);
    assert_eq!(code(writer.rate_limiter().reset("r").await.map(drop)), denied);
    assert_eq!(code(admin.rate_limiter().reset("r").await.map(drop)), Code::Ok);

    // Session: ListBySubject and DeleteBySubject are admin.
    let created =
        writer.session().create("ada", Default::default(), &SessionOptions::default()).await.unwrap();
    assert_eq!(code(reader.session().get(&created.id, false).await.map(drop)), Code::Ok);
    assert_eq!(code(reader.session().delete(&created.id).await.map(drop)), denied);
    assert_eq!(code(writer.session().list_by_subject("ada").await.map(drop)), denied);
    assert_eq!(code(writer.session().delete_by_subject("ada").await.map(drop)), denied);
    assert_eq!(code(admin.session().list_by_subject("ada").await.map(drop)), Code::Ok);
    assert_eq!(code(outsider.session().get(&created.id, false).await.map(drop)), denied);

    // Events: DeleteGroup is admin; Subscribe is read, Publish write.
    assert_eq!(code(reader.events().publish("c", b"x".to_vec()).await.map(drop)), denied);
    assert_eq!(code(reader.events().subscribe(["c"], Vec::<String>::new()).await.map(drop)), Code::Ok);
    assert_eq!(
        code(writer.events().create_group("s", "g", "0", GroupSettings::default()).await.map(drop)),
        Code::Ok
    );
    assert_eq!(code(writer.events().delete_group("s", "g").await.map(drop)), denied);
    assert_eq!(code(admin.events().delete_group("s", "g").await.map(drop)), Code::Ok);
    assert_eq!(code(outsider.events().subscribe(["c"], Vec::<String>::new()).await.map(drop)), denied);

    // Reflection answers authenticated callers only.
    let anonymous = s.connect(s.tls(), None).await;
    assert_eq!(reflection_code(&anonymous).await, Code::Unauthenticated);
    assert_eq!(reflection_code(&reader).await, Code::Ok);

    // The refusals said nothing but "permission denied", and were counted by reason.
    let status = outsider.cache().get("k").await.unwrap_err();
    assert_eq!(status.message(), "permission denied");
    assert!(s.denied_count("namespace_not_granted").await >= 1.0);
    assert!(s.denied_count("access_not_granted").await >= 1.0);
    let (_, metrics) = s.server.admin_get("/metrics").await;
    assert!(!metrics.contains("system:serviceaccount"), "no identity in any metric label");
}

/// The code of a reflection ListServices through `client`'s connection and credentials.
async fn reflection_code(client: &Client) -> Code {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_response::MessageResponse};
    let mut reflection = ServerReflectionClient::new(client.intercepted_channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = match reflection.server_reflection_info(tokio_stream::iter([request])).await {
        Ok(response) => response.into_inner(),
        Err(status) => return status.code(),
    };
    match responses.next().await {
        Some(Ok(response)) => {
            assert!(matches!(response.message_response, Some(MessageResponse::ListServicesResponse(_))));
            Code::Ok
        }
        Some(Err(status)) => status.code(),
        None => Code::Unknown,
    }
}

#[tokio::test]
async fn rotation_keeps_open_streams_and_applies_new_credentials() {
    let s = Secured::start().await;
    let team = s.team.clone();
    let writer = s.with_token(&s.writer, &team).await;
    let subscriber = s.with_token(&s.writer, &team).await;
    let mut stream = subscriber.events().subscribe(["news"], Vec::<String>::new()).await.unwrap();
    let old_jwt = s.service_account_token(&s.es256, "api");
    let old_jwt_client = s.connect(s.tls().token(&old_jwt), None).await;
    assert_eq!(get_code(&old_jwt_client).await, Code::Ok);

    // Rotate everything at once: a server certificate from a new CA, a client CA that trusts
    // only the new CA, a JWKS without the ES256 key, and a tokens file without the writer.
    let new_ca = Ca::new("rookery-test-ca-2");
    let new_server = new_ca.server();
    let new_signer = Signer::es256("k-es-2");
    s.files.write("tls.key", &new_server.key);
    s.files.write("tls.crt", &new_server.cert);
    s.files.write("client-ca.crt", new_ca.pem());
    s.files.write("jwks.json", credentials::jwks(&[&new_signer, &s.eddsa]));
    s.files.write(
        "tokens.toml",
        format!("[[token]]\nidentity = \"admin\"\nsha256 = \"{}\"\n", credentials::sha256_hex(&s.admin)),
    );

    // New handshakes present the new certificate (evidence from the server itself).
    let new_tls = ConnectOptions::new().ca_certificate(new_ca.pem()).tls_domain("localhost");
    let url = s.url();
    let rotated = eventually(Duration::from_secs(20), || {
        let (url, options) = (url.clone(), new_tls.clone().token(s.admin.clone()));
        async move { Client::connect_with(url, &options).await.is_ok() }
    })
    .await;
    assert!(rotated, "the new server certificate was never served");
    assert!(
        Client::connect_with(s.url(), &s.tls()).await.is_err(),
        "the old certificate is no longer served"
    );

    // The removed static token and the removed JWKS key are refused; the remaining ones work.
    let refused = eventually(Duration::from_secs(20), || async {
        let client = Client::connect_with(s.url(), &new_tls.clone().token(s.writer.clone())).await.unwrap();
        get_code(&client.with_namespace(&team).unwrap()).await == Code::Unauthenticated
    })
    .await;
    assert!(refused, "the removed token kept working");
    assert_eq!(get_code(&old_jwt_client).await, Code::Unauthenticated, "a JWT whose key left the JWKS");
    let new_jwt = new_signer.sign(&credentials::claims(
        ISSUER,
        "rookery",
        &format!("system:serviceaccount:{team}:api"),
    ));
    let new_jwt_client = Client::connect_with(s.url(), &new_tls.clone().token(new_jwt)).await.unwrap();
    assert_eq!(get_code(&new_jwt_client).await, Code::Ok);

    // Client certificates from the old CA are refused on new connections; the new CA's work.
    let old_cert = s.ca.client("api", vec![spiffe("spiffe://rookery.test/team/api")]);
    let old = Client::connect_with(s.url(), &new_tls.clone().client_certificate(old_cert.cert, old_cert.key))
        .await
        .unwrap();
    assert_eq!(get_code(&old.with_namespace(&team).unwrap()).await, Code::Unauthenticated);
    let new_cert = new_ca.client("api", vec![spiffe("spiffe://rookery.test/team/api")]);
    let new = Client::connect_with(s.url(), &new_tls.clone().client_certificate(new_cert.cert, new_cert.key))
        .await
        .unwrap();
    assert_eq!(get_code(&new.with_namespace(&team).unwrap()).await, Code::Ok);

    // The stream opened before the rotation still delivers: established connections and their
    // streams are untouched (the writer's own token is gone, so an admin publishes).
    let admin = Client::connect_with(s.url(), &new_tls.clone().token(s.admin.clone()))
        .await
        .unwrap()
        .with_namespace(&team)
        .unwrap();
    let delivered = eventually(Duration::from_secs(10), || async {
        admin.events().publish("news", b"after rotation".to_vec()).await.unwrap() > 0
    })
    .await;
    assert!(delivered);
    let message = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.next().await {
                Some(Ok(rookery_client::Event::Message { payload, .. })) => return payload,
                Some(Ok(_)) => continue,
                other => panic!("the open stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the open stream delivered nothing after the rotation");
    assert_eq!(message, &b"after rotation"[..]);
    drop(writer);
}

#[tokio::test]
async fn auth_off_is_refused_on_a_non_loopback_address_unless_allowed() {
    let mut config: Config = test_config(&shared_redis().url());
    config.listen = "0.0.0.0:0".parse().unwrap();
    let error = TestServer::try_start(config.clone()).await.err().expect("refused to start");
    let message = error.to_string();
    assert!(message.contains("allow_unauthenticated") && message.contains("0.0.0.0"), "{message}");
    config.auth.allow_unauthenticated = true;
    let server = TestServer::start(config).await;
    let client = server.client(&namespace("open")).await;
    client.cache().set("k", b"v".to_vec(), Duration::from_secs(5)).await.unwrap();
    // Half-configured auth is refused too: auth on with no way to authenticate, and grants
    // that nothing would check because auth is off.
    let mut config = test_config(&shared_redis().url());
    config.auth.enabled = true;
    let error = TestServer::try_start(config.clone()).await.err().expect("refused to start");
    assert!(error.to_string().contains("no caller could authenticate"), "{error}");
    config.auth.enabled = false;
    config.auth.grants = vec![Grant {
        identities: vec!["ci".into()],
        namespaces: vec!["ci".into()],
        access: Access::Read,
        services: vec![],
        default_namespace: None,
    }];
    let error = TestServer::try_start(config).await.err().expect("refused to start");
    assert!(error.to_string().contains("auth is off"), "{error}");
}

#[tokio::test]
async fn the_admin_listener_can_serve_tls_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let ca = Ca::new("admin-ca");
    let cert = ca.server();
    let files = Scratch::new("admin-tls");
    let mut config = test_config(&shared_redis().url());
    config.tls = Some(TlsConfig {
        cert_file: files.write("tls.crt", &cert.cert),
        key_file: files.write("tls.key", &cert.key),
        client_ca_file: None,
        require_client_cert: false,
        client_identity: CertIdentity::Spiffe,
        reload_interval: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(10),
        admin: true,
    });
    let server = TestServer::start(config).await;

    // HTTPS, HTTP/1.1 (as Prometheus and the kubelet's probes speak it).
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(server.admin).await.unwrap();
    let mut tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.200}");
    assert!(response.contains("rookery_"), "metrics served over TLS");

    // Plaintext HTTP to the TLS admin port gets no answer.
    let mut plain = tokio::net::TcpStream::connect(server.admin).await.unwrap();
    plain.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
}
