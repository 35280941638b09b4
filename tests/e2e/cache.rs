//! The Cache service end to end: every RPC's behaviour and errors, namespaces, glob-safe
//! invalidation, the lease protocol, and the stampede across two server replicas.

use std::time::Duration;

use rookery_client::{
    CacheClient, Client, FetchOptions, Fetched, GetOrLoadError, LoadOptions, SetCondition, SetOptions,
};
use tonic::Code;

use crate::harness::{TestServer, namespace, shared_redis, stampede, test_config};

const MINUTE: Duration = Duration::from_secs(60);

/// A server on the shared Redis and a cache client in a fresh namespace.
async fn setup(test: &str) -> (TestServer, CacheClient, String) {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace(test);
    let cache = server.client(&ns).await.cache();
    (server, cache, ns)
}

fn opts(ttl: Duration) -> SetOptions {
    SetOptions { ttl: Some(ttl), ..SetOptions::default() }
}

#[tokio::test]
async fn set_then_get_returns_value_and_remaining_ttl() {
    let (_server, cache, ns) = setup("get").await;
    assert_eq!(cache.get("missing").await.unwrap(), None);
    assert!(cache.set("k", b"v1".to_vec(), MINUTE).await.unwrap());
    let entry = cache.get("k").await.unwrap().expect("hit");
    assert_eq!(entry.value, &b"v1"[..]);
    let ttl = entry.ttl.expect("ttl reported");
    assert!(ttl <= MINUTE && ttl > Duration::from_secs(55), "{ttl:?}");
    // Binary values come back byte for byte.
    let binary: Vec<u8> = (0..=255).collect();
    cache.set("bin", binary.clone(), MINUTE).await.unwrap();
    assert_eq!(cache.get("bin").await.unwrap().unwrap().value, binary);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn conditions_decide_whether_a_write_happens() {
    let (_server, cache, ns) = setup("cond").await;
    let with = |condition| SetOptions { ttl: Some(MINUTE), condition, ..SetOptions::default() };
    assert!(!cache.set_with("k", b"x".to_vec(), with(SetCondition::IfPresent)).await.unwrap());
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert!(cache.set_with("k", b"a".to_vec(), with(SetCondition::IfAbsent)).await.unwrap());
    assert!(!cache.set_with("k", b"b".to_vec(), with(SetCondition::IfAbsent)).await.unwrap());
    assert_eq!(cache.get("k").await.unwrap().unwrap().value, &b"a"[..]);
    assert!(cache.set_with("k", b"c".to_vec(), with(SetCondition::IfPresent)).await.unwrap());
    assert_eq!(cache.get("k").await.unwrap().unwrap().value, &b"c"[..]);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn ttl_jitter_spreads_expiry_within_bounds() {
    let (_server, cache, ns) = setup("jitter").await;
    let options =
        SetOptions { ttl: Some(MINUTE), ttl_jitter: Some(Duration::from_secs(30)), ..SetOptions::default() };
    let keys: Vec<String> = (0..40).map(|i| format!("j{i}")).collect();
    cache.set_many(keys.iter().map(|k| (k.clone(), b"v".to_vec())), options).await.unwrap();
    let mut ttls: Vec<u64> = Vec::new();
    for entry in cache.get_many(keys.clone()).await.unwrap() {
        let ttl = entry.unwrap().ttl.unwrap();
        assert!(ttl <= Duration::from_secs(90) && ttl > Duration::from_secs(55), "{ttl:?}");
        ttls.push(ttl.as_secs());
    }
    ttls.sort_unstable();
    ttls.dedup();
    assert!(ttls.len() > 5, "jitter should spread 40 TTLs over 30 s, got {ttls:?}");
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_with_a_useful_message() {
    let (server, cache, _ns) = setup("invalid").await;
    let code_and_message = |r: Result<bool, tonic::Status>| {
        let status = r.unwrap_err();
        (status.code(), status.message().to_owned())
    };
    let (code, message) = code_and_message(cache.set("", b"v".to_vec(), MINUTE).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("key"), "{message}");

    let (code, message) = code_and_message(cache.set("big", vec![0; 1024 * 1024 + 1], MINUTE).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("max_value_bytes"), "{message}");

    let (code, message) = code_and_message(cache.set("k", b"v".to_vec(), Duration::ZERO).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("ttl"), "{message}");

    let (code, message) = code_and_message(cache.set_with("k", b"v".to_vec(), SetOptions::default()).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("ttl is required"), "{message}");

    let (code, _) = code_and_message(cache.set("x".repeat(513), b"v".to_vec(), MINUTE).await);
    assert_eq!(code, Code::InvalidArgument);

    // A negative TTL through the raw stub.
    let status = cache
        .raw()
        .set(rookery_client::pb::CacheSetRequest {
            key: "k".into(),
            value: b"v".to_vec(),
            ttl: Some(prost_types_duration(-1)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    assert_eq!(cache.get("").await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(cache.get_many(Vec::<String>::new()).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(cache.delete(Vec::<String>::new()).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(cache.invalidate_prefix("").await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(cache.invalidate_tags(Vec::<String>::new()).await.unwrap_err().code(), Code::InvalidArgument);
    let status = cache
        .raw()
        .invalidate(rookery_client::pb::CacheInvalidateRequest { target: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A malformed namespace header is refused before reaching the service.
    let mut raw = rookery_client::pb::cache_client::CacheClient::new(
        Client::connect(server.url()).await.unwrap().channel(),
    );
    let mut request = tonic::Request::new(rookery_client::pb::CacheGetRequest { key: "k".into() });
    request.metadata_mut().insert("x-rookery-namespace", "a:b".parse().unwrap());
    let status = raw.get(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("namespace"), "{}", status.message());
}

fn prost_types_duration(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

#[tokio::test]
async fn default_ttl_from_config_applies_to_writes_without_ttl() {
    let mut config = test_config(&shared_redis().url());
    config.cache.default_ttl = Some(Duration::from_secs(30));
    let server = TestServer::start(config).await;
    let ns = namespace("default-ttl");
    let cache = server.client(&ns).await.cache();
    assert!(cache.set_with("k", b"v".to_vec(), SetOptions::default()).await.unwrap());
    let ttl = cache.get("k").await.unwrap().unwrap().ttl.unwrap();
    assert!(ttl <= Duration::from_secs(30) && ttl > Duration::from_secs(25), "{ttl:?}");
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn batch_calls_keep_order_and_count() {
    let (_server, cache, ns) = setup("batch").await;
    let stored = cache
        .set_many([("a", b"1".to_vec()), ("b", b"2".to_vec()), ("c", b"3".to_vec())], opts(MINUTE))
        .await
        .unwrap();
    assert_eq!(stored, vec![true, true, true]);
    let got = cache.get_many(["c", "missing", "a"]).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().value, &b"3"[..]);
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_ref().unwrap().value, &b"1"[..]);
    assert_eq!(cache.delete(["a", "b", "missing"]).await.unwrap(), 2);
    assert_eq!(cache.get_many(["a", "b", "c"]).await.unwrap().iter().filter(|e| e.is_some()).count(), 1);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn namespaces_isolate_the_same_key() {
    let (server, a, ns_a) = setup("ns-a").await;
    let ns_b = namespace("ns-b");
    let b = server.client(&ns_b).await.cache();
    a.set("user:1", b"from a".to_vec(), MINUTE).await.unwrap();
    b.set("user:1", b"from b".to_vec(), MINUTE).await.unwrap();
    assert_eq!(a.get("user:1").await.unwrap().unwrap().value, &b"from a"[..]);
    assert_eq!(b.get("user:1").await.unwrap().unwrap().value, &b"from b"[..]);
    assert_eq!(a.invalidate_prefix("user").await.unwrap(), 1);
    assert_eq!(a.get("user:1").await.unwrap(), None);
    assert_eq!(b.get("user:1").await.unwrap().unwrap().value, &b"from b"[..]);
    assert_eq!(b.delete(["user:1"]).await.unwrap(), 1);
    shared_redis().assert_no_key_without_ttl(&ns_a).await;
}

#[tokio::test]
async fn prefix_invalidation_treats_glob_and_tag_characters_literally() {
    let (_server, cache, ns) = setup("glob").await;
    let names = [
        "*", "*x", "a[1]", "a[1]b", "a1", "ab", "a?", "a\\", "a\\b", "{tag}", "{tag}:x", "k:1", "k:10", "k",
        "%2A",
    ];
    cache.set_many(names.iter().map(|n| (*n, b"v".to_vec())), opts(MINUTE)).await.unwrap();
    let remaining = |cache: CacheClient| async move {
        let got = cache.get_many(names).await.unwrap();
        names
            .iter()
            .zip(got)
            .filter(|(_, e)| e.is_some())
            .map(|(n, _)| (*n).to_owned())
            .collect::<Vec<String>>()
    };
    // `*` removes only names starting with a literal star, not everything.
    assert_eq!(cache.invalidate_prefix("*").await.unwrap(), 2);
    // `a[1]` removes its own keys, not `a1`.
    assert_eq!(cache.invalidate_prefix("a[1]").await.unwrap(), 2);
    assert_eq!(cache.invalidate_prefix("a?").await.unwrap(), 1);
    assert_eq!(cache.invalidate_prefix("a\\").await.unwrap(), 2);
    assert_eq!(cache.invalidate_prefix("{tag}").await.unwrap(), 2);
    assert_eq!(cache.invalidate_prefix("k:1").await.unwrap(), 2);
    assert_eq!(remaining(cache.clone()).await, vec!["a1", "ab", "k", "%2A"]);
    assert_eq!(cache.invalidate_prefix("nothing-here").await.unwrap(), 0);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn tag_invalidation_removes_exactly_the_tagged_keys() {
    let (_server, cache, ns) = setup("tags").await;
    let tagged = |tags: &[&str]| SetOptions {
        ttl: Some(MINUTE),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..SetOptions::default()
    };
    cache.set_with("u1", b"1".to_vec(), tagged(&["users"])).await.unwrap();
    cache.set_with("u2", b"2".to_vec(), tagged(&["users", "vip"])).await.unwrap();
    cache.set_many([("p1", b"p".to_vec()), ("p2", b"p".to_vec())], tagged(&["products"])).await.unwrap();
    cache.set("other", b"o".to_vec(), MINUTE).await.unwrap();
    assert_eq!(cache.invalidate_tags(["users"]).await.unwrap(), 2);
    assert_eq!(cache.get_many(["u1", "u2"]).await.unwrap(), vec![None, None]);
    assert!(cache.get("p1").await.unwrap().is_some());
    // The vip index still names u2, which is gone: nothing more to remove.
    assert_eq!(cache.invalidate_tags(["vip", "products"]).await.unwrap(), 2);
    assert!(cache.get("other").await.unwrap().is_some());
    // Tag indexes' buckets are consumed by invalidation; the rest has TTLs.
    let keys = shared_redis().keys_of(&ns).await;
    assert!(keys.iter().all(|k| !k.contains(":b:")), "{keys:?}");
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn tag_index_has_a_ttl_at_least_the_longest_entry() {
    let (_server, cache, ns) = setup("tag-ttl").await;
    let tagged = |ttl| SetOptions { ttl: Some(ttl), tags: vec!["t".into()], ..SetOptions::default() };
    cache.set_with("long", b"v".to_vec(), tagged(Duration::from_secs(600))).await.unwrap();
    cache.set_with("short", b"v".to_vec(), tagged(Duration::from_secs(5))).await.unwrap();
    let mut conn = shared_redis().conn().await;
    for part in ["head", "buckets", "b:0"] {
        let index = format!("rk1:{{{ns}:ctag:t}}:{part}");
        let ttl: i64 = redis::cmd("PTTL").arg(&index).query_async(&mut conn).await.unwrap();
        assert!(ttl > 590_000, "tag index {part} TTL {ttl} ms shorter than its longest entry");
    }
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

/// Starts a `Fetch` that may wait up to 20 s; resolves to its outcome and how long it took.
fn spawn_waiting_fetch(cache: &CacheClient, key: &str) -> tokio::task::JoinHandle<(Fetched, Duration)> {
    let (cache, key) = (cache.clone(), key.to_owned());
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let outcome = cache.fetch(key, &quick(20_000, 30_000)).await.unwrap();
        (outcome, started.elapsed())
    })
}

fn quick(wait_ms: u64, lease_ms: u64) -> FetchOptions {
    FetchOptions {
        wait: Some(Duration::from_millis(wait_ms)),
        lease_ttl: Some(Duration::from_millis(lease_ms)),
        refresh_ahead: None,
    }
}

#[tokio::test]
async fn fetch_grants_one_lease_and_fill_serves_everyone() {
    let (_server, cache, ns) = setup("lease").await;
    let Fetched::Fill(token) = cache.fetch("k", &quick(100, 10_000)).await.unwrap() else {
        panic!("first fetch of a missing key must get the lease")
    };
    assert_eq!(cache.fetch("k", &quick(100, 10_000)).await.unwrap(), Fetched::WaitExpired);
    let wrong = cache.fill("k", "not-the-token".into(), b"x".to_vec(), opts(MINUTE)).await.unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    cache.fill("k", token.clone(), b"loaded".to_vec(), opts(MINUTE)).await.unwrap();
    let Fetched::Hit(entry) = cache.fetch("k", &quick(100, 10_000)).await.unwrap() else {
        panic!("filled key must hit")
    };
    assert_eq!(entry.value, &b"loaded"[..]);
    // A used lease cannot fill again.
    let again = cache.fill("k", token, b"again".to_vec(), opts(MINUTE)).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(cache.get("k").await.unwrap().unwrap().value, &b"loaded"[..]);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn waiters_wake_on_fill_without_waiting_for_the_lease() {
    let (server, cache, ns) = setup("wake").await;
    let Fetched::Fill(token) = cache.fetch("k", &quick(100, 30_000)).await.unwrap() else {
        panic!("expected the lease")
    };
    let waiter = spawn_waiting_fetch(&cache, "k");
    server.wait_for_fetch_waiter().await;
    cache.fill("k", token, b"v".to_vec(), opts(MINUTE)).await.unwrap();
    let (outcome, waited) = waiter.await.unwrap();
    assert!(matches!(outcome, Fetched::Hit(ref e) if e.value == b"v"[..]), "{outcome:?}");
    assert!(waited < Duration::from_secs(5), "waiter took {waited:?}: it was not woken by the fill");
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn release_hands_the_lease_to_the_next_waiter_at_once() {
    let (server, cache, ns) = setup("release").await;
    let Fetched::Fill(token) = cache.fetch("k", &quick(100, 30_000)).await.unwrap() else {
        panic!("expected the lease")
    };
    let waiter = spawn_waiting_fetch(&cache, "k");
    server.wait_for_fetch_waiter().await;
    assert!(cache.release_lease("k", token.clone()).await.unwrap());
    assert!(!cache.release_lease("k", token).await.unwrap(), "a released lease cannot be released twice");
    let (outcome, waited) = waiter.await.unwrap();
    let Fetched::Fill(next) = outcome else { panic!("the waiter should receive the lease, got {outcome:?}") };
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(cache.release_lease("k", next).await.unwrap());
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn writes_and_deletes_cancel_a_pending_lease() {
    let (server, cache, ns) = setup("cancel").await;
    let Fetched::Fill(token) = cache.fetch("k", &quick(100, 30_000)).await.unwrap() else {
        panic!("expected the lease")
    };
    let waiter = spawn_waiting_fetch(&cache, "k");
    server.wait_for_fetch_waiter().await;
    cache.set("k", b"fresh".to_vec(), MINUTE).await.unwrap();
    let (outcome, waited) = waiter.await.unwrap();
    assert!(matches!(outcome, Fetched::Hit(ref e) if e.value == b"fresh"[..]), "{outcome:?}");
    assert!(waited < Duration::from_secs(5), "the write should wake the waiter, it took {waited:?}");
    let stale = cache.fill("k", token, b"stale".to_vec(), opts(MINUTE)).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert_eq!(cache.get("k").await.unwrap().unwrap().value, &b"fresh"[..]);

    // Delete cancels too.
    let Fetched::Fill(token) = cache.fetch("d", &quick(100, 30_000)).await.unwrap() else {
        panic!("expected the lease")
    };
    assert_eq!(cache.delete(["d"]).await.unwrap(), 0);
    assert_eq!(
        cache.fill("d", token, b"stale".to_vec(), opts(MINUTE)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn refresh_ahead_gives_one_caller_a_refresh_lease_and_others_the_value() {
    let (_server, cache, ns) = setup("refresh").await;
    cache.set("hot", b"old".to_vec(), Duration::from_secs(5)).await.unwrap();
    let refresh = FetchOptions { refresh_ahead: Some(Duration::from_secs(10)), ..quick(100, 10_000) };
    let Fetched::Refresh(entry, token) = cache.fetch("hot", &refresh).await.unwrap() else {
        panic!("a key inside the refresh window should grant a refresh lease")
    };
    assert_eq!(entry.value, &b"old"[..]);
    for _ in 0..5 {
        let Fetched::Hit(entry) = cache.fetch("hot", &refresh).await.unwrap() else {
            panic!("only one caller may hold the refresh lease")
        };
        assert_eq!(entry.value, &b"old"[..]);
    }
    cache.fill("hot", token, b"new".to_vec(), opts(MINUTE)).await.unwrap();
    let Fetched::Hit(entry) = cache.fetch("hot", &refresh).await.unwrap() else {
        panic!("a fresh key is outside the window")
    };
    assert_eq!(entry.value, &b"new"[..]);
    // Outside the window: plain hits, no lease.
    let far = FetchOptions { refresh_ahead: Some(Duration::from_secs(1)), ..quick(100, 10_000) };
    assert!(matches!(cache.fetch("hot", &far).await.unwrap(), Fetched::Hit(_)));
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn stampede_across_two_replicas_loads_once() {
    let config = test_config(&shared_redis().url());
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace("stampede");
    let caches = [a.client(&ns).await.cache(), b.client(&ns).await.cache()];
    assert_eq!(stampede(&caches, 200).await, 1, "the loader must run exactly once");
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn a_vanished_lease_holder_is_replaced_within_the_lease_ttl() {
    let (_server, cache, ns) = setup("vanish").await;
    let lease_ttl = Duration::from_millis(800);
    // A caller takes the lease and disappears without filling or releasing.
    let Fetched::Fill(_abandoned) = cache
        .fetch("k", &FetchOptions { lease_ttl: Some(lease_ttl), ..FetchOptions::default() })
        .await
        .unwrap()
    else {
        panic!("expected the lease")
    };
    let started = tokio::time::Instant::now();
    let options = LoadOptions { lease_ttl: Some(lease_ttl), ..LoadOptions::new(MINUTE) };
    let value = cache
        .get_or_load_with("k", options, || async { Ok::<_, std::io::Error>(b"recovered".to_vec()) })
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(value, b"recovered");
    assert!(took > lease_ttl / 2, "took {took:?}: it cannot have the lease before the old one expires");
    assert!(took < lease_ttl + Duration::from_secs(3), "took {took:?}");
    assert_eq!(cache.get("k").await.unwrap().unwrap().value, &b"recovered"[..]);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn a_failing_loader_gives_the_lease_back_at_once() {
    let (server, cache, ns) = setup("fail").await;
    let options = LoadOptions { lease_ttl: Some(Duration::from_secs(30)), ..LoadOptions::new(MINUTE) };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let failing = {
        let cache = cache.clone();
        let options = options.clone();
        tokio::spawn(async move {
            cache
                .get_or_load_with("k", options, || async move {
                    let _ = rx.await;
                    Err::<Vec<u8>, _>("database down")
                })
                .await
        })
    };
    // Let the failing loader take the lease, then start a second caller that waits.
    assert!(
        crate::harness::eventually(Duration::from_secs(5), || async {
            !shared_redis().keys_of(&ns).await.is_empty()
        })
        .await
    );
    let second = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let value = cache
                .get_or_load_with("k", options, || async { Ok::<_, std::io::Error>(b"ok".to_vec()) })
                .await
                .unwrap();
            (value, started.elapsed())
        })
    };
    server.wait_for_fetch_waiter().await;
    tx.send(()).unwrap();
    assert!(matches!(failing.await.unwrap(), Err(GetOrLoadError::Load("database down"))));
    let (value, waited) = second.await.unwrap();
    assert_eq!(value, b"ok");
    assert!(waited < Duration::from_secs(5), "second caller waited {waited:?}, not for the 30 s lease");
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn fetch_answers_wait_expired_before_the_callers_deadline() {
    let (_server, cache, ns) = setup("deadline").await;
    let Fetched::Fill(_token) = cache.fetch("k", &quick(100, 30_000)).await.unwrap() else {
        panic!("expected the lease")
    };
    let mut request = tonic::Request::new(rookery_client::pb::CacheFetchRequest {
        key: "k".into(),
        wait: Some(prost_types::Duration { seconds: 20, nanos: 0 }),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(500));
    let started = tokio::time::Instant::now();
    let response = cache.raw().fetch(request).await.expect("an answer, not a timeout").into_inner();
    assert_eq!(response.outcome(), rookery_client::pb::CacheFetchOutcome::WaitExpired);
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn get_or_load_gives_up_after_max_wait() {
    let (_server, cache, ns) = setup("max-wait").await;
    let Fetched::Fill(_token) = cache.fetch("k", &quick(100, 30_000)).await.unwrap() else {
        panic!("expected the lease")
    };
    let options = LoadOptions { max_wait: Duration::from_millis(400), ..LoadOptions::new(MINUTE) };
    let started = tokio::time::Instant::now();
    let result =
        cache.get_or_load_with("k", options, || async { Ok::<_, std::io::Error>(b"x".to_vec()) }).await;
    assert!(matches!(result, Err(GetOrLoadError::WaitExpired(_))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?} for a 400 ms max_wait",
        started.elapsed()
    );
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn a_failed_refresh_still_serves_the_cached_value() {
    let (_server, cache, ns) = setup("refresh-fail").await;
    cache.set("hot", b"cached".to_vec(), Duration::from_secs(5)).await.unwrap();
    let options = LoadOptions { refresh_ahead: Some(Duration::from_secs(10)), ..LoadOptions::new(MINUTE) };
    let value = cache
        .get_or_load_with("hot", options.clone(), || async { Err::<Vec<u8>, _>("database down") })
        .await
        .unwrap();
    assert_eq!(value, b"cached");
    // The refresh lease was given back: the next caller refreshes at once.
    let value =
        cache.get_or_load_with("hot", options, || async { Ok::<_, &str>(b"fresh".to_vec()) }).await.unwrap();
    assert_eq!(value, b"fresh");
    assert_eq!(cache.get("hot").await.unwrap().unwrap().value, &b"fresh"[..]);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn a_dropped_get_or_load_releases_its_lease() {
    let (server, cache, ns) = setup("dropped").await;
    let options = LoadOptions { lease_ttl: Some(Duration::from_secs(30)), ..LoadOptions::new(MINUTE) };
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let abandoned = {
        let (cache, options) = (cache.clone(), options.clone());
        tokio::spawn(async move {
            cache
                .get_or_load_with("k", options, || async move {
                    let _ = started_tx.send(());
                    std::future::pending::<Result<Vec<u8>, std::io::Error>>().await
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let waiter = spawn_waiting_fetch(&cache, "k");
    server.wait_for_fetch_waiter().await;
    abandoned.abort();
    let (outcome, waited) = waiter.await.unwrap();
    assert!(matches!(outcome, Fetched::Fill(_)), "the waiter should get the released lease: {outcome:?}");
    assert!(waited < Duration::from_secs(10), "waited {waited:?}, as if for the 30 s lease");
    shared_redis().assert_no_key_without_ttl(&ns).await;
}
