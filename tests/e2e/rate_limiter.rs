//! The RateLimiter end to end: accuracy of every algorithm under 32 concurrent clients through
//! two replicas, honest `retry_after`, `CheckMany` consuming nothing on a denial, shadow
//! policies, Envoy's rate limit service through envoy's own client types, memory per key, and
//! bad input (including limits beyond what Redis's scripts count exactly).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code as EnvoyCode;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use rookery_client::{Algorithm, RateLimit, RateLimitCheck, RateLimiterClient};
use rookery_server::config::{EnvoyDescriptor, EnvoyDomain, RateLimitAlgorithm, RateLimitPolicy};
use tonic::Code;

use crate::harness::{RedisProcess, TestServer, namespace, shared_redis, test_config};

/// Microseconds since the epoch: Redis runs on this machine, so its clock is this clock.
fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// A decided request: when it was sent and when its answer arrived. Redis decided at some
/// instant in between.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    sent: i64,
    received: i64,
}

/// What hammering a key gave: the admitted requests and the denied ones, in sending order.
struct Hammered {
    admitted: Vec<Admitted>,
    denied: Vec<Admitted>,
}

/// Slack for comparing this process's clock with Redis's (the same clock, read at µs).
const CLOCK_SLACK: i64 = 1_000;

impl Hammered {
    /// Denials that no possible order of decisions explains: requests denied while, whenever in
    /// their round trip Redis decided them, fewer than `limit` admissions can have counted
    /// against them. `counted(a, d)` says whether admission `a` can have counted against the
    /// denied request `d`. On a slow machine round trips are long, so more admissions can have
    /// counted and fewer denials are provably wrong: the check loses power, never turns false.
    fn wrongly_denied(&self, limit: usize, counted: impl Fn(&Admitted, &Admitted) -> bool) -> Vec<Admitted> {
        self.denied
            .iter()
            .filter(|d| self.admitted.iter().filter(|a| counted(a, d)).count() < limit)
            .copied()
            .collect()
    }
}

