//! The server as an operator sees it: Redis failures and recovery, health, reflection,
//! metrics, the eviction-policy guard, graceful shutdown, TLS to Redis, and the bench.

use std::time::Duration;

use rookery_client::bench::{self, BenchConfig, BenchOp};
use rookery_server::ServeError;
use rookery_server::redis::StartupError;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::{RedisProcess, TestServer, eventually, free_port, namespace, shared_redis, test_config};

const MINUTE: Duration = Duration::from_secs(60);

async fn health(server: &TestServer, service: &str) -> Option<ServingStatus> {
    let client = rookery_client::Client::connect(server.url()).await.ok()?;
    let response = HealthClient::new(client.channel())
        .check(HealthCheckRequest { service: service.to_owned() })
        .await
        .ok()?;
    Some(response.into_inner().status())
}

#[tokio::test]
async fn redis_restart_gives_unavailable_then_recovers_without_server_restart() {
    let mut redis = RedisProcess::start(&[]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let ns = namespace("restart");
    let cache = server.client(&ns).await.cache();
    cache.set("k", b"v".to_vec(), MINUTE).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            health(&server, "rookery.v1.Cache").await == Some(ServingStatus::Serving)
        })
        .await
    );

    redis.kill();
    let started = tokio::time::Instant::now();
    let status = cache.get("k").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "failing took {:?}", started.elapsed());
    let status = cache.set("k", b"v".to_vec(), MINUTE).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for service in ["", "rookery.v1.Cache"] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                health(&server, service).await == Some(ServingStatus::NotServing)
            })
            .await,
            "health of {service:?} should follow Redis down"
        );
    }
    let (code, _) = server.admin_get("/healthz").await;
    assert_eq!(code, 503);
    // Liveness does not follow Redis: an outage is no reason to restart the server.
    assert_eq!(health(&server, rookery_server::LIVENESS_SERVICE_NAME).await, Some(ServingStatus::Serving));

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || async {
            cache.set("k", b"again".to_vec(), MINUTE).await.is_ok()
        })
        .await,
        "writes should succeed again once Redis is back"
    );
    // Scripts were lost with the restart; the lease protocol reloads them.
    let fetched = cache.fetch("new", &rookery_client::FetchOptions::default()).await.unwrap();
    assert!(matches!(fetched, rookery_client::Fetched::Fill(_)), "{fetched:?}");
    assert_eq!(cache.get("k").await.unwrap().unwrap().value, &b"again"[..]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            health(&server, "").await == Some(ServingStatus::Serving)
        })
        .await,
        "health should follow Redis back up"
    );
    redis.assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn fetch_waiters_survive_a_pubsub_reconnect() {
    let mut redis = RedisProcess::start(&[]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let ns = namespace("pubsub");
    let cache = server.client(&ns).await.cache();
    // Take Redis down until the Cache reports NOT_SERVING (its subscriber has noticed), then
    // bring it back: SERVING again means the subscriber has re-subscribed, and a fill must
    // wake waiters again.
    redis.kill();
    assert!(
        eventually(Duration::from_secs(10), || async {
            health(&server, "rookery.v1.Cache").await == Some(ServingStatus::NotServing)
        })
        .await
    );
    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || async {
            health(&server, "rookery.v1.Cache").await == Some(ServingStatus::Serving)
        })
        .await
    );
    assert!(eventually(Duration::from_secs(10), || async { cache.get("x").await.is_ok() }).await);
    let options = rookery_client::FetchOptions {
        wait: Some(Duration::from_secs(20)),
        lease_ttl: Some(Duration::from_secs(30)),
        refresh_ahead: None,
    };
    let rookery_client::Fetched::Fill(token) = cache.fetch("k", &options).await.unwrap() else {
        panic!("expected the lease")
    };
    let waiter = {
        let cache = cache.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            (cache.fetch("k", &options).await.unwrap(), started.elapsed())
        })
    };
    server.wait_for_fetch_waiter().await;
    cache
        .fill(
            "k",
            token,
            b"v".to_vec(),
            rookery_client::SetOptions { ttl: Some(MINUTE), ..Default::default() },
        )
        .await
        .unwrap();
    let (outcome, waited) = waiter.await.unwrap();
    assert!(matches!(outcome, rookery_client::Fetched::Hit(_)), "{outcome:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn refuses_to_start_on_an_evicting_redis_unless_told_to() {
    let redis = RedisProcess::start(&["--maxmemory-policy", "allkeys-lru"]);
    let config = test_config(&redis.url());
    match TestServer::try_start(config.clone()).await {
        Err(ServeError::Redis(StartupError::EvictionPolicy { policy })) => assert_eq!(policy, "allkeys-lru"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("the server must refuse an evicting coordination Redis"),
    }
    let mut allowed = config;
    allowed.redis.allow_eviction = true;
    let server = TestServer::start(allowed).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            health(&server, "").await == Some(ServingStatus::Serving)
        })
        .await
    );
}

