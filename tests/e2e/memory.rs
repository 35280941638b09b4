//! Redis memory cannot be taken hostage: at maxmemory every write that grows memory is refused
//! with RESOURCE_EXHAUSTED and nothing writes past the limit, while what frees memory or keeps
//! it steady (releases, renewals, a Hold's lease, acks, nacks, deletes) keeps working; streams
//! expire when idle (every key of theirs carries a TTL, which each append starts again) and a
//! namespace has at most `events.max_streams_per_namespace` of them, also on a Cluster.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use rookery_client::pb::lock_hold_response::Event;
use rookery_client::{
    AppendOptions, ConsumeOptions, Delivery, GroupSettings, LockOptions, SessionOptions, pb,
};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::{
    RedisCluster, RedisProcess, TestServer, eventually, namespace, shared_redis, test_config,
};

const MINUTE: Duration = Duration::from_secs(60);
/// The maxmemory of the Redis the full-memory test fills.
const MAXMEMORY: u64 = 20 * 1024 * 1024;
/// How far past maxmemory used memory may be after the refused writes: the last filler value
/// that crossed the line (64 KiB) and Redis's own buffers. 500 refused session creates would
/// add over 1 MB if they were written.
const SLACK: u64 = 256 * 1024;

/// A `Hold` of the lock `held` with `ttl`.
fn hold_request(ttl: Duration) -> pb::LockHoldRequest {
    pb::LockHoldRequest {
        name: "held".into(),
        ttl: Some(ttl.try_into().unwrap()),
        wait: None,
        limit: 0,
        owner: "holder".into(),
    }
}

fn entry(text: &str) -> HashMap<String, Vec<u8>> {
    HashMap::from([("v".to_owned(), text.as_bytes().to_vec())])
}

async fn used_memory(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await.unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory names used_memory")
}