/// 32 clients through two replicas hammer one key under `limit` for `duration`; returns the
/// admitted and denied requests.
async fn hammer(test: &str, limit: RateLimit, duration: Duration) -> Hammered {
    let config = test_config(&shared_redis().url());
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace(test);
    let limiters = [a.client(&ns).await.rate_limiter(), b.client(&ns).await.rate_limiter()];
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let denied = Arc::new(Mutex::new(Vec::new()));
    let end = now_us() + duration.as_micros() as i64;
    let mut tasks = Vec::new();
    for client in 0..32 {
        let (limiter, limit) = (limiters[client % 2].clone(), limit.clone());
        let (admitted, denied) = (admitted.clone(), denied.clone());
        tasks.push(tokio::spawn(async move {
            while now_us() < end {
                let sent = now_us();
                let decision = limiter.check("hammered", &limit, 1).await.unwrap();
                let decided = Admitted { sent, received: now_us() };
                if decision.allowed {
                    admitted.lock().unwrap().push(decided)
                } else {
                    denied.lock().unwrap().push(decided)
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    shared_redis().assert_no_key_without_ttl(&ns).await;
    let mut admitted = admitted.lock().unwrap().clone();
    admitted.sort_by_key(|a| a.sent);
    let mut denied = denied.lock().unwrap().clone();
    denied.sort_by_key(|a| a.sent);
    Hammered { admitted, denied }
}

/// The most admissions that lie wholly inside any window `[start, start + length)`: each of
/// them was certainly decided in that window.
fn most_certainly_within(admitted: &[Admitted], length: i64) -> usize {
    admitted
        .iter()
        .map(|first| {
            admitted.iter().filter(|a| a.sent >= first.sent && a.received < first.sent + length).count()
        })
        .max()
        .unwrap_or(0)
}

/// The most admissions wholly inside one aligned window of `period`.
fn most_in_an_aligned_window(admitted: &[Admitted], period: i64) -> usize {
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    for a in admitted.iter().filter(|a| a.sent / period == a.received / period) {
        *per_window.entry(a.sent / period).or_default() += 1;
    }
    per_window.into_values().max().unwrap_or(0)
}

const PERIOD: Duration = Duration::from_millis(200);
const RUN: Duration = Duration::from_millis(1200);

fn spec(algorithm: Algorithm, limit: u64, burst: u64) -> RateLimit {
    RateLimit::Spec { algorithm, limit, period: PERIOD, burst }
}

/// Denials of a limit of one per `interval` (GCRA and token bucket with a burst of 1): wrong
/// when every admission that can have come before it was decided at least `interval` earlier.
fn denied_after_a_free_interval(hammered: &Hammered, interval: i64) -> Vec<Admitted> {
    hammered.wrongly_denied(1, |a, d| a.sent <= d.received && a.received + interval + CLOCK_SLACK > d.sent)
}

/// The admitted requests, checked not to be a limiter that simply refuses: some admitted, and
/// no denial that the limit cannot explain (see [`Hammered::wrongly_denied`]).
fn assert_admits(hammered: &Hammered, wrongly_denied: Vec<Admitted>) {
    assert!(!hammered.admitted.is_empty(), "nothing admitted of {} requests", hammered.denied.len());
    assert!(wrongly_denied.is_empty(), "denied with the limit free: {wrongly_denied:?}");
}

#[tokio::test]
async fn gcra_admits_at_most_one_per_emission_interval() {
    // 10 per 200 ms with a burst of 1: one admission per 20 ms emission interval, exactly.
    let hammered = hammer("acc-gcra", spec(Algorithm::Gcra, 10, 1), RUN).await;
    let admitted = &hammered.admitted;
    let interval = PERIOD.as_micros() as i64 / 10;
    // At most one: an admission counts only when its whole round trip fits in the window, so on
    // a slow machine (round trips past 20 ms) none may; what shows the limiter admitting when
    // it should is that no denial came after a free interval.
    assert!(
        most_certainly_within(admitted, interval - 1) <= 1,
        "two admissions within one emission interval"
    );
    assert!(admitted.len() as i64 <= RUN.as_micros() as i64 / interval + 2, "{} admitted", admitted.len());
    assert_admits(&hammered, denied_after_a_free_interval(&hammered, interval));
}

#[tokio::test]
async fn token_bucket_admits_at_most_one_per_refill_interval() {
    let hammered = hammer("acc-bucket", spec(Algorithm::TokenBucket, 10, 1), RUN).await;
    let admitted = &hammered.admitted;
    let interval = PERIOD.as_micros() as i64 / 10;
    // At most one (see the GCRA test for why not exactly one).
    assert!(most_certainly_within(admitted, interval - 1) <= 1, "two admissions within one refill interval");
    assert!(admitted.len() as i64 <= RUN.as_micros() as i64 / interval + 2, "{} admitted", admitted.len());
    assert_admits(&hammered, denied_after_a_free_interval(&hammered, interval));
}

#[tokio::test]
async fn sliding_log_never_exceeds_the_limit_in_any_window() {
    let hammered = hammer("acc-log", spec(Algorithm::SlidingWindowLog, 10, 0), RUN).await;
    let period = PERIOD.as_micros() as i64;
    assert!(most_certainly_within(&hammered.admitted, period) <= 10);
    // A denial is wrong when fewer than 10 admissions can lie in the period before it.
    let wrong = hammered
        .wrongly_denied(10, |a, d| a.sent <= d.received && a.received + period + CLOCK_SLACK > d.sent);
    assert_admits(&hammered, wrong);
}

#[tokio::test]
async fn fixed_window_never_exceeds_the_limit_per_window() {
    let hammered = hammer("acc-fixed", spec(Algorithm::FixedWindow, 10, 0), RUN).await;
    let period = PERIOD.as_micros() as i64;
    assert!(most_in_an_aligned_window(&hammered.admitted, period) <= 10);
    // A denial wholly inside one aligned window is wrong when fewer than 10 admissions can lie
    // in that window. (Near a window's edge, within the clock slack, nothing is judged.)
    let inside = |d: &Admitted| (d.sent - CLOCK_SLACK) / period == (d.received + CLOCK_SLACK) / period;
    let wrong = hammered.wrongly_denied(10, |a, d| {
        let window = d.sent / period;
        !inside(d)
            || (a.received + CLOCK_SLACK >= window * period && a.sent - CLOCK_SLACK < (window + 1) * period)
    });
    assert_admits(&hammered, wrong);
}

#[tokio::test]
async fn sliding_counter_stays_within_its_documented_bound() {
    let hammered = hammer("acc-counter", spec(Algorithm::SlidingWindowCounter, 10, 0), RUN).await;
    let period = PERIOD.as_micros() as i64;
    // Never more than the limit per aligned window, at most twice it in any sliding window.
    assert!(most_in_an_aligned_window(&hammered.admitted, period) <= 10);
    assert!(most_certainly_within(&hammered.admitted, period) <= 20);
    // Its estimate weighs the previous window's count, so which denials are wrong has no exact
    // bound from the outside; it must admit, though.
    assert_admits(&hammered, Vec::new());
}

#[tokio::test]
async fn a_request_sent_after_retry_after_is_allowed() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let limiter = server.client(&namespace("retry-after")).await.rate_limiter();
    for (i, algorithm) in [
        Algorithm::Gcra,
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowLog,
        Algorithm::SlidingWindowCounter,
        Algorithm::FixedWindow,
    ]
    .into_iter()
    .enumerate()
    {
        let limit = RateLimit::Spec { algorithm, limit: 3, period: Duration::from_millis(300), burst: 0 };
        let key = format!("k{i}");
        for round in 0..3 {
            let mut denied = None;
            for _ in 0..10 {
                let decision = limiter.check(&key, &limit, 1).await.unwrap();
                if !decision.allowed {
                    denied = Some(decision);
                    break;
                }
            }
            let denied = denied.unwrap_or_else(|| panic!("{algorithm:?}: never denied"));
            assert!(denied.retry_after > Duration::ZERO, "{algorithm:?}: {denied:?}");
            tokio::time::sleep(denied.retry_after).await;
            let after = limiter.check(&key, &limit, 1).await.unwrap();
            assert!(
                after.allowed,
                "{algorithm:?} round {round}: denied again after retry_after {:?}",
                denied.retry_after
            );
        }
    }
}

#[tokio::test]
async fn check_many_consumes_nothing_when_one_limit_denies() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("check-many");
    let limiter = server.client(&ns).await.rate_limiter();
    let generous = RateLimit::per(10, Duration::from_secs(60));
    let strict = RateLimit::Spec {
        algorithm: Algorithm::FixedWindow,
        limit: 1,
        period: Duration::from_secs(60),
        burst: 0,
    };
    assert!(limiter.check("ip", &strict, 1).await.unwrap().allowed);
    let checks = [
        RateLimitCheck { key: "user".into(), limit: generous.clone(), cost: 3 },
        RateLimitCheck { key: "ip".into(), limit: strict.clone(), cost: 1 },
    ];
    let (allowed, decisions) = limiter.check_many(&checks).await.unwrap();
    assert!(!allowed);
    assert!(decisions[0].allowed && !decisions[1].allowed);
    // The user's limit was not touched: a peek still sees all 10.
    assert_eq!(limiter.check("user", &generous, 0).await.unwrap().remaining, 10);
    // Once both allow, both are consumed.
    limiter.reset("ip").await.unwrap();
    let (allowed, _) = limiter.check_many(&checks).await.unwrap();
    assert!(allowed);
    assert_eq!(limiter.check("user", &generous, 0).await.unwrap().remaining, 7);
    assert!(!limiter.check("ip", &strict, 1).await.unwrap().allowed);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

fn policy(algorithm: RateLimitAlgorithm, limit: u64, period: Duration, shadow: bool) -> RateLimitPolicy {
    RateLimitPolicy { algorithm, limit, period, burst: 0, shadow }
}

#[tokio::test]
async fn shadow_policies_allow_but_count_denials() {
    let mut config = test_config(&shared_redis().url());
    config
        .rate_limiter
        .policies
        .insert("new-login-limit".into(), policy(RateLimitAlgorithm::Gcra, 1, Duration::from_secs(60), true));
    let server = TestServer::start(config).await;
    let limiter = server.client(&namespace("shadow")).await.rate_limiter();
    let shadowed = RateLimit::Policy("new-login-limit".into());
    let first = limiter.check("alice", &shadowed, 1).await.unwrap();
    assert!(first.allowed && !first.shadow_denied);
    let second = limiter.check("alice", &shadowed, 1).await.unwrap();
    assert!(second.allowed, "shadow mode never denies");
    assert!(second.shadow_denied);
    let (_, metrics) = server.admin_get("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("rookery_rate_limit_decisions_total")
                && l.contains("new-login-limit")
                && l.contains("shadow_denied")
        })
        .unwrap_or_else(|| panic!("no shadow denial counted"));
    assert!(
        line.ends_with(" 1") || line.split_whitespace().last().unwrap().parse::<f64>().unwrap() >= 1.0,
        "{line}"
    );
    assert_eq!(
        limiter.check("alice", &RateLimit::Policy("missing".into()), 1).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn envoy_gets_over_limit_exactly_at_the_configured_limit() {
    let mut config = test_config(&shared_redis().url());
    let minute = Duration::from_secs(60);
    config
        .rate_limiter
        .policies
        .insert("per_ip".into(), policy(RateLimitAlgorithm::FixedWindow, 3, minute, false));
    config.rate_limiter.policies.insert("login".into(), policy(RateLimitAlgorithm::Gcra, 100, minute, false));
    config.rate_limiter.envoy.push(EnvoyDomain {
        domain: "edge".into(),
        descriptors: vec![
            EnvoyDescriptor {
                key: "remote_address".into(),
                value: None,
                policy: Some("per_ip".into()),
                descriptors: vec![],
            },
            EnvoyDescriptor {
                key: "path".into(),
                value: Some("/login".into()),
                policy: Some("login".into()),
                descriptors: vec![],
            },
        ],
    });
    let server = TestServer::start(config).await;
    let ns = namespace("envoy");
    let mut envoy = RateLimitServiceClient::connect(server.url()).await.unwrap();
    let descriptor = |entries: &[(&str, &str)]| RateLimitDescriptor {
        entries: entries.iter().map(|(k, v)| Entry { key: (*k).into(), value: (*v).into() }).collect(),
        ..RateLimitDescriptor::default()
    };
    let request = |ip: &str| {
        let mut request = tonic::Request::new(RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![
                descriptor(&[("remote_address", ip)]),
                descriptor(&[("path", "/login")]),
                descriptor(&[("user_agent", "curl")]),
            ],
            hits_addend: 0,
        });
        request.metadata_mut().insert("x-rookery-namespace", ns.parse().unwrap());
        request
    };
    for n in 1..=3 {
        let response = envoy.should_rate_limit(request("10.0.0.1")).await.unwrap().into_inner();
        assert_eq!(response.overall_code, EnvoyCode::Ok as i32, "request {n}");
        let ip = &response.statuses[0];
        assert_eq!(ip.limit_remaining, 3 - n);
        let limit = ip.current_limit.as_ref().unwrap();
        assert_eq!((limit.requests_per_unit, limit.name.as_str()), (3, "per_ip"));
        assert!(response.statuses[2].current_limit.is_none(), "an unconfigured descriptor is not limited");
    }
    let response = envoy.should_rate_limit(request("10.0.0.1")).await.unwrap().into_inner();
    assert_eq!(response.overall_code, EnvoyCode::OverLimit as i32);
    assert_eq!(response.statuses[0].code, EnvoyCode::OverLimit as i32);
    assert_eq!(response.statuses[1].code, EnvoyCode::Ok as i32);
    assert!(response.statuses[0].duration_until_reset.is_some());
    // Another address has its own limit; the denied request consumed nothing from /login.
    let other = envoy.should_rate_limit(request("10.0.0.2")).await.unwrap().into_inner();
    assert_eq!(other.overall_code, EnvoyCode::Ok as i32);
    assert_eq!(other.statuses[1].limit_remaining, 100 - 4);
    let unknown = RateLimitRequest { domain: "nope".into(), ..RateLimitRequest::default() };
    assert_eq!(envoy.should_rate_limit(unknown).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_limits_are_invalid_argument_and_reset_forgets() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("rl-errors");
    let limiter: RateLimiterClient = server.client(&ns).await.rate_limiter();
    let minute = Duration::from_secs(60);
    let code = |r: Result<rookery_client::Decision, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(limiter.check("k", &RateLimit::per(0, minute), 1).await), Code::InvalidArgument);
    assert_eq!(code(limiter.check("k", &RateLimit::per(1, Duration::ZERO), 1).await), Code::InvalidArgument);
    assert_eq!(code(limiter.check("", &RateLimit::per(1, minute), 1).await), Code::InvalidArgument);
    assert_eq!(code(limiter.check("k", &RateLimit::per(5, minute), 6).await), Code::InvalidArgument);
    let big_log =
        RateLimit::Spec { algorithm: Algorithm::SlidingWindowLog, limit: 129, period: minute, burst: 0 };
    assert_eq!(code(limiter.check("k", &big_log, 1).await), Code::InvalidArgument);
    // Reset forgets every algorithm's state of a key.
    let limit = RateLimit::per(1, minute);
    assert!(limiter.check("k", &limit, 1).await.unwrap().allowed);
    assert!(!limiter.check("k", &limit, 1).await.unwrap().allowed);
    assert_eq!(limiter.reset("k").await.unwrap(), 1);
    assert!(limiter.check("k", &limit, 1).await.unwrap().allowed);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn limits_above_2_pow_53_are_refused_and_2_pow_53_is_counted_exactly() {
    const EXACT: u64 = 1 << 53;
    let minute = Duration::from_secs(60);
    // A configured policy above the bound keeps the server from starting, naming the bound.
    let mut config = test_config(&shared_redis().url());
    config.rate_limiter.policies.insert(
        "huge".into(),
        RateLimitPolicy {
            algorithm: RateLimitAlgorithm::Gcra,
            limit: EXACT + 1,
            period: minute,
            burst: 0,
            shadow: false,
        },
    );
    let refused =
        TestServer::try_start(config.clone()).await.err().expect("a policy above 2^53 must not start");
    assert!(refused.to_string().contains("2^53"), "{refused}");
    config.rate_limiter.policies.get_mut("huge").unwrap().limit = EXACT;
    let server = TestServer::start(config).await;
    let ns = namespace("rl-exact");
    let limiter = server.client(&ns).await.rate_limiter();
    let spec = |algorithm, limit, burst| RateLimit::Spec { algorithm, limit, period: minute, burst };
    for algorithm in
        [Algorithm::Gcra, Algorithm::TokenBucket, Algorithm::SlidingWindowCounter, Algorithm::FixedWindow]
    {
        for (limit, burst) in [(EXACT + 1, 0), (u64::MAX, 0)] {
            let status = limiter.check("k", &spec(algorithm, limit, burst), 1).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{algorithm:?} {limit}: {status:?}");
            assert!(status.message().contains("2^53"), "{status:?}");
        }
        assert!(limiter.check("k", &spec(algorithm, EXACT, 0), 1).await.unwrap().allowed, "{algorithm:?}");
    }
    let status = limiter.check("k", &spec(Algorithm::Gcra, 10, EXACT + 1), 1).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("burst must be at most 2^53"), "{status:?}");
    // At the bound the count is exact: one of 2^53 used leaves 2^53 - 1.
    let decision = limiter.check("exact", &spec(Algorithm::FixedWindow, EXACT, 0), 1).await.unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.remaining, EXACT - 1);
    assert!(limiter.check("policy", &RateLimit::Policy("huge".into()), 1).await.unwrap().allowed);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn memory_per_limited_key() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = "m";
    let limiter = server.client(ns).await.rate_limiter();
    let mut conn = shared_redis().conn().await;
    let mut report = Vec::new();
    for (algorithm, suffix) in [
        (Algorithm::Gcra, "g"),
        (Algorithm::TokenBucket, "tb"),
        (Algorithm::SlidingWindowLog, "log"),
        (Algorithm::SlidingWindowCounter, "swc"),
        (Algorithm::FixedWindow, "fw"),
    ] {
        let limit = RateLimit::Spec { algorithm, limit: 100, period: Duration::from_secs(60), burst: 0 };
        let key = format!("u{}", std::process::id() % 1000);
        for _ in 0..100 {
            limiter.check(&key, &limit, 1).await.unwrap();
        }
        let prefix = format!("rk1:{{{ns}:rl:{key}}}:{suffix}:");
        let state =
            shared_redis().keys_of(ns).await.into_iter().find(|k| k.starts_with(&prefix)).expect("state key");
        let bytes: i64 = redis::cmd("MEMORY").arg("USAGE").arg(&state).query_async(&mut conn).await.unwrap();
        report.push(format!("{algorithm:?}: {bytes} B"));
        if algorithm == Algorithm::Gcra {
            assert!(bytes <= 150, "a GCRA key takes {bytes} bytes");
        }
        limiter.reset(&key).await.unwrap();
    }
    println!("MEMORY USAGE per limited key after 100 requests (limit 100): {}", report.join(", "));
}

#[tokio::test]
async fn the_local_cache_denies_a_key_over_its_limit_without_asking_redis() {
    let mut redis = RedisProcess::start(&[]);
    let mut config = test_config(&redis.url());
    config.rate_limiter.local_over_limit_cache = true;
    let server = TestServer::start(config).await;
    let limiter = server.client(&namespace("local-cache")).await.rate_limiter();
    let limit = RateLimit::per(1, Duration::from_secs(60));
    assert!(limiter.check("k", &limit, 1).await.unwrap().allowed);
    let denied = limiter.check("k", &limit, 1).await.unwrap();
    assert!(!denied.allowed);
    // With Redis gone, the key known to be over its limit is still denied (from memory) ...
    redis.kill();
    let cached = limiter.check("k", &limit, 1).await.unwrap();
    assert!(!cached.allowed);
    assert!(cached.retry_after <= denied.retry_after && cached.retry_after > Duration::from_secs(50));
    // ... while anything else needs Redis.
    assert_eq!(limiter.check("other", &limit, 1).await.unwrap_err().code(), Code::Unavailable);
    let other_limit = RateLimit::per(2, Duration::from_secs(60));
    assert_eq!(limiter.check("k", &other_limit, 1).await.unwrap_err().code(), Code::Unavailable);
}

#[tokio::test]
async fn two_limits_on_one_key_keep_separate_state() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("two-limits");
    let limiter = server.client(&ns).await.rate_limiter();
    let per_second = RateLimit::per(3, Duration::from_secs(1));
    let per_hour = RateLimit::per(100, Duration::from_secs(3600));
    // The hourly limit's use does not eat into the per-second one, nor the other way round.
    for _ in 0..3 {
        assert!(limiter.check("user", &per_hour, 1).await.unwrap().allowed);
    }
    for _ in 0..3 {
        assert!(limiter.check("user", &per_second, 1).await.unwrap().allowed);
    }
    assert!(!limiter.check("user", &per_second, 1).await.unwrap().allowed);
    assert_eq!(limiter.check("user", &per_hour, 0).await.unwrap().remaining, 97);
    // The same limit twice in one request is refused rather than half counted.
    let twice = [
        RateLimitCheck { key: "user".into(), limit: per_hour.clone(), cost: 1 },
        RateLimitCheck { key: "user".into(), limit: per_hour.clone(), cost: 1 },
    ];
    assert_eq!(limiter.check_many(&twice).await.unwrap_err().code(), Code::InvalidArgument);
    // Reset forgets both.
    assert_eq!(limiter.reset("user").await.unwrap(), 2);
    assert_eq!(limiter.check("user", &per_hour, 0).await.unwrap().remaining, 100);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}
