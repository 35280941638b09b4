//! Namespaces as neighbours: each namespace's fair share of a replica (calls in flight, open
//! streams, blocking connections, request rate), the response budget of GetMany, and honest
//! status codes for requests tonic itself rejects.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use rookery_client::{AppendOptions, LockOptions};
use rookery_server::config::Config;
use rookery_server::fair_share::ShareOverride;
use tonic::Code;

use crate::fuzz::{raw_call, raw_call_in};
use crate::harness::{RedisProcess, TestServer, eventually, namespace, shared_redis, test_config};

const MINUTE: Duration = Duration::from_secs(60);

/// One field `f` holding `value`.
fn fields(value: &[u8]) -> HashMap<String, Vec<u8>> {
    [("f".to_owned(), value.to_vec())].into()
}

/// A config whose share override for `ns` gives it its own metric label.
fn config_with_share(ns: &str, share: ShareOverride) -> Config {
    let mut config = test_config(&shared_redis().url());
    config.fair_share.namespaces.insert(ns.to_owned(), share);
    config
}

/// The value of `name{namespace="ns"}` on the server's `/metrics` (0 when absent).
async fn namespace_gauge(server: &TestServer, name: &str, ns: &str) -> f64 {
    let (_, body) = server.admin_get("/metrics").await;
    let prefix = format!("{name}{{namespace=\"{ns}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn calls_over_a_namespaces_share_are_refused_and_other_namespaces_are_unaffected() {
    let noisy = namespace("share-calls");
    let quiet = namespace("share-calls-quiet");
    let share = ShareOverride { max_concurrent_calls: Some(4), ..Default::default() };
    let server = TestServer::start(config_with_share(&noisy, share)).await;
    let noisy_client = server.client(&noisy).await;
    let locks = noisy_client.lock();
    let holder = locks.acquire("l", &LockOptions::new(MINUTE)).await.unwrap().unwrap();

    // Four acquires wait on the held lock: the namespace's whole share, in flight.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let lock = noisy_client.lock();
            tokio::spawn(async move {
                lock.acquire("l", &LockOptions::new(MINUTE).wait(Duration::from_secs(30))).await
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            namespace_gauge(&server, "rookery_namespace_calls_in_flight", &noisy).await >= 4.0
        })
        .await,
        "the waiters never were in flight"
    );

    // At the share: refused, naming the share; another namespace is served as usual.
    let refused = noisy_client.cache().get("k").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("fair_share.max_concurrent_calls"), "{}", refused.message());
    let quiet_cache = server.client(&quiet).await.cache();
    quiet_cache.set("k", b"v".to_vec(), MINUTE).await.unwrap();
    assert_eq!(quiet_cache.get("k").await.unwrap().unwrap().value, &b"v"[..]);

    // The waiters give up (their calls are cancelled): the share is given back.
    for waiter in &waiters {
        waiter.abort();
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            namespace_gauge(&server, "rookery_namespace_calls_in_flight", &noisy).await == 0.0
        })
        .await
    );
    assert!(noisy_client.cache().get("k").await.is_ok());
    assert!(locks.release("l", &holder.token).await.unwrap());
    let (_, metrics) = server.admin_get("/metrics").await;
    let refusals = format!("rookery_namespace_refused_total{{namespace=\"{noisy}\",share=\"calls\"}} 1");
    assert!(metrics.contains(&refusals), "no {refusals} in /metrics");
}

#[tokio::test]
async fn streams_over_a_namespaces_share_are_refused_until_one_closes() {
    let noisy = namespace("share-streams");
    let quiet = namespace("share-streams-quiet");
    let share = ShareOverride { max_open_streams: Some(3), ..Default::default() };
    let server = TestServer::start(config_with_share(&noisy, share)).await;
    let events = server.client(&noisy).await.events();
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(events.subscribe([format!("c{i}")], Vec::<String>::new()).await.unwrap());
    }
    let refused = events.subscribe(["c9"], Vec::<String>::new()).await.err().expect("a fourth stream");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("fair_share.max_open_streams"), "{}", refused.message());
    // Unary calls are another share: still served.
    events.publish("c0", b"x".to_vec()).await.unwrap();
    let quiet_events = server.client(&quiet).await.events();
    let _quiet_stream = quiet_events.subscribe(["c0"], Vec::<String>::new()).await.unwrap();

    drop(open.pop());
    assert!(
        eventually(Duration::from_secs(10), || async {
            namespace_gauge(&server, "rookery_namespace_open_streams", &noisy).await == 2.0
        })
        .await,
        "a closed stream never gave its share back"
    );
    let mut again = events.subscribe(["c9"], Vec::<String>::new()).await.unwrap();
    events.publish("c9", b"y".to_vec()).await.unwrap();
    assert!(matches!(again.next().await, Some(Ok(rookery_client::Event::Message { .. }))));
}