/// Whether Redis refuses a small raw write for lack of memory right now.
async fn out_of_memory(conn: &mut MultiplexedConnection) -> bool {
    let written: redis::RedisResult<()> =
        redis::cmd("SET").arg("filler:probe").arg("x").query_async(conn).await;
    match written {
        Ok(()) => false,
        Err(e) if e.code() == Some("OOM") => true,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Fills Redis with raw keys outside every namespace until it refuses a write for lack of
/// memory (another tenant, or anything else, filling a shared Redis).
async fn fill_until_refused(conn: &mut MultiplexedConnection) {
    let value = vec![b'x'; 64 * 1024];
    for n in 0..10_000 {
        let written: redis::RedisResult<()> =
            redis::cmd("SET").arg(format!("filler:{n}")).arg(&value).query_async(conn).await;
        match written {
            Ok(()) => {}
            Err(e) if e.code() == Some("OOM") => return,
            Err(e) => panic!("unexpected error while filling: {e}"),
        }
    }
    panic!("Redis never ran out of memory");
}

/// The next batch of a consumer within 5 s.
async fn next_batch(consumer: &mut rookery_client::Consumer) -> Vec<Delivery> {
    let batch = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.expect("a batch in time");
    batch.expect("the consumer is open").expect("no error").entries
}

#[tokio::test]
async fn at_maxmemory_growing_writes_are_refused_and_releases_renewals_acks_and_deletes_work() {
    let redis = RedisProcess::start(&["--maxmemory", &MAXMEMORY.to_string()]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let ns = namespace("full");
    let client = server.client(&ns).await;
    let (locks, sessions, cache, events) = (client.lock(), client.session(), client.cache(), client.events());

    // Before Redis is full: a held lock, a live session, a cache entry, and two entries
    // delivered to a consumer (their group gives up on an entry after one delivery).
    let lease = locks.acquire("job", &LockOptions::new(MINUTE)).await.unwrap().expect("the lock is free");
    let session = sessions.create("alice", HashMap::new(), &SessionOptions::default()).await.unwrap();
    cache.set("page", b"cached".to_vec(), MINUTE).await.unwrap();
    events.append("orders", entry("1"), &AppendOptions::default()).await.unwrap();
    events.append("orders", entry("2"), &AppendOptions::default()).await.unwrap();
    let options = ConsumeOptions {
        create_group: true,
        settings: GroupSettings { ack_timeout: Some(MINUTE), max_deliveries: Some(1) },
        ..ConsumeOptions::default()
    };
    let mut consumer = events.consume("orders", "billing", "c1", &options).await.unwrap();
    let mut delivered = next_batch(&mut consumer).await;
    while delivered.len() < 2 {
        delivered.extend(next_batch(&mut consumer).await);
    }
    drop(consumer);
    let sessions_before = session_keys(&redis, &ns).await;
    // And a lock held by a stream, which must keep it through the memory pressure.
    let hold_ttl = Duration::from_millis(600);
    let mut held = locks.raw().hold(hold_request(hold_ttl)).await.unwrap().into_inner();
    let Some(Event::Acquired(acquired)) = held.message().await.unwrap().unwrap().event else {
        panic!("the held lock is free")
    };

    // Another tenant fills Redis. Then its limit is lowered 1 MB below what it holds, as if
    // the tenant had gone on: the last refused write's 64 KiB left Redis's buffers and Redis may
    // sit just under its limit, and every call below would otherwise free or take enough to
    // cross it either way. Each call here must run at maxmemory.
    let mut conn = redis.conn().await;
    fill_until_refused(&mut conn).await;
    let full = used_memory(&mut conn).await;
    let limit = full - 1024 * 1024;
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(limit).query_async::<()>(&mut conn).await.unwrap();
    assert!(out_of_memory(&mut conn).await);

    // Every write that grows memory is refused, and none writes anyway.
    let attribute = HashMap::from([("profile".to_owned(), vec![b'p'; 2048])]);
    for n in 0..500 {
        let refused = sessions
            .create(format!("user-{n}"), attribute.clone(), &SessionOptions::default())
            .await
            .expect_err("Session.Create at maxmemory");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    }
    let refused = [
        events.append("orders", entry("3"), &AppendOptions::default()).await.map(drop),
        events.append("new-stream", entry("1"), &AppendOptions::default()).await.map(drop),
        events.create_group("orders", "audit", "", GroupSettings::default()).await,
        cache.set("page-2", b"more".to_vec(), MINUTE).await.map(drop),
        locks.acquire("other-job", &LockOptions::new(MINUTE)).await.map(drop),
        // A sliding-window log removes old entries before it adds one: refused all the same.
        client
            .rate_limiter()
            .check(
                "api",
                &rookery_client::RateLimit::Spec {
                    algorithm: rookery_client::Algorithm::SlidingWindowLog,
                    limit: 100,
                    period: MINUTE,
                    burst: 0,
                },
                1,
            )
            .await
            .map(drop),
    ];
    for outcome in refused {
        assert_eq!(outcome.expect_err("refused at maxmemory").code(), Code::ResourceExhausted);
    }
    // Nothing was written past the limit: used memory is where the filling left it, within
    // the slack of the 20 MB the Redis started with.
    let after = used_memory(&mut conn).await;
    assert!(
        after <= MAXMEMORY + SLACK && after <= full + SLACK,
        "used_memory {after} exceeds maxmemory {MAXMEMORY} by more than {SLACK} bytes (it was {full} when full)"
    );
    assert_eq!(session_keys(&redis, &ns).await, sessions_before, "refused creates left nothing behind");
    let keys = redis.keys_of(&ns).await;
    for refused in [":st:new-stream}", ":cache:page-2}", ":lock:other-job}", ":rl:api}"] {
        assert!(!keys.iter().any(|key| key.contains(refused)), "{refused} was written: {keys:?}");
    }
    let keys_at_limit: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();

    // The held lock stays held for ten TTLs at maxmemory: Redis confirms a lease end ten TTLs
    // past the first, which only accepted renewals can give.
    let first_end = SystemTime::try_from(acquired.expires_at.unwrap()).unwrap();
    loop {
        match held.message().await.unwrap().unwrap().event.unwrap() {
            Event::Renewed(renewed)
                if SystemTime::try_from(renewed.expires_at.unwrap()).unwrap()
                    >= first_end + hold_ttl * 10 =>
            {
                break;
            }
            Event::Renewed(_) => {}
            other => panic!("a lock held at maxmemory ended: {other:?}"),
        }
    }
    assert!(out_of_memory(&mut conn).await, "the renewals ran at maxmemory");
    // Closing the stream releases the lock, at maxmemory too.
    drop(held);
    let released = eventually(MINUTE, || async {
        !redis.keys_of(&ns).await.iter().any(|key| key.ends_with(":lock:held}"))
    });
    assert!(released.await, "the closed hold's lease was released");

    // What frees memory or keeps it steady keeps working.
    assert!(locks.extend("job", &lease.token, MINUTE).await.unwrap().is_some(), "a lease stays renewable");
    let alive = sessions.get(&session.id, true).await.unwrap();
    assert!(alive.is_some(), "a session stays readable and its idle expiry slides");
    // At its delivery limit, a nacked entry is given back rather than copied to the dead
    // letters (that would grow memory); the other entry is acknowledged.
    assert_eq!(
        events.nack("orders", "billing", "c1", [delivered[0].id.clone()], Duration::ZERO).await.unwrap(),
        (1, 0)
    );
    assert_eq!(events.ack("orders", "billing", [delivered[1].id.clone()]).await.unwrap(), 1);
    assert!(locks.release("job", &lease.token).await.unwrap(), "a lease can end");
    assert!(sessions.delete(&session.id).await.unwrap(), "a session can end");
    assert_eq!(cache.delete(["page"]).await.unwrap(), 1, "a cache entry can be deleted");
    assert!(events.delete_group("orders", "billing").await.unwrap(), "a group can be deleted");
    assert!(out_of_memory(&mut conn).await, "all of that ran at maxmemory");
    // None of it wrote past the limit: the keys are fewer, and used memory moved only by what
    // Redis spends on its clients and its script cache (the scripts these calls loaded).
    let end = used_memory(&mut conn).await;
    assert!(end <= after + SLACK, "used_memory grew from {after} to {end}");
    let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert!(dbsize < keys_at_limit, "{dbsize} keys, {keys_at_limit} before");

    // Memory freed (the operator raises the limit): creates work again.
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query_async::<()>(&mut conn).await.unwrap();
    sessions.create("bob", HashMap::new(), &SessionOptions::default()).await.unwrap();
    events.append("new-stream", entry("1"), &AppendOptions::default()).await.unwrap();
}

/// The session keys (hashes and indexes) of `namespace`, sorted.
async fn session_keys(redis: &RedisProcess, namespace: &str) -> Vec<String> {
    let mut keys: Vec<String> =
        redis.keys_of(namespace).await.into_iter().filter(|key| key.contains(":sess:")).collect();
    keys.sort();
    keys
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn a_namespace_has_at_most_its_cap_of_streams_and_every_stream_key_expires() {
    let mut config = test_config(&shared_redis().url());
    config.events.max_streams_per_namespace = 3;
    config.events.max_groups_per_stream = 2;
    config.events.stream_idle_ttl = MINUTE;
    config.events.idempotency_window = Duration::from_secs(30);
    let server = TestServer::start(config).await;
    let ns = namespace("stream-cap");
    let events = server.client(&ns).await.events();

    // Three streams: two by appends (one with an idempotency key), one by a group creation.
    events.append("a", entry("1"), &AppendOptions::default()).await.unwrap();
    let keyed = AppendOptions { idempotency_key: Some("k1".into()), ..AppendOptions::default() };
    events.append("b", entry("1"), &keyed).await.unwrap();
    events.create_group("c", "g1", "", GroupSettings::default()).await.unwrap();

    // A fourth is refused, by append or by group creation; existing streams take more.
    for refused in [
        events.append("d", entry("1"), &AppendOptions::default()).await.map(drop),
        events.create_group("d", "g1", "", GroupSettings::default()).await,
    ] {
        let refused = refused.expect_err("past the cap");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.message().contains("events.max_streams_per_namespace"), "{}", refused.message());
    }
    events.append("a", entry("2"), &AppendOptions::default()).await.unwrap();
    events.append("c", entry("1"), &AppendOptions::default()).await.unwrap();
    assert!(!shared_redis().keys_of(&ns).await.iter().any(|key| key.contains(":st:d}")));
    // The cap is per namespace.
    let other = server.client(&namespace("stream-cap-other")).await.events();
    other.append("d", entry("1"), &AppendOptions::default()).await.unwrap();

    // A stream has at most max_groups_per_stream groups.
    events.create_group("c", "g2", "", GroupSettings::default()).await.unwrap();
    let refused = events.create_group("c", "g3", "", GroupSettings::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("events.max_groups_per_stream"), "{}", refused.message());
    let exists = events.create_group("c", "g1", "", GroupSettings::default()).await.unwrap_err();
    assert_eq!(exists.code(), Code::AlreadyExists);

    // Dead letters: an entry delivered once too often.
    let options = ConsumeOptions {
        create_group: true,
        settings: GroupSettings { ack_timeout: Some(MINUTE), max_deliveries: Some(1) },
        ..ConsumeOptions::default()
    };
    let mut consumer = events.consume("a", "g", "c1", &options).await.unwrap();
    let first = next_batch(&mut consumer).await;
    assert_eq!(consumer.nack([first[0].id.clone()], Duration::ZERO).await.unwrap(), (0, 1));
    let described = events.describe("a").await.unwrap();
    assert_eq!(described.dead_letters, 1);
    assert_eq!(described.groups[0].settings.unwrap().max_deliveries, Some(1), "settings are stored");
    drop(consumer);

    // Every key of the namespace expires: the streams and their companions within the idle
    // TTL, the namespace's index of streams within the idle TTL and two registration-mark
    // lives (a quarter of the idle TTL each).
    let mut conn = shared_redis().conn().await;
    let keys = shared_redis().keys_of(&ns).await;
    for part in ["a}", "a}:dead", "a}:groups", "a}:reg", "b}:idem:k1", "c}", "c}:groups", ":streams:}"] {
        assert!(keys.iter().any(|key| key.ends_with(part)), "no key ending in {part}: {keys:?}");
    }
    for key in &keys {
        let ttl = pttl(&mut conn, key).await;
        let bound = if key.ends_with(":streams:}") { 90_000 } else { 60_000 };
        assert!(ttl > 0 && ttl <= bound, "{key} has TTL {ttl} ms");
    }
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn an_append_starts_the_idle_expiry_of_the_stream_and_its_companions_again() {
    let mut config = test_config(&shared_redis().url());
    config.events.stream_idle_ttl = MINUTE;
    config.events.idempotency_window = Duration::from_secs(30);
    let server = TestServer::start(config).await;
    let ns = namespace("stream-ttl");
    let events = server.client(&ns).await.events();
    events.append("s", entry("1"), &AppendOptions::default()).await.unwrap();
    let options = ConsumeOptions {
        create_group: true,
        settings: GroupSettings { ack_timeout: Some(MINUTE), max_deliveries: Some(1) },
        ..ConsumeOptions::default()
    };
    let mut consumer = events.consume("s", "g", "c1", &options).await.unwrap();
    let first = next_batch(&mut consumer).await;
    assert_eq!(consumer.nack([first[0].id.clone()], Duration::ZERO).await.unwrap(), (0, 1));
    drop(consumer);

    let stream = format!("rk1:{{{ns}:st:s}}");
    let companions = [stream.clone(), format!("{stream}:dead"), format!("{stream}:groups")];
    let mut conn = shared_redis().conn().await;
    // Dead letters take the stream's remaining TTL (read the stream's first: both count down).
    let (stream_ttl, dead_ttl) = (pttl(&mut conn, &stream).await, pttl(&mut conn, &companions[1]).await);
    assert!(dead_ttl > 0 && dead_ttl <= stream_ttl, "dead letters {dead_ttl} ms, stream {stream_ttl} ms");
    // Time passes (as if): five seconds left to each.
    for key in &companions {
        redis::cmd("PEXPIRE").arg(key).arg(5_000).query_async::<()>(&mut conn).await.unwrap();
    }
    events.append("s", entry("2"), &AppendOptions::default()).await.unwrap();
    for key in &companions {
        let ttl = pttl(&mut conn, key).await;
        assert!(ttl > 50_000 && ttl <= 60_000, "{key} has TTL {ttl} ms after an append");
    }
}

#[tokio::test]
async fn an_idle_stream_expires_and_frees_its_place_in_the_cap() {
    let mut config = test_config(&shared_redis().url());
    config.events.max_streams_per_namespace = 2;
    config.events.stream_idle_ttl = Duration::from_secs(1);
    config.events.idempotency_window = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    let ns = namespace("stream-idle");
    let events = server.client(&ns).await.events();
    events.append("x", entry("1"), &AppendOptions::default()).await.unwrap();
    events.append("y", entry("1"), &AppendOptions::default()).await.unwrap();
    let refused = events.append("z", entry("1"), &AppendOptions::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);

    // Once x and y have been idle for the idle TTL (and their registrations ended, at most two
    // quarter-TTL mark lives later), z gets a place.
    let accepted = eventually(Duration::from_secs(10), || async {
        events.append("z", entry("1"), &AppendOptions::default()).await.is_ok()
    })
    .await;
    assert!(accepted, "an idle stream never freed its place");
    let keys = shared_redis().keys_of(&ns).await;
    assert!(
        !keys.iter().any(|key| key.contains(":st:x}") || key.contains(":st:y}")),
        "idle streams are gone: {keys:?}"
    );
}

#[tokio::test]
async fn the_stream_cap_holds_on_a_cluster_where_the_index_lives_in_another_slot() {
    let cluster = RedisCluster::start().await;
    let mut config = test_config(&cluster.url());
    config.redis.cluster = true;
    config.events.max_streams_per_namespace = 12;
    config.events.stream_idle_ttl = MINUTE;
    config.events.idempotency_window = Duration::from_secs(30);
    let server = TestServer::start(config).await;
    let ns = namespace("cluster-cap");
    let events = server.client(&ns).await.events();
    // Twelve streams (and the index): all in one slot's node by chance about once in a million.
    let names: Vec<String> = (1..=12).map(|n| format!("s{n}")).collect();
    for name in &names {
        events.append(name, entry("1"), &AppendOptions::default()).await.unwrap();
    }
    let refused = events.append("s13", entry("1"), &AppendOptions::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    events.create_group("s1", "g", "", GroupSettings::default()).await.unwrap();
    for name in &names {
        events.append(name, entry("2"), &AppendOptions::default()).await.unwrap();
    }
    let per_node = cluster.keys_per_node(&ns).await;
    assert!(
        per_node.iter().filter(|keys| !keys.is_empty()).count() >= 2,
        "the streams and their index should spread over several masters: {per_node:?}"
    );
    cluster.assert_no_key_without_ttl(&ns).await;
}
