//! The near cache end to end: the `Cache.Track` protocol, coherence across two server
//! replicas, faults on the invalidation path, and the memory bound.
//!
//! Staleness is judged by the protocol's own rule, not by speed: a read that returns a value
//! older than the newest completed write must have started within the staleness bound of that
//! write's completion. Both instants are this process's clock readings, as the near cache's own
//! probes are, so a slow machine makes fewer reads hits; it cannot make a correct near cache
//! fail this.

use std::time::Duration;

use rookery_client::{CacheClient, NearCache, NearOptions, SetOptions, pb};
use tokio::time::Instant;
use tonic::Code;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::harness::{RedisProcess, TestServer, eventually, namespace, shared_redis, test_config};

/// The near caches' staleness bound in these tests.
const BOUND: Duration = Duration::from_millis(500);
const TTL: Duration = Duration::from_secs(120);

fn near_options() -> NearOptions {
    NearOptions { max_staleness: BOUND, ..NearOptions::default() }
}

/// Writes of one key, in order: the value written and when the write's call returned.
#[derive(Default)]
struct Writes(Vec<Instant>);

impl Writes {
    /// Writes value `n` (the next one) through `writer`.
    async fn write(&mut self, writer: &CacheClient, key: &str) -> u64 {
        let n = self.0.len() as u64;
        writer
            .set_with(key, n.to_string().into_bytes(), SetOptions { ttl: Some(TTL), ..Default::default() })
            .await
            .unwrap();
        self.0.push(Instant::now());
        n
    }

    /// Checks a read that started at `started` and returned value `seen`: if a newer write had
    /// completed before it started, the read must have started within the bound of the first
    /// such write. Returns how late past that write's completion the read started, if stale.
    fn check(&self, seen: u64, started: Instant) -> Option<Duration> {
        let next = self.0.get(usize::try_from(seen).unwrap() + 1)?;
        if *next > started {
            return None;
        }
        let late = started - *next;
        assert!(
            late < BOUND,
            "a near read returned value {seen} {late:?} after value {} was written (bound {BOUND:?})",
            seen + 1
        );
        Some(late)
    }
}

fn value(entry: Option<rookery_client::Entry>) -> u64 {
    std::str::from_utf8(&entry.expect("the key exists").value).unwrap().parse().unwrap()
}