#[tokio::test]
async fn a_namespace_over_its_request_rate_is_refused_with_the_time_to_wait() {
    let noisy = namespace("share-rate");
    let share = ShareOverride { requests_per_second: Some(1), burst: Some(2), ..Default::default() };
    let server = TestServer::start(config_with_share(&noisy, share)).await;
    let cache = server.client(&noisy).await.cache();
    let started = tokio::time::Instant::now();
    let results = futures::future::join_all((0..20).map(|_| cache.get("k"))).await;
    let elapsed = started.elapsed();
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    // GCRA: at most 1 + burst at once, then one per second, however slow the machine.
    assert!(admitted as f64 <= 3.0 + elapsed.as_secs_f64().ceil(), "{admitted} admitted in {elapsed:?}");
    assert!(!refused.is_empty() || elapsed > Duration::from_secs(17));
    for status in refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("fair_share.requests_per_second"), "{}", status.message());
        assert!(status.message().contains("retry after"), "{}", status.message());
    }
    // Other namespaces have no rate bound by default.
    let other = server.client(&namespace("share-rate-other")).await.cache();
    for _ in 0..20 {
        other.get("k").await.unwrap();
    }
}

#[tokio::test]
async fn followers_over_the_blocking_share_poll_and_still_deliver() {
    let noisy = namespace("share-blocking");
    let share = ShareOverride { max_blocking_connections: Some(1), ..Default::default() };
    let mut config = config_with_share(&noisy, share);
    let quiet = namespace("share-blocking-quiet");
    config.fair_share.namespaces.insert(quiet.clone(), ShareOverride::default());
    let server = TestServer::start(config).await;
    let events = server.client(&noisy).await.events();
    let mut followers = Vec::new();
    for _ in 0..3 {
        followers.push(events.read("s", "$", true).await.unwrap());
    }
    let quiet_events = server.client(&quiet).await.events();
    let mut quiet_follower = quiet_events.read("s", "$", true).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            namespace_gauge(&server, "rookery_namespace_blocking_connections", &noisy).await == 1.0
                && namespace_gauge(&server, "rookery_namespace_blocking_connections", &quiet).await == 1.0
        })
        .await,
        "the noisy namespace should hold exactly its one blocking connection, the quiet one its own"
    );
    // Never more than the share, and every follower still gets what is appended.
    events.append("s", fields(b"v"), &AppendOptions::default()).await.unwrap();
    for follower in &mut followers {
        let batch = tokio::time::timeout(MINUTE, follower.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(batch.len(), 1);
    }
    assert!(namespace_gauge(&server, "rookery_namespace_blocking_connections", &noisy).await <= 1.0);
    quiet_events.append("s", fields(b"q"), &AppendOptions::default()).await.unwrap();
    let batch = tokio::time::timeout(MINUTE, quiet_follower.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(batch[0].fields["f"], b"q");
}

/// A server whose response budget is exactly 200,000 bytes, on its own Redis (so Redis's
/// output counter is this test's alone).
async fn budget_server() -> (RedisProcess, TestServer) {
    let redis = RedisProcess::start(&[]);
    let mut config = test_config(&redis.url());
    config.limits.max_value_bytes = 150_000;
    config.limits.max_response_bytes = Some(200_000);
    let server = TestServer::start(config).await;
    (redis, server)
}

/// Redis's `total_net_output_bytes`.
async fn redis_output_bytes(redis: &RedisProcess) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut redis.conn().await).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("total_net_output_bytes:")).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn get_many_answers_up_to_its_budget_and_refuses_one_byte_more_without_reading_it() {
    let (redis, server) = budget_server().await;
    let cache = server.client(&namespace("budget")).await.cache();
    // Four values and their framing (32 bytes each) fill the budget exactly.
    let at_limit = (200_000 - 4 * 32) / 4;
    for key in ["a", "b", "c"] {
        cache.set(key, vec![7; at_limit], MINUTE).await.unwrap();
    }
    cache.set("d", vec![8; at_limit], MINUTE).await.unwrap();
    let values = cache.get_many(["a", "b", "c", "d", "missing"]).await;
    // Five lookups: the missing key's framing takes the budget over.
    let refused = values.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let values = cache.get_many(["a", "b", "c", "d"]).await.unwrap();
    assert!(values.iter().all(|v| v.as_ref().unwrap().value.len() == at_limit));
    assert_eq!(values[3].as_ref().unwrap().value[0], 8);
    // A key named four times is read once and answered four times, within the budget.
    let copies = cache.get_many(["a", "a", "a", "a"]).await.unwrap();
    assert_eq!(copies.len(), 4);

    // One byte more: refused with the budget's name, and the values were never read.
    cache.set("d", vec![8; at_limit + 1], MINUTE).await.unwrap();
    let before = redis_output_bytes(&redis).await;
    let refused = cache.get_many(["a", "b", "c", "d"]).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("limits.max_response_bytes"), "{}", refused.message());
    assert!(refused.message().contains("fewer keys"), "{}", refused.message());
    // The budget, plus RESP framing and the INFO reply that measured it.
    let read = redis_output_bytes(&redis).await - before;
    assert!(read <= 200_000 + 4096, "Redis sent {read} bytes for a refused GetMany");
}