#[tokio::test]
async fn cache_may_use_its_own_evicting_redis() {
    let cache_redis = RedisProcess::start(&["--maxmemory-policy", "allkeys-lru"]);
    let mut config = test_config(&shared_redis().url());
    config.redis.cache_url = Some(cache_redis.url());
    let server = TestServer::start(config).await;
    let ns = namespace("cache-url");
    let cache = server.client(&ns).await.cache();
    cache.set("k", b"v".to_vec(), MINUTE).await.unwrap();
    assert_eq!(cache_redis.keys_of(&ns).await.len(), 1, "cache keys belong on the cache Redis");
    assert!(shared_redis().keys_of(&ns).await.is_empty());
}

#[tokio::test]
async fn unreachable_redis_fails_start_with_a_clear_error() {
    let mut config = test_config("redis://127.0.0.1:1");
    config.redis.startup_timeout = Duration::from_millis(300);
    let err = TestServer::try_start(config).await.err().expect("must not start");
    let message = err.to_string();
    assert!(message.contains("cannot reach the coordination Redis"), "{message}");
}

#[tokio::test]
async fn health_reflection_and_metrics_are_served() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    // Health follows Redis on its own schedule: every service reports SERVING within a few ticks.
    for service in [
        "",
        rookery_server::CACHE_SERVICE_NAME,
        rookery_server::LOCK_SERVICE_NAME,
        rookery_server::SESSION_SERVICE_NAME,
        rookery_server::RATE_LIMITER_SERVICE_NAME,
        rookery_server::EVENTS_SERVICE_NAME,
        rookery_server::ENVOY_RATE_LIMIT_SERVICE_NAME,
        rookery_server::LIVENESS_SERVICE_NAME,
    ] {
        let serving = eventually(Duration::from_secs(10), || async {
            health(&server, service).await == Some(ServingStatus::Serving)
        })
        .await;
        assert!(serving, "{service:?} is not SERVING");
    }

    // Reflection lists the Cache service, so grpcurl-like tools work.
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = rookery_client::Client::connect(server.url()).await.unwrap().channel();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"rookery.v1.Cache".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    assert!(names.contains(&rookery_server::ENVOY_RATE_LIMIT_SERVICE_NAME.to_owned()), "{names:?}");

    // The older v1alpha, which grpcio-reflection and older grpcurl builds speak, lists the same
    // services and describes Envoy's with every file it imports.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let channel = rookery_client::Client::connect(server.url()).await.unwrap().channel();
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol(rookery_server::ENVOY_RATE_LIMIT_SERVICE_NAME.to_owned()),
        ]
        .map(|message| ServerReflectionRequest { host: String::new(), message_request: Some(message) });
        let mut responses = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("unexpected v1alpha reflection response")
        };
        // Each version lists itself as the reflection service.
        let without_reflection = |names: Vec<String>| -> Vec<String> {
            names.into_iter().filter(|name| !name.starts_with("grpc.reflection.")).collect()
        };
        let alpha_names = list.service.into_iter().map(|s| s.name).collect();
        assert_eq!(
            without_reflection(alpha_names),
            without_reflection(names.clone()),
            "v1alpha lists what v1 does"
        );
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("no file describes Envoy's rate limit service")
        };
        let files: Vec<prost_types::FileDescriptorProto> = files
            .file_descriptor_proto
            .iter()
            .map(|bytes| prost::Message::decode(bytes.as_slice()).unwrap())
            .collect();
        let rls =
            files.iter().find(|f| f.name() == "envoy/service/ratelimit/v3/rls.proto").expect("rls.proto");
        assert_eq!(rls.service[0].name(), "RateLimitService");
        // Tools fetch the imports by name, one by one.
        let imports: Vec<String> =
            rls.dependency.iter().filter(|f| !f.starts_with("google/protobuf/")).cloned().collect();
        assert!(!imports.is_empty());
        let channel = rookery_client::Client::connect(server.url()).await.unwrap().channel();
        let requests = imports.iter().map(|file| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileByFilename(file.clone())),
        });
        let mut responses = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(requests.collect::<Vec<_>>()))
            .await
            .unwrap()
            .into_inner();
        for import in &imports {
            let response = responses.message().await.unwrap().unwrap().message_response;
            assert!(
                matches!(response, Some(MessageResponse::FileDescriptorResponse(_))),
                "rls.proto's import {import} is not served: {response:?}"
            );
        }
    }

    let ns = namespace("metrics");
    let cache = server.client(&ns).await.cache();
    cache.set("k", b"v".to_vec(), MINUTE).await.unwrap();
    cache.get("k").await.unwrap();
    cache.get("missing").await.unwrap();
    let _ = cache.get("").await;
    let (code, body) = server.admin_get("/metrics").await;
    assert_eq!(code, 200);
    for expected in [
        "rookery_rpc_requests_total{method=\"/rookery.v1.Cache/Get\",code=\"Ok\"}",
        "rookery_rpc_requests_total{method=\"/rookery.v1.Cache/Get\",code=\"InvalidArgument\"}",
        "rookery_rpc_duration_seconds_bucket{method=\"/rookery.v1.Cache/Set\"",
        "rookery_redis_command_duration_seconds_bucket{op=\"cache.get\"",
        "rookery_cache_lookups_total{outcome=\"hit\"}",
        "rookery_cache_lookups_total{outcome=\"miss\"}",
        "rookery_redis_connections{redis=\"coordination\"}",
    ] {
        assert!(body.contains(expected), "/metrics lacks {expected}");
    }
    let (code, body) = server.admin_get("/healthz").await;
    assert_eq!((code, body.trim()), (200, "SERVING"));
}