/// Reads `key` through `near` until it is answered from memory.
async fn warm(near: &NearCache, key: &str) {
    let warmed = eventually(Duration::from_secs(10), || async {
        let before = near.stats().hits;
        near.get(key).await.unwrap();
        near.stats().hits > before
    })
    .await;
    assert!(warmed, "the near cache never answered from memory: {:?}", near.stats());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_track_protocol_sends_changes_of_tracked_buckets_and_confirms_probes() {
    let a = TestServer::start(test_config(&shared_redis().url())).await;
    let b = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("near-protocol");
    let writer = a.client(&ns).await.cache();
    let reader = b.client(&ns).await.cache();
    let (requests, requests_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = reader
        .raw()
        .track(tokio_stream::wrappers::UnboundedReceiverStream::new(requests_rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.bucket_count, rookery_server::cache::BUCKETS);
    assert_eq!(first.heartbeat_interval, Some(prost_types::Duration { seconds: 0, nanos: 100_000_000 }));

    let tracked_key = "user:1";
    let bucket = rookery_server::cache::bucket_of(tracked_key);
    let other_key =
        (0..).map(|n| format!("other:{n}")).find(|k| rookery_server::cache::bucket_of(k) != bucket);
    let other_key = other_key.unwrap();
    requests.send(pb::CacheTrackRequest { track: vec![bucket], probe: 0 }).unwrap();
    loop {
        let message = stream.message().await.unwrap().unwrap();
        assert_eq!(message.confirmed, 0, "no probe was sent");
        if message.tracked.contains(&bucket) {
            break;
        }
    }
    // Written through the other replica: the untracked key first, so its change, had it been
    // sent, would come no later than the tracked one's.
    writer.set(&other_key, b"x".to_vec(), TTL).await.unwrap();
    writer.set(tracked_key, b"x".to_vec(), TTL).await.unwrap();
    writer.delete([tracked_key]).await.unwrap();
    let mut changed = Vec::new();
    while changed.len() < 2 {
        let message = stream.message().await.unwrap().unwrap();
        assert!(!message.gap, "no change was lost");
        assert!(message.origins.is_empty(), "no change had an origin: {:?}", message.origins);
        changed.extend(message.keys);
    }
    assert_eq!(changed, [tracked_key, tracked_key], "the set and the delete, and nothing else");
    // A marked Set's change carries its origin, by position beside unmarked ones.
    let marked = pb::CacheSetRequest {
        key: tracked_key.into(),
        value: b"m".to_vec(),
        ttl: Some(prost_types::Duration { seconds: 120, nanos: 0 }),
        origin: 77,
        ..Default::default()
    };
    writer.raw().set(marked).await.unwrap();
    writer.set(tracked_key, b"x".to_vec(), TTL).await.unwrap();
    let mut changed = Vec::new();
    while changed.len() < 2 {
        let message = stream.message().await.unwrap().unwrap();
        let origins = if message.origins.is_empty() { vec![0; message.keys.len()] } else { message.origins };
        assert_eq!(origins.len(), message.keys.len(), "one origin per key");
        changed.extend(message.keys.into_iter().zip(origins));
    }
    assert_eq!(changed, [(tracked_key.to_owned(), 77), (tracked_key.to_owned(), 0)]);
    // A probe is confirmed, after the changes made before it (a write now, then the probe).
    writer.set(tracked_key, b"y".to_vec(), TTL).await.unwrap();
    requests.send(pb::CacheTrackRequest { track: vec![], probe: 42 }).unwrap();
    let mut changed_before_confirmation = Vec::new();
    loop {
        let message = stream.message().await.unwrap().unwrap();
        changed_before_confirmation.extend(message.keys);
        if message.confirmed != 0 {
            assert_eq!(message.confirmed, 42);
            break;
        }
    }
    assert_eq!(changed_before_confirmation, [tracked_key], "the write came no later than the confirmation");
    // A bucket out of range ends the call with INVALID_ARGUMENT.
    requests.send(pb::CacheTrackRequest { track: vec![rookery_server::cache::BUCKETS], probe: 0 }).unwrap();
    let refused = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the call ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_reader_on_one_replica_sees_each_of_10000_writes_on_the_other_within_the_bound() {
    let a = TestServer::start(test_config(&shared_redis().url())).await;
    let b = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("near-coherent");
    let writer = a.client(&ns).await.cache();
    let near = b.client(&ns).await.cache().near(near_options());
    let key = "config:feature-flags";
    let mut writes = Writes::default();
    writes.write(&writer, key).await;
    warm(&near, key).await;

    let mut visible_after = Vec::with_capacity(10_000);
    let mut stale_reads = 0;
    let mut hits_after_visible = 0;
    for _ in 0..10_000 {
        let n = writes.write(&writer, key).await;
        loop {
            let started = Instant::now();
            let seen = value(near.get(key).await.unwrap());
            assert!(seen <= n, "read {seen}, newer than the newest write {n}");
            if seen == n {
                visible_after.push(started.saturating_duration_since(writes.0[n as usize]));
                break;
            }
            stale_reads += usize::from(writes.check(seen, started).is_some());
            // A hit never waits: let the servers and the stream's task (same runtime) run.
            tokio::task::yield_now().await;
        }
        // The next read keeps being served from memory until the next write.
        let before = near.stats().hits;
        assert_eq!(value(near.get(key).await.unwrap()), n);
        hits_after_visible += usize::from(near.stats().hits > before);
    }
    visible_after.sort();
    let stats = near.stats();
    println!(
        "10,000 writes on replica A, near reads on B: new value seen p50 {:?}, p99 {:?}, max {:?}; \
         {stale_reads} reads returned the previous value; {hits_after_visible} of 10,000 re-reads \
         were hits; {stats:?}",
        percentile(&visible_after, 0.5),
        percentile(&visible_after, 0.99),
        visible_after.last().unwrap(),
    );
    assert!(stats.invalidations >= 9_000, "changes reach the near cache: {stats:?}");
    assert!(hits_after_visible >= 5_000, "the near cache serves between writes: {hits_after_visible}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_the_near_caches_own_writes_never_serve_a_value_past_the_bound() {
    // A near cache skips the changes of its own answered writes (cache.proto, Track step 6);
    // its own reads, in flight across those writes, must still never keep an older value, and
    // a read after a write returns must see it.
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("near-own-writes");
    let near = server.client(&ns).await.cache().near(near_options());
    let key = "own:counter";
    let options = || SetOptions { ttl: Some(TTL), ..Default::default() };
    const WRITES: u64 = 2_000;
    near.set(key, b"0".to_vec(), options()).await.unwrap();
    let writes = std::sync::Mutex::new(Writes(vec![Instant::now()]));
    warm(&near, key).await;
    let writing = async {
        for n in 1..=WRITES {
            near.set(key, n.to_string().into_bytes(), options()).await.unwrap();
            writes.lock().unwrap().0.push(Instant::now());
            // Read-your-writes, whatever the other reads in flight kept.
            assert_eq!(value(near.get(key).await.unwrap()), n, "a read after own write {n}");
            tokio::task::yield_now().await;
        }
    };
    let reading = async {
        let (mut reads, mut stale) = (0, 0);
        while writes.lock().unwrap().0.len() as u64 <= WRITES {
            let started = Instant::now();
            let seen = value(near.get(key).await.unwrap());
            stale += usize::from(writes.lock().unwrap().check(seen, started).is_some());
            reads += 1;
            tokio::task::yield_now().await;
        }
        (reads, stale)
    };
    let ((), (reads, stale)) = tokio::join!(writing, reading);
    // Once the writes stop, the last one is served, from memory again.
    let last = eventually(Duration::from_secs(10), || async {
        let before = near.stats().hits;
        value(near.get(key).await.unwrap()) == WRITES && near.stats().hits > before
    })
    .await;
    let stats = near.stats();
    println!("{WRITES} own writes raced by {reads} own reads; {stats:?}");
    // A read that started after a write returned is never older than it: the near cache drops
    // its copy after its own write, and a read in flight before that cannot keep its value.
    assert_eq!(stale, 0, "reads that started after an own write returned and saw an older value");
    assert!(last, "the last write is read, and then served from memory: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_caches_own_write_is_served_from_memory_until_another_replica_changes_it() {
    let a = TestServer::start(test_config(&shared_redis().url())).await;
    let mut config = test_config(&shared_redis().url());
    config.cache.default_ttl = Some(TTL);
    let b = TestServer::start(config).await;
    let ns = namespace("near-own-kept");
    let writer = a.client(&ns).await.cache();
    let near = b.client(&ns).await.cache().near(near_options());
    let key = "own:kept";
    Writes::default().write(&writer, key).await;
    warm(&near, key).await;

    // Each own write with a TTL becomes the copy: the read after it is answered from memory.
    // A write's own change may come before its answer and then costs one read; most do not.
    let options = || SetOptions { ttl: Some(TTL), ..Default::default() };
    let mut kept = 0;
    for n in 1..=200u64 {
        near.set(key, n.to_string().into_bytes(), options()).await.unwrap();
        let before = near.stats();
        assert_eq!(value(near.get(key).await.unwrap()), n, "a read after own write {n}");
        kept += u64::from(near.stats().hits > before.hits);
    }
    println!("{kept} of 200 own writes read back from memory; {:?}", near.stats());
    assert!(kept >= 100, "{kept} of 200 own writes were read back from memory: {:?}", near.stats());

    // Another replica's write replaces it within the bound.
    writer.set_with(key, b"201".to_vec(), options()).await.unwrap();
    tokio::time::sleep(BOUND).await;
    assert_eq!(value(near.get(key).await.unwrap()), 201, "a read {BOUND:?} after another replica's write");

    // A TTL past any clock is refused by the server, not a panic in the client.
    let endless = SetOptions { ttl: Some(Duration::MAX), ..Default::default() };
    let refused = near.set(key, b"endless".to_vec(), endless).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // Without a TTL the server's default applies, which the near cache does not know: not kept.
    near.set(key, b"no-ttl".to_vec(), SetOptions::default()).await.unwrap();
    let before = near.stats();
    assert_eq!(near.get(key).await.unwrap().unwrap().value, &b"no-ttl"[..]);
    assert_eq!(near.stats().misses, before.misses + 1, "a write without a TTL is read from the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_caches_racing_writes_of_one_key_on_two_replicas_agree_with_redis_within_the_bound() {
    // Each round, two writes through a near cache on replica A and one through a near cache on
    // replica B race on one key, and each keeps its own value if it may. Whichever write Redis
    // ran last, once all three returned neither near cache may serve another past the bound: a
    // copy kept in spite of a change that came before it would be served until the next write.
    let a = TestServer::start(test_config(&shared_redis().url())).await;
    let b = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("near-racing-writes");
    let near_a = a.client(&ns).await.cache().near(near_options());
    let near_b = b.client(&ns).await.cache().near(near_options());
    let plain = a.client(&ns).await.cache();
    let key = "race:one-key";
    let options = || SetOptions { ttl: Some(TTL), ..Default::default() };
    near_a.set(key, b"start".to_vec(), options()).await.unwrap();
    warm(&near_a, key).await;
    warm(&near_b, key).await;
    const ROUNDS: usize = 300;
    let mut settled_after = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let written = |writer: &str| format!("{writer}{round}").into_bytes();
        let (x, y, z) = tokio::join!(
            near_a.set(key, written("a"), options()),
            near_a.set(key, written("a'"), options()),
            near_b.set(key, written("b"), options()),
        );
        let returned = Instant::now();
        assert!(x.unwrap() && y.unwrap() && z.unwrap());
        let last = plain.get(key).await.unwrap().expect("the key exists").value;
        for (name, near) in [("A", &near_a), ("B", &near_b)] {
            loop {
                let started = Instant::now();
                let read = near.get(key).await.unwrap().expect("the key exists").value;
                if read == last {
                    settled_after.push(started - returned);
                    break;
                }
                assert!(
                    started - returned < BOUND,
                    "round {round}: replica {name}'s near cache served {:?} {:?} after the writes \
                     returned; Redis holds {:?}",
                    String::from_utf8_lossy(&read),
                    started - returned,
                    String::from_utf8_lossy(&last),
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    settled_after.sort();
    let (stats_a, stats_b) = (near_a.stats(), near_b.stats());
    println!(
        "{ROUNDS} rounds of 3 racing writes: both near caches served Redis's value after p50 {:?}, \
         max {:?}; A {stats_a:?}, B {stats_b:?}",
        percentile(&settled_after, 0.5),
        settled_after.last().unwrap()
    );
}

/// Reads `key` through `near` for `during`, each read bounded by a timeout (a read that goes to
/// a stalled server may hang), checking every answer against the protocol's rule.
async fn read_through(near: &NearCache, key: &str, writes: &Writes, during: Duration) -> usize {
    let end = Instant::now() + during;
    let mut answered = 0;
    while Instant::now() < end {
        let started = Instant::now();
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(100), near.get(key)).await
            && let Ok(entry) = read
        {
            writes.check(value(entry), started);
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_killed_invalidation_path_empties_the_near_cache_and_never_serves_past_the_bound() {
    let redis = RedisProcess::start(&[]);
    let proxy = FaultProxy::start(redis.url().trim_start_matches("redis://").to_owned()).await;
    let a = TestServer::start(test_config(&redis.url())).await;
    // Replica B reaches Redis through the proxy, so its pub/sub connection can be stalled.
    let b = TestServer::start(test_config(&proxy.url())).await;
    let ns = namespace("near-faults");
    let writer = a.client(&ns).await.cache();
    let near = b.client(&ns).await.cache().near(near_options());
    let key = "k";
    let mut writes = Writes::default();
    writes.write(&writer, key).await;
    warm(&near, key).await;

    // A stall: B's Redis traffic, its pub/sub connection included, is held. Heartbeats stop, so
    // the near cache stops serving its copy within the bound; reads then go to B and hang.
    proxy.set(Fault::Blackhole);
    writes.write(&writer, key).await;
    let stalled_at = Instant::now();
    read_through(&near, key, &writes, BOUND * 3).await;
    assert!(!near.is_coherent(), "no probe was confirmed through the stall, yet copies are served");
    proxy.set(Fault::None);
    let resumed = eventually(Duration::from_secs(20), || async {
        matches!(tokio::time::timeout(Duration::from_secs(1), near.get(key)).await, Ok(Ok(Some(e))) if e.value == b"1"[..])
    })
    .await;
    assert!(resumed, "the near cache did not come back after the stall ({:?})", stalled_at.elapsed());
    warm(&near, key).await;

    // A killed pub/sub connection: messages published until B resubscribes are lost, so B
    // reports a gap and the near cache drops every copy.
    let names: Vec<String> = (0..100).map(|n| format!("warm:{n}")).collect();
    for name in &names {
        writer.set(name, b"w".to_vec(), TTL).await.unwrap();
    }
    let held = eventually(Duration::from_secs(10), || async {
        near.get_many(&names).await.unwrap();
        near.get_many(&names).await.unwrap();
        near.stats().entries >= 100
    })
    .await;
    assert!(held, "the warm keys are held: {:?}", near.stats());
    let resets = near.stats().resets;
    let mut conn = redis.conn().await;
    let killed: i64 =
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut conn).await.unwrap();
    assert!(killed >= 2, "both replicas' pub/sub connections were killed ({killed})");
    writes.write(&writer, key).await;
    let emptied = eventually(Duration::from_secs(20), || async { near.stats().resets > resets }).await;
    assert!(emptied, "no gap reached the near cache: {:?}", near.stats());
    let stats = near.stats();
    assert!(stats.entries < 100, "the copies were dropped: {stats:?}");
    read_through(&near, key, &writes, BOUND * 2).await;
    assert_eq!(value(near.get(key).await.unwrap()), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_under_the_capacity_with_a_million_distinct_keys_read() {
    let redis = RedisProcess::start(&[]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let ns = namespace("near-memory");
    let cache = server.client(&ns).await.cache();
    const CAPACITY: u64 = 8 << 20;
    let near = cache.near(NearOptions { capacity_bytes: CAPACITY, ..near_options() });
    let value = vec![7u8; 100];
    let batch = 1000;
    let mut peak = 0;
    for start in (0..1_000_000).step_by(batch) {
        let names: Vec<String> = (start..start + batch).map(|n| format!("key:{n}")).collect();
        cache
            .set_many(
                names.iter().map(|n| (n.clone(), value.clone())),
                SetOptions { ttl: Some(Duration::from_secs(300)), ..Default::default() },
            )
            .await
            .unwrap();
        let read = near.get_many(&names).await.unwrap();
        assert!(read.iter().all(|entry| entry.as_ref().is_some_and(|e| e.value == value)));
        if start % 100_000 == 0 {
            let stats = near.stats();
            assert!(stats.weighted_bytes <= CAPACITY, "{stats:?}");
            peak = peak.max(stats.weighted_bytes);
        }
    }
    let stats = near.stats();
    println!("1,000,000 distinct keys read; near cache holds {stats:?}, peak {peak} bytes of {CAPACITY}");
    assert!(stats.weighted_bytes <= CAPACITY, "{stats:?}");
    // It was used, not bypassed: it filled up to near its capacity.
    assert!(stats.weighted_bytes > CAPACITY / 2, "{stats:?}");
    assert_eq!(stats.misses, 1_000_000);
}