#[tokio::test]
async fn amplified_get_many_costs_no_more_than_its_budget() {
    let (redis, server) = budget_server().await;
    let cache = server.client(&namespace("amplified")).await.cache();
    cache.set("big", vec![1; 150_000], MINUTE).await.unwrap();
    let before = redis_output_bytes(&redis).await;
    // 1,000 copies of a 150 KB value would be 150 MB: refused after reading at most the budget.
    let refused = cache.get_many(vec!["big"; 1000]).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let read = redis_output_bytes(&redis).await - before;
    assert!(read < 200_000, "Redis sent {read} bytes for a refused amplified GetMany");
    // Five values within every per-value limit but over the budget together: a clear refusal,
    // not a message the transport cannot carry.
    for key in ["v1", "v2", "v3", "v4", "v5"] {
        cache.set(key, vec![2; 60_000], MINUTE).await.unwrap();
    }
    let refused = cache.get_many(["v1", "v2", "v3", "v4", "v5"]).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(cache.get_many(["v1", "v2", "v3"]).await.unwrap().len(), 3);
}

#[tokio::test]
async fn undecodable_and_oversized_requests_get_the_tables_codes() {
    let mut config = test_config(&shared_redis().url());
    config.limits.max_value_bytes = 1024;
    config.limits.max_message_bytes = 70_000;
    let server = TestServer::start(config).await;
    let channel = server.client("default").await.channel();
    // Field 1 with wire type 7 (no such type).
    let status = raw_call(&channel, "/rookery.v1.Cache/Get", vec![0x0f, 0x01]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // `key` (field 1, a string) holding bytes that are not UTF-8.
    let status = raw_call(&channel, "/rookery.v1.Cache/Get", vec![0x0a, 0x02, 0xff, 0xfe]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{}", status.message());
    // The same in a server-streaming call.
    let status =
        raw_call(&channel, "/rookery.v1.Events/Subscribe", vec![0x0a, 0x01, 0xc3]).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // Over limits.max_message_bytes.
    let status = raw_call(&channel, "/rookery.v1.Cache/Set", vec![0; 100_000]).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limits.max_message_bytes"), "{}", status.message());
    // A namespace header that is no namespace.
    let status = raw_call_in(&channel, "/rookery.v1.Cache/Get", vec![0x0a, 0x01, b'k'], Some("a:b"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("x-rookery-namespace"), "{}", status.message());
}

/// The p99 of `latencies`.
fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// One round of what a quiet namespace does, each call timed: Cache.Get, Lock.Acquire +
/// Release, RateLimiter.Check, and an Append whose delivery is acked (the Ack timed).
struct QuietTenant {
    client: rookery_client::Client,
    consumer: rookery_client::Consumer,
    latencies: HashMap<&'static str, Vec<Duration>>,
    errors: Vec<String>,
}

impl QuietTenant {
    async fn round(&mut self) {
        let timed =
            |latencies: &mut HashMap<&'static str, Vec<Duration>>, op, started: tokio::time::Instant| {
                latencies.entry(op).or_default().push(started.elapsed());
            };
        let (cache, locks, limiter, events) =
            (self.client.cache(), self.client.lock(), self.client.rate_limiter(), self.client.events());
        let started = tokio::time::Instant::now();
        match cache.get("k").await {
            Ok(Some(_)) => timed(&mut self.latencies, "get", started),
            other => self.errors.push(format!("get: {other:?}")),
        }
        let started = tokio::time::Instant::now();
        match locks.acquire("quiet", &LockOptions::new(MINUTE)).await {
            Ok(Some(lease)) => match locks.release("quiet", lease.token).await {
                Ok(true) => timed(&mut self.latencies, "acquire+release", started),
                other => self.errors.push(format!("release: {other:?}")),
            },
            other => self.errors.push(format!("acquire: {other:?}")),
        }
        let started = tokio::time::Instant::now();
        match limiter.check("quiet", &rookery_client::RateLimit::per(1_000_000, MINUTE), 1).await {
            Ok(decision) if decision.allowed => timed(&mut self.latencies, "check", started),
            other => self.errors.push(format!("check: {other:?}")),
        }
        if let Err(e) = events.append("quiet", fields(b"q"), &AppendOptions::default()).await {
            self.errors.push(format!("append: {e:?}"));
            return;
        }
        let delivered = match tokio::time::timeout(MINUTE, self.consumer.next()).await {
            Ok(Some(Ok(deliveries))) => deliveries,
            other => {
                self.errors.push(format!("consume: {other:?}"));
                return;
            }
        };
        let started = tokio::time::Instant::now();
        match self.consumer.ack(delivered.entries.iter().map(|d| d.id.clone())).await {
            Ok(n) if n as usize == delivered.entries.len() => timed(&mut self.latencies, "ack", started),
            other => self.errors.push(format!("ack: {other:?}")),
        }
    }

    async fn rounds(&mut self, n: usize) -> HashMap<&'static str, Duration> {
        self.latencies.clear();
        for _ in 0..n {
            self.round().await;
        }
        self.latencies.iter_mut().map(|(op, latencies)| (*op, p99(latencies))).collect()
    }
}

/// A namespace doing the worst its share allows until `stop`: amplified and oversized
/// batches, a flood of writes, appends to far more streams than its cap, subscriptions past
/// its stream share and followers past its blocking share. Says how many of its 400
/// subscriptions were refused once they are all asked for.
async fn noisy_tenant(
    url: String,
    ns: String,
    stop: tokio::sync::watch::Receiver<bool>,
    started: tokio::sync::oneshot::Sender<usize>,
) {
    let client = rookery_client::Client::connect(url).await.unwrap().with_namespace(&ns).unwrap();
    client.cache().set("big", vec![1; 1024 * 1024], MINUTE).await.unwrap();
    for i in 0..5 {
        client.cache().set(format!("v{i}"), vec![2; 1024 * 1024], MINUTE).await.unwrap();
    }
    let mut load = Vec::new();
    for worker in 0..8 {
        let (cache, stop) = (client.cache(), stop.clone());
        load.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let keys: Vec<String> = if worker % 2 == 0 {
                    vec!["big".into(); 1000]
                } else {
                    (0..5).map(|i| format!("v{i}")).collect()
                };
                let _ = cache.get_many(keys).await;
            }
        }));
    }
    for worker in 0..16 {
        let (cache, stop) = (client.cache(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !*stop.borrow() {
                let _ = cache.set(format!("flood:{worker}:{i}"), vec![3; 10_000], MINUTE).await;
                i += 1;
            }
        }));
    }
    {
        let (events, stop) = (client.events(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !*stop.borrow() {
                let _ =
                    events.append(format!("s{}", i % 1000), fields(b"n"), &AppendOptions::default()).await;
                i += 1;
            }
        }));
    }
    let events = client.events();
    let mut subscriptions = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        match events.subscribe([format!("c{i}")], Vec::<String>::new()).await {
            Ok(stream) => subscriptions.push(stream),
            Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
            Err(status) => panic!("subscribe: {status:?}"),
        }
    }
    let mut followers = Vec::new();
    for i in 0..8 {
        if let Ok(follower) = events.read(format!("f{i}"), "$", true).await {
            followers.push(follower);
        }
    }
    let _ = started.send(refused);
    for task in load {
        task.await.unwrap();
    }
}