#[tokio::test]
async fn shutdown_ends_waiting_calls_at_once_with_unavailable() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("drain-wait");
    let cache = server.client(&ns).await.cache();
    // A Fetch that would wait 10 s for a fill that never comes.
    let rookery_client::Fetched::Fill(_token) =
        cache.fetch("k", &rookery_client::FetchOptions::default()).await.unwrap()
    else {
        panic!("expected the lease")
    };
    let waiting = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let options =
                rookery_client::FetchOptions { wait: Some(Duration::from_secs(10)), ..Default::default() };
            cache.fetch("k", &options).await
        })
    };
    server.wait_for_fetch_waiter().await;
    let took = server.stop().await;
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let status = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{}", status.message());
}

#[tokio::test]
async fn shutdown_cuts_calls_still_running_after_the_drain_timeout() {
    // A Redis that stops answering (DEBUG SLEEP) leaves a call stuck inside the server.
    let redis = RedisProcess::start(&["--enable-debug-command", "yes"]);
    let mut config = test_config(&redis.url());
    config.redis.command_timeout = Duration::from_secs(30);
    config.shutdown.drain_timeout = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let cache = server.client(&namespace("cut")).await.cache();
    let mut conn = redis.conn().await;
    let sleeper = tokio::spawn(async move {
        let _: Result<(), _> = redis::cmd("DEBUG").arg("SLEEP").arg(5).query_async(&mut conn).await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stuck = tokio::spawn(async move { cache.get("k").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = server.stop().await;
    assert!(took >= Duration::from_millis(450), "shutdown took {took:?}: the call was not in flight");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?} with a stuck call");
    let status = tokio::time::timeout(Duration::from_secs(5), stuck).await.unwrap().unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    sleeper.await.unwrap();
}

#[tokio::test]
async fn bench_drives_the_server_through_the_client() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    for op in [BenchOp::Set, BenchOp::Get] {
        let config = BenchConfig {
            url: server.url(),
            namespace: namespace("bench"),
            options: Default::default(),
            op,
            concurrency: 4,
            duration: Duration::from_millis(400),
            keys: 100,
            value_size: 16,
            connections: 1,
        };
        let report = bench::run(&config).await.unwrap();
        assert!(report.ops > 0, "{op:?}: no operation completed");
        assert_eq!(report.errors, 0, "{op:?}");
        assert!(report.p50 <= report.p99 && report.p99 <= report.p999);
    }
}

/// The fan-out bench and its Redis reference run the same windowed measurement; each counts
/// every message to every subscriber (a shortfall is an error), so both complete only if
/// nothing was lost on the way.
#[tokio::test]
async fn fanout_bench_and_its_redis_reference_deliver_every_message() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let config = BenchConfig {
        url: server.url(),
        namespace: namespace("bench-fanout"),
        options: Default::default(),
        op: BenchOp::FanoutStream,
        concurrency: 4,
        duration: Duration::from_secs(1),
        keys: 100,
        value_size: 100,
        connections: 1,
    };
    let rookery = bench::run(&config).await.unwrap();
    assert!(rookery.ops >= 10, "at least one message to each of the 10 subscribers: {rookery:?}");
    assert_eq!((rookery.errors, rookery.missed), (0, 0));
    let redis = bench::redis_benchmark(&shared_redis().url(), &config, 0).await.unwrap();
    assert!(redis.rps > 0.0 && redis.p50 <= redis.p99, "{redis:?}");
}

#[tokio::test]
async fn redis_out_of_memory_is_resource_exhausted_and_reads_still_work() {
    let redis = RedisProcess::start(&["--maxmemory", "2mb"]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let cache = server.client(&namespace("oom")).await.cache();
    cache.set("kept", b"v".to_vec(), MINUTE).await.unwrap();
    let value = vec![b'x'; 64 * 1024];
    let mut status = None;
    for i in 0..200 {
        if let Err(e) = cache.set(format!("fill:{i}"), value.clone(), MINUTE).await {
            status = Some(e);
            break;
        }
    }
    let status = status.expect("a 2 MB Redis must refuse 12 MB of writes");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("out of memory"), "{}", status.message());
    assert_eq!(cache.get("kept").await.unwrap().unwrap().value, &b"v"[..]);
}

#[tokio::test]
async fn pre_drain_delay_keeps_serving_while_health_says_not_serving() {
    let mut config = test_config(&shared_redis().url());
    config.shutdown.pre_drain_delay = Duration::from_millis(1500);
    let mut server = TestServer::start(config).await;
    let cache = server.client(&namespace("pre-drain")).await.cache();
    let health_client = rookery_client::Client::connect(server.url()).await.unwrap();
    let status = || async {
        HealthClient::new(health_client.channel())
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map(|r| r.into_inner().status())
    };
    server.begin_stop();
    assert!(
        eventually(Duration::from_secs(1), || async {
            status().await.ok() == Some(ServingStatus::NotServing)
        })
        .await
    );
    // Still answering on the open connection while load balancers catch up.
    cache.set("k", b"v".to_vec(), MINUTE).await.unwrap();
    let took = server.stop().await;
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Runs openssl with `args` in `dir`, failing the test if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output =
        std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn talks_to_redis_over_tls_and_verifies_its_certificate() {
    // A private CA, and a certificate for 127.0.0.1 signed by it.
    let dir = std::env::temp_dir().join(format!("rookery-tls-{}-{}", std::process::id(), namespace("tls")));
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=rookery-test-ca",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "redis.crt",
            "-days",
            "1",
            "-extfile",
            "san.cnf",
        ],
    );
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let tls_port = free_port().to_string();
    let _redis = RedisProcess::start(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &path("redis.crt"),
        "--tls-key-file",
        &path("redis.key"),
        "--tls-ca-cert-file",
        &path("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");

    // Trusting the private CA: every service works, pub/sub wake-ups included.
    let mut config = test_config(&url);
    config.redis.tls_ca_file = Some(dir.join("ca.crt"));
    let server = TestServer::start(config).await;
    let client = server.client(&namespace("tls")).await;
    client.cache().set("k", b"over tls".to_vec(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(client.cache().get("k").await.unwrap().unwrap().value, &b"over tls"[..]);
    let lock = client.lock();
    let options = rookery_client::LockOptions::new(Duration::from_secs(30));
    let held = lock.acquire("l", &options).await.unwrap().unwrap();
    let waiter = tokio::spawn({
        let lock = lock.clone();
        let options = options.clone().wait(Duration::from_secs(10));
        async move { lock.acquire("l", &options).await }
    });
    server.wait_for_gauge("rookery_lock_waiting", 1.0).await;
    assert!(lock.release("l", &held.token).await.unwrap());
    let woken =
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken through TLS pub/sub");
    assert!(woken.unwrap().unwrap().is_some());

    // Without the CA, the certificate is refused: the server does not start.
    let mut config = test_config(&url);
    config.redis.startup_timeout = Duration::from_millis(500);
    assert!(TestServer::try_start(config).await.is_err(), "an untrusted certificate was accepted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_client_balanced_over_dns_answers_reach_the_server() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let client =
        rookery_client::Client::connect_balanced("127.0.0.1", server.addr.port(), Duration::from_secs(1))
            .await
            .unwrap()
            .with_namespace(&namespace("balanced"))
            .unwrap();
    let cache = client.cache();
    cache.set("k", b"v".to_vec(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().unwrap().value, &b"v"[..]);
    let unknown =
        rookery_client::Client::connect_balanced("no-such-host.invalid", 1, Duration::from_secs(1)).await;
    assert!(matches!(unknown, Err(rookery_client::Error::Resolve { .. })));
}