/// The server's resident memory, as it exports it.
async fn server_rss(server: &TestServer) -> f64 {
    let (_, body) = server.admin_get("/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_namespace_doing_its_worst_leaves_a_quiet_one_unharmed() {
    let redis = RedisProcess::start(&[]);
    let noisy = namespace("noisy");
    let quiet = namespace("quiet");
    let mut config = test_config(&redis.url());
    config.redis.command_timeout = Duration::from_secs(5);
    config.fair_share.namespaces.insert(
        noisy.clone(),
        ShareOverride {
            max_concurrent_calls: Some(16),
            max_open_streams: Some(300),
            max_blocking_connections: Some(4),
            requests_per_second: Some(2000),
            burst: Some(200),
        },
    );
    config.events.max_streams_per_namespace = 100;
    let server = TestServer::start(config).await;

    let quiet_client = server.client(&quiet).await;
    // Lives as long as any run of this test may take, slow machines included.
    quiet_client.cache().set("k", b"v".to_vec(), Duration::from_secs(3600)).await.unwrap();
    let consume = rookery_client::ConsumeOptions { create_group: true, ..Default::default() };
    let consumer = quiet_client.events().consume("quiet", "g", "c", &consume).await.unwrap();
    // A lock the quiet namespace holds throughout: its renewals must keep succeeding. Its TTL
    // (renewed every third of it) leaves a loaded machine room: a holder that hears nothing for
    // TTL less the safety margin stops trusting its lock, whatever the noisy namespace does.
    let held =
        quiet_client.lock().hold("held", &LockOptions::new(Duration::from_secs(3))).await.unwrap().unwrap();
    let mut tenant =
        QuietTenant { client: quiet_client, consumer, latencies: HashMap::new(), errors: Vec::new() };
    tenant.rounds(20).await; // warm-up
    let quiet_p99 = tenant.rounds(200).await;
    let rss_before = server_rss(&server).await;

    // The noisy namespace, at the worst its share allows, for as long as the quiet one
    // measures. It runs on a runtime of its own, as a separate client would, so that its tasks
    // do not queue the quiet client's own tasks behind theirs.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let noisy_thread = {
        let (url, noisy) = (server.url(), noisy.clone());
        std::thread::spawn(move || {
            // The noisy tenant's client would run on its own machine; here it shares the cores,
            // so it yields them to the server, Redis and the quiet client (renice, as root).
            if let Ok(me) = std::fs::read_link("/proc/thread-self")
                && let Some(tid) = me.file_name().and_then(|t| t.to_str())
            {
                let _ = std::process::Command::new("renice")
                    .args(["-n", "19", "-p", tid])
                    .stdout(std::process::Stdio::null())
                    .status();
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(noisy_tenant(url, noisy, stop, started_tx))
        })
    };
    let refused_streams = started.await.unwrap();
    assert!(refused_streams >= 100, "only {refused_streams} of 400 streams over a share of 300 were refused");

    let noisy_p99 = tenant.rounds(200).await;
    let rss_during = server_rss(&server).await;
    stop_tx.send_replace(true);
    tokio::task::spawn_blocking(move || noisy_thread.join().unwrap()).await.unwrap();

    eprintln!(
        "quiet p99 {quiet_p99:?}; under the noisy load {noisy_p99:?}; rss {rss_before} -> {rss_during}"
    );
    assert!(
        tenant.errors.is_empty(),
        "the quiet namespace saw {} errors, first: {:?}",
        tenant.errors.len(),
        &tenant.errors[..tenant.errors.len().min(3)]
    );
    assert!(held.is_held(), "the quiet namespace's held lock was lost under the noisy load");
    for (op, quiet) in &quiet_p99 {
        let noisy = noisy_p99[op];
        // 5x the quiet p99. On a 2-core machine the server's work for the noisy calls (its
        // refusals included) and the rest of the test suite share the cores with Redis and the
        // quiet calls, so those also wait for CPU (measured alone: p99 2-4 ms quiet, 9-22 ms
        // under the load, 5-7x); anything under 250 ms counts as unharmed. The failures this
        // guards against were 2 s stalls and errors; Redis-side stalls are bounded more tightly
        // by `redis_work`.
        let bound = (*quiet * 5).max(Duration::from_millis(250));
        assert!(noisy <= bound, "{op}: p99 {noisy:?} under load vs {quiet:?} quiet (bound {bound:?})");
    }
    // Amplified reads are refused before they are read, so the server never holds their values.
    let grown = (rss_during - rss_before) / 1e6;
    // (The bound leaves room for the other tests running in this process meanwhile.)
    assert!(grown < 512.0, "server memory grew {grown:.0} MB under the noisy load");
}
