//! The Cache on a Redis Cluster: keys spread over every master, batch calls across slots,
//! invalidation by prefix across all masters and by tag across slots, and the lease protocol
//! (wake-ups travel through cluster-wide pub/sub); locks, waiters and elections, and sessions on
//! a Cluster; Events pub/sub, streams and consumer groups on a Cluster; a master killed
//! under load, with its replica taking over; and a lock held by a stream whose master is killed.
//!
//! One room on purpose, past 600 lines: every scenario runs on the same Cluster harness, and
//! the failover cases share its helpers (promotion, slot owners, kill).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rookery_client::{
    CampaignEvent, Lease, LockOptions, RateLimit, SessionOptions, SessionUpdate, SetOptions, pb,
};
use rookery_server::redis::keys;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::{RedisCluster, TestServer, eventually, namespace, stampede, test_config};
use crate::lease_faults::{assert_lost_in_time, hold_renewed};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn cache_spans_every_master_of_a_cluster() {
    let cluster = RedisCluster::start().await;
    let mut config = test_config(&cluster.url());
    config.redis.cluster = true;
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace("cluster");
    let cache = a.client(&ns).await.cache();
    let other_replica = b.client(&ns).await.cache();

    // Batch writes and reads across slots.
    let names: Vec<String> = (0..60).map(|i| format!("user:{i}")).collect();
    let tagged = SetOptions { ttl: Some(MINUTE), tags: vec!["users".into()], ..SetOptions::default() };
    let stored =
        cache.set_many(names.iter().map(|n| (n.clone(), n.as_bytes().to_vec())), tagged).await.unwrap();
    assert!(stored.iter().all(|s| *s));
    let got = other_replica.get_many(names.clone()).await.unwrap();
    for (name, entry) in names.iter().zip(&got) {
        assert_eq!(entry.as_ref().expect("every key readable").value, name.as_bytes());
    }
    let per_node = cluster.keys_per_node(&ns).await;
    assert!(
        per_node.iter().filter(|keys| !keys.is_empty()).count() >= 2,
        "keys should spread over several masters: {:?}",
        per_node.iter().map(Vec::len).collect::<Vec<_>>()
    );

    // Tag invalidation reaches entries in every slot.
    assert_eq!(cache.invalidate_tags(["users"]).await.unwrap(), 60);
    assert!(other_replica.get_many(names.clone()).await.unwrap().iter().all(Option::is_none));

    // Prefix invalidation visits every master.
    let products: Vec<String> = (0..40).map(|i| format!("product:{i}")).collect();
    let plain = SetOptions { ttl: Some(MINUTE), ..SetOptions::default() };
    cache.set_many(products.iter().map(|n| (n.clone(), b"p".to_vec())), plain.clone()).await.unwrap();
    cache.set("productive", b"not a product".to_vec(), MINUTE).await.unwrap();
    assert_eq!(cache.invalidate_prefix("product:").await.unwrap(), 40);
    assert!(cache.get("productive").await.unwrap().is_some());
    assert_eq!(cache.delete(["productive", "missing"]).await.unwrap(), 1);

    // The stampede guard holds on a cluster, across both replicas.
    assert_eq!(stampede(&[cache.clone(), other_replica.clone()], 40).await, 1);
    cluster.assert_no_key_without_ttl(&ns).await;

    // Near caches are refused: no staleness bound holds across a cluster's nodes.
    let refused = cache.raw().track(tokio_stream::iter(Vec::new())).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
}

#[tokio::test]
async fn locks_work_across_the_slots_of_a_cluster() {
    let cluster = RedisCluster::start().await;
    let mut config = test_config(&cluster.url());
    config.redis.cluster = true;
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace("cluster-lock");
    let lock = a.client(&ns).await.lock();
    let other = b.client(&ns).await.lock();

    // Names in many slots: every script's keys share one slot (no CROSSSLOT).
    for i in 0..30 {
        let name = format!("lock:{i}");
        let lease = lock.acquire(&name, &LockOptions::new(MINUTE)).await.unwrap().expect("free");
        assert_eq!(other.acquire(&name, &LockOptions::new(MINUTE)).await.unwrap(), None);
        assert_eq!(other.inspect(&name).await.unwrap().holders.len(), 1);
        assert!(lock.release(&name, &lease.token).await.unwrap());
    }
    assert!(cluster.keys_per_node(&ns).await.iter().filter(|keys| !keys.is_empty()).count() >= 2);

    // A release on one replica wakes a waiter on the other (cluster-wide pub/sub), long before
    // the lease's minute would have run out.
    let held = lock.hold("held", &LockOptions::new(MINUTE)).await.unwrap().unwrap();
    let waiter = tokio::spawn({
        let other = other.clone();
        async move { other.acquire("held", &LockOptions::new(MINUTE).wait(Duration::from_secs(30))).await }
    });
    b.wait_for_gauge("rookery_lock_waiting", 1.0).await;
    assert!(held.release().await.unwrap());
    let granted = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken by the release");
    assert!(granted.unwrap().unwrap().is_some());

    // Elections, observed across replicas.
    let mut observer = other.observe("leader").await.unwrap();
    assert_eq!(observer.next().await.unwrap().unwrap(), None);
    let mut campaign = lock.campaign("leader", "a", Duration::from_secs(1)).await.unwrap();
    let Some(Ok(CampaignEvent::Elected(term))) = campaign.next().await else { panic!("not elected") };
    let seen = observer.next().await.unwrap().unwrap().expect("a leader");
    assert_eq!((seen.candidate.as_str(), seen.fence), ("a", term.fence));
    cluster.assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn sessions_of_many_subjects_across_the_slots_of_a_cluster() {
    let cluster = RedisCluster::start().await;
    let mut config = test_config(&cluster.url());
    config.redis.cluster = true;
    let server = TestServer::start(config).await;
    let ns = namespace("cluster-session");
    let sessions = server.client(&ns).await.session();
    let options = SessionOptions::default();
    let mut ids = Vec::new();
    for user in 0..20 {
        for _ in 0..2 {
            ids.push((
                user,
                sessions.create(format!("user-{user}"), HashMap::new(), &options).await.unwrap().id,
            ));
        }
    }
    assert!(cluster.keys_per_node(&ns).await.iter().filter(|keys| !keys.is_empty()).count() >= 2);
    // Every script's keys (session, alias, index) share the subject's slot.
    let (_, first) = &ids[0];
    sessions.update(first, SessionUpdate::new().set("k", b"v".to_vec()).if_version(1)).await.unwrap();
    let rotated = sessions.rotate(first, Some(Duration::from_secs(1))).await.unwrap();
    assert!(sessions.get(first, true).await.unwrap().is_some(), "grace alias on a cluster");
    assert_eq!(sessions.get(&rotated, true).await.unwrap().unwrap().version, 2);
    for user in 0..20 {
        assert_eq!(sessions.list_by_subject(format!("user-{user}")).await.unwrap().len(), 2);
        assert_eq!(sessions.delete_by_subject(format!("user-{user}")).await.unwrap(), 2);
    }
    for (_, id) in &ids[1..] {
        assert_eq!(sessions.get(id, false).await.unwrap(), None);
    }
    cluster.assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn events_streams_groups_and_pubsub_on_a_cluster() {
    use rookery_client::{AppendOptions, ConsumeOptions, Event, GroupSettings};
    let cluster = RedisCluster::start().await;
    let mut config = test_config(&cluster.url());
    config.redis.cluster = true;
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace("cluster-events");
    let (on_a, on_b) = (a.client(&ns).await.events(), b.client(&ns).await.events());

    // Pub/sub across replicas.
    let mut subscription = on_b.subscribe(["news"], Vec::<String>::new()).await.unwrap();
    on_a.publish("news", b"hello".to_vec()).await.unwrap();
    let event =
        tokio::time::timeout(Duration::from_secs(5), subscription.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(event, Event::Message { payload, .. } if payload == b"hello"[..]));

    // Publishes sent together over one call to channels in many slots (one burst need not stay
    // in one slot): each is published and received once.
    let channels: Vec<String> = (0..8).map(|i| format!("burst-{i}")).collect();
    let mut subscription = on_b.subscribe(channels.clone(), Vec::<String>::new()).await.unwrap();
    let publisher = on_a.publisher().await.unwrap();
    let answers =
        futures::future::join_all((0..400).map(|n: usize| {
            publisher.publish(channels[n % channels.len()].clone(), n.to_string().into_bytes())
        }))
        .await;
    // (Each is answered the subscribers of the node its channel's slot lives on, which need
    // not be the node replica b listens on: the count is not checked.)
    for (n, answer) in answers.into_iter().enumerate() {
        answer.unwrap_or_else(|e| panic!("publish {n}: {e:?}"));
    }
    let mut received = std::collections::HashSet::new();
    while received.len() < 400 {
        let event = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            Event::Message { channel, payload, .. } => {
                let n: usize = std::str::from_utf8(&payload).unwrap().parse().unwrap();
                assert_eq!(channel, channels[n % channels.len()]);
                assert!(received.insert(n), "message {n} delivered twice");
            }
            Event::Gap { missed, .. } => panic!("{missed} messages missed"),
        }
    }

    // Streams in many slots, each with a group: consume, nack to the dead letters, follow.
    let streams: Vec<String> = (0..12).map(|i| format!("stream-{i}")).collect();
    let options = ConsumeOptions {
        create_group: true,
        settings: GroupSettings { ack_timeout: Some(MINUTE), max_deliveries: Some(1) },
        ..ConsumeOptions::default()
    };
    for stream in &streams {
        let fields = HashMap::from([("k".to_owned(), stream.as_bytes().to_vec())]);
        let id = on_a.append(stream, fields.clone(), &AppendOptions::default()).await.unwrap().0;
        let mut consumer = on_b.consume(stream, "g", "c", &options).await.unwrap();
        let batch =
            tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(batch.entries[0].id, id);
        assert_eq!(consumer.nack([id.clone()], Duration::ZERO).await.unwrap(), (0, 1));
        let described = on_a.describe(stream).await.unwrap();
        assert_eq!((described.length, described.dead_letters, described.groups[0].pending), (1, 1, 0));
        let mut dead = on_a.read_dead_letters(stream, "", false).await.unwrap();
        assert_eq!(dead.next().await.unwrap().unwrap()[0].fields["k"], stream.as_bytes());
        let mut follow = on_a.read(stream, id, true).await.unwrap();
        let next = on_b.append(stream, fields, &AppendOptions::default()).await.unwrap().0;
        let batch =
            tokio::time::timeout(Duration::from_secs(5), follow.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(batch[0].id, next);
    }
    let per_node = cluster.keys_per_node(&ns).await;
    assert!(per_node.iter().filter(|keys| !keys.is_empty()).count() >= 2, "streams spread over masters");
}

/// What one call of the failover test's load saw.
#[derive(Debug, Clone)]
struct Call {
    op: &'static str,
    /// Whether its key's slot was served by the master that is killed.
    victim: bool,
    started: Instant,
    ended: Instant,
    /// `None` if it succeeded.
    failed: Option<Code>,
}

/// The calls made so far, and the fencing tokens granted per lock name in grant order.
#[derive(Default)]
struct Record {
    calls: Vec<Call>,
    fences: HashMap<String, Vec<(Instant, u64)>>,
}

type Shared = Arc<Mutex<Record>>;

fn log(record: &Shared, op: &'static str, victim: bool, started: Instant, failed: Option<Code>) {
    record.lock().unwrap().calls.push(Call { op, victim, started, ended: Instant::now(), failed });
}

/// Counts of failed calls by gRPC code.
fn failures_by_code<'a>(calls: impl Iterator<Item = &'a Call>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls {
        if let Some(code) = call.failed {
            *counts.entry(format!("{code:?}")).or_default() += 1;
        }
    }
    counts
}

/// A master of a 3+3 Cluster is killed (SIGKILL) while client loops write and read the cache,
/// take and give back locks and consume rate limits on keys of every master, and invalidate
/// cache entries by prefix (which visits every master). Every call either succeeds or answers
/// UNAVAILABLE (never INTERNAL); calls succeed again within two seconds of the promotion the
/// cluster itself records; fencing tokens of a lock whose master died keep increasing; and a
/// server that gets no calls at all goes NOT_SERVING while the dead master's slots are
/// unserved and SERVING again after the promotion.
#[tokio::test]
async fn a_master_killed_under_load_fails_over_without_internal_errors() {
    let began = Instant::now();
    let mut cluster = RedisCluster::start_with_replicas(1).await;
    let mut config = test_config(&cluster.url());
    config.redis.cluster = true;
    // The default: a call retries for this long before it answers UNAVAILABLE.
    config.redis.command_timeout = Duration::from_secs(2);
    let (busy, idle) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace("failover");
    let client = busy.client(&ns).await;

    // The master to kill: the one serving the slot of the lock "fenced".
    let fenced_slot = cluster.slot_of(0, &keys::lock(&ns, "fenced").fence).await;
    let victim = cluster.master_of(0, fenced_slot).await.expect("a live master");
    let masters: Vec<(u16, u16, usize)> = {
        let view = cluster.view(victim).await;
        let mut ranges = Vec::new();
        for node in view.iter().filter(|node| node.master) {
            let index = cluster.nodes().iter().position(|n| n.url().ends_with(&format!(":{}", node.port)));
            for &(first, last) in &node.slots {
                ranges.push((first, last, index.unwrap()));
            }
        }
        ranges
    };
    let on_victim = |slot: u16| {
        masters.iter().any(|&(first, last, node)| node == victim && (first..=last).contains(&slot))
    };
    let viewer = masters.iter().map(|&(_, _, node)| node).find(|&node| node != victim).unwrap();
    let mut victim_of = HashMap::new();
    for i in 0..24 {
        for key in [
            keys::cache(&ns, &format!("k{i}")).value,
            keys::lock(&ns, &format!("l{i}")).fence,
            keys::rate_limit(&ns, &format!("r{i}"), "any"),
        ] {
            let slot = cluster.slot_of(viewer, &key).await;
            victim_of.insert(key, on_victim(slot));
        }
    }
    assert!(victim_of.values().filter(|v| **v).count() >= 6, "some keys on the victim: {victim_of:?}");
    assert!(victim_of.values().filter(|v| !**v).count() >= 6, "some keys elsewhere");
    let victim_of = Arc::new(victim_of);

    // The idle server's health, as it reports every change.
    let health = Arc::new(Mutex::new(Vec::<(Instant, ServingStatus)>::new()));
    let health_task = tokio::spawn({
        let health = health.clone();
        let channel = idle.client(&ns).await.channel();
        async move {
            let mut client = HealthClient::new(channel);
            let mut watch =
                client.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
            while let Some(Ok(update)) = watch.next().await {
                health.lock().unwrap().push((Instant::now(), update.status()));
            }
        }
    });

    let record: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for t in 0..2 {
        let (record, stop, victim_of) = (record.clone(), stop.clone(), victim_of.clone());
        let cache = client.cache();
        let ns = ns.clone();
        loops.push(tokio::spawn(async move {
            for i in (t..24).step_by(2).cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("k{i}");
                let victim = victim_of[&keys::cache(&ns, &name).value];
                let started = Instant::now();
                let set = cache.set(name.clone(), name.as_bytes().to_vec(), MINUTE).await;
                log(&record, "Cache.Set", victim, started, set.err().map(|s| s.code()));
                let started = Instant::now();
                match cache.get(name.clone()).await {
                    Ok(found) => {
                        // A value written before the kill may be lost with it; never another.
                        if let Some(entry) = found {
                            assert_eq!(entry.value, name.as_bytes());
                        }
                        log(&record, "Cache.Get", victim, started, None);
                    }
                    Err(status) => log(&record, "Cache.Get", victim, started, Some(status.code())),
                }
            }
        }));
    }
    for t in 0..2 {
        let (record, stop, victim_of) = (record.clone(), stop.clone(), victim_of.clone());
        let lock = client.lock();
        let ns = ns.clone();
        loops.push(tokio::spawn(async move {
            let mut names: Vec<String> = (t..24).step_by(2).map(|i| format!("l{i}")).collect();
            if t == 0 {
                names.push("fenced".into());
            }
            for name in names.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let victim = name == "fenced" || victim_of[&keys::lock(&ns, name).fence];
                let started = Instant::now();
                // A short lease: one whose release was lost in the failover frees itself soon.
                match lock.acquire(name.clone(), &LockOptions::new(Duration::from_secs(1))).await {
                    Ok(Some(lease)) => {
                        log(&record, "Lock.Acquire", victim, started, None);
                        record
                            .lock()
                            .unwrap()
                            .fences
                            .entry(name.clone())
                            .or_default()
                            .push((started, lease.fence));
                        let started = Instant::now();
                        let released = lock.release(name.clone(), lease.token).await;
                        log(&record, "Lock.Release", victim, started, released.err().map(|s| s.code()));
                    }
                    Ok(None) => log(&record, "Lock.Acquire", victim, started, None),
                    Err(status) => log(&record, "Lock.Acquire", victim, started, Some(status.code())),
                }
            }
        }));
    }
    for t in 0..2 {
        let (record, stop, victim_of) = (record.clone(), stop.clone(), victim_of.clone());
        let limiter = client.rate_limiter();
        let ns = ns.clone();
        loops.push(tokio::spawn(async move {
            let limit = RateLimit::per(1_000_000, Duration::from_secs(1));
            for i in (t..24).step_by(2).cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("r{i}");
                let victim = victim_of[&keys::rate_limit(&ns, &key, "any")];
                let started = Instant::now();
                let checked = limiter.check(key, &limit, 1).await;
                log(&record, "RateLimiter.Check", victim, started, checked.err().map(|s| s.code()));
            }
        }));
    }
    // Prefix invalidation visits every master (keyspace-wide SCANs), the dead one included.
    {
        let (record, stop) = (record.clone(), stop.clone());
        let cache = client.cache();
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let invalidated = cache.invalidate_prefix("nothing-here:").await;
                log(&record, "Cache.InvalidatePrefix", true, started, invalidated.err().map(|s| s.code()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    let ops = [
        "Cache.Set",
        "Cache.Get",
        "Lock.Acquire",
        "Lock.Release",
        "RateLimiter.Check",
        "Cache.InvalidatePrefix",
    ];
    let succeeded_since = |since: Instant, op: &str| {
        record
            .lock()
            .unwrap()
            .calls
            .iter()
            .any(|c| c.op == op && c.victim && c.started >= since && c.failed.is_none())
    };
    let fenced_since = |since: Instant| {
        record.lock().unwrap().fences.get("fenced").is_some_and(|f| f.iter().any(|(at, _)| *at >= since))
    };

    // Warm up: every kind of call has succeeded on the victim's keys, "fenced" has been granted.
    let start = Instant::now();
    let warm = eventually(Duration::from_secs(30), || async {
        ops.iter().all(|op| succeeded_since(start, op)) && fenced_since(start)
    })
    .await;
    assert!(warm, "the load never got going");
    let serving_before = eventually(Duration::from_secs(10), || async {
        health.lock().unwrap().last().is_some_and(|(_, s)| *s == ServingStatus::Serving)
    })
    .await;
    assert!(serving_before, "the idle server is SERVING before the kill");

    let killed_at = Instant::now();
    cluster.kill(victim);
    let promoted = cluster.wait_for_takeover(viewer, fenced_slot, victim, Duration::from_secs(30)).await;
    let promoted_at = Instant::now();
    let promoted = promoted.expect("a replica took over the dead master's slots");
    let promotion = promoted_at - killed_at;

    // Every kind of call succeeds again on the victim's slots, and the idle server is SERVING
    // again after having said NOT_SERVING.
    let recovered = eventually(promotion + Duration::from_secs(20), || async {
        ops.iter().all(|op| succeeded_since(promoted_at, op)) && fenced_since(promoted_at)
    })
    .await;
    let recovered_at = Instant::now();
    let healed = eventually(Duration::from_secs(20), || async {
        let health = health.lock().unwrap();
        let after_kill: Vec<ServingStatus> =
            health.iter().filter(|(at, _)| *at >= killed_at).map(|(_, s)| *s).collect();
        after_kill.contains(&ServingStatus::NotServing) && after_kill.last() == Some(&ServingStatus::Serving)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        task.await.unwrap();
    }
    health_task.abort();

    let record = std::mem::take(&mut *record.lock().unwrap());
    let health = health.lock().unwrap().clone();
    let since =
        |t: Instant| move |at: Instant| format!("{:.2}s", at.saturating_duration_since(t).as_secs_f64());
    let first_success = ops.map(|op| {
        let first = record
            .calls
            .iter()
            .filter(|c| c.op == op && c.victim && c.started >= killed_at && c.failed.is_none())
            .map(|c| c.ended)
            .min();
        (op, first.map(since(killed_at)))
    });
    let health_changes: Vec<(String, ServingStatus)> =
        health.iter().filter(|(at, _)| *at >= killed_at).map(|(at, s)| (since(killed_at)(*at), *s)).collect();
    let fenced = &record.fences["fenced"];
    let before: Vec<u64> = fenced.iter().filter(|(at, _)| *at < killed_at).map(|(_, f)| *f).collect();
    let after: Vec<u64> = fenced.iter().filter(|(at, _)| *at >= promoted_at).map(|(_, f)| *f).collect();
    let failed_after: Vec<Duration> =
        record.calls.iter().filter(|c| c.failed.is_some()).map(|c| c.ended - c.started).collect();
    eprintln!(
        "failover: {:.1}s of set-up and warm-up; killed node {victim}, node {promoted} promoted \
         after {:.2}s (seen from node {viewer}); \
         first success on the dead master's slots after the kill: {first_success:?}; \
         failures by code: {:?} (on the dead master's slots: {:?}; elsewhere: {:?}), \
         each after {:?} to {:?}; calls: {}; \
         idle server's health after the kill: {health_changes:?}; \
         \"fenced\" tokens: last before {:?}, first after {:?}",
        (killed_at - began).as_secs_f64(),
        promotion.as_secs_f64(),
        failures_by_code(record.calls.iter()),
        failures_by_code(record.calls.iter().filter(|c| c.victim)),
        failures_by_code(record.calls.iter().filter(|c| !c.victim)),
        failed_after.iter().min(),
        failed_after.iter().max(),
        record.calls.len(),
        before.last(),
        after.first(),
    );

    assert!(
        recovered,
        "calls on the dead master's slots never succeeded again ({:?})",
        recovered_at - killed_at
    );
    // Before the kill nothing failed; after it, a failure is UNAVAILABLE and nothing else.
    let early: Vec<&Call> =
        record.calls.iter().filter(|c| c.ended < killed_at && c.failed.is_some()).collect();
    assert!(early.is_empty(), "calls failed before the kill: {early:?}");
    let codes = failures_by_code(record.calls.iter());
    assert!(codes.keys().all(|code| code == "Unavailable"), "only UNAVAILABLE during a failover: {codes:?}");
    // Calls succeed again within two seconds of the promotion: each kind succeeded on the dead
    // master's slots in a call started by then, and none started later fails.
    let back_by = promoted_at + Duration::from_secs(2);
    for op in ops {
        assert!(
            record.calls.iter().any(|c| c.op == op
                && c.victim
                && (killed_at..=back_by).contains(&c.started)
                && c.failed.is_none()),
            "no {op} started within 2 s of the promotion succeeded"
        );
    }
    let late: Vec<&Call> =
        record.calls.iter().filter(|c| c.started > back_by && c.failed.is_some()).collect();
    assert!(late.is_empty(), "calls failed more than 2 s after the promotion: {late:?}");
    // Fencing tokens only ever increase, per lock, across the failover.
    for (name, fences) in &record.fences {
        assert!(fences.windows(2).all(|w| w[0].1 < w[1].1), "{name}: fences went back: {fences:?}");
    }
    assert!(!before.is_empty() && !after.is_empty() && before.last() < after.first());
    assert!(healed, "the idle server's health did not go NOT_SERVING and back: {health_changes:?}");
    assert_eq!(idle.admin_get("/healthz").await.0, 200);
}

/// What a Hold's stream said once its master had been killed.
#[derive(Debug, Clone, Copy)]
enum Heard {
    /// A renewal: when it ran and the lease's new end, both by Redis's clock.
    Renewed { at: SystemTime, end: SystemTime },
    /// `lost`, and when it reached this test.
    Lost { reason: pb::LockLostReason, received: SystemTime },
}

/// Reads a hold's events until `lost`, or until `renewals` renewals ran on Redis after `after`.
async fn hear(
    events: &mut tonic::Streaming<pb::LockHoldResponse>,
    after: SystemTime,
    renewals: usize,
    timeout: Duration,
) -> Vec<Heard> {
    use pb::lock_hold_response::Event;
    let reading = async {
        let mut heard = Vec::new();
        loop {
            let message = events.next().await.expect("the hold's stream ended without lost");
            match message.expect("the hold's stream failed").event.unwrap() {
                Event::Renewed(renewed) => {
                    let end = SystemTime::try_from(renewed.expires_at.unwrap()).unwrap();
                    let left = Duration::try_from(renewed.ttl.unwrap()).unwrap();
                    heard.push(Heard::Renewed { at: end - left, end });
                    let since =
                        heard.iter().filter(|h| matches!(h, Heard::Renewed { at, .. } if *at > after));
                    if since.count() >= renewals {
                        break heard;
                    }
                }
                Event::Lost(lost) => {
                    heard.push(Heard::Lost { reason: lost.reason(), received: SystemTime::now() });
                    break heard;
                }
                other => panic!("{other:?}"),
            }
        }
    };
    tokio::time::timeout(timeout, reading).await.expect("the hold neither renewed nor said lost")
}

/// `a - b` in seconds, negative when `a` is the earlier.
fn minus(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(later) => later.as_secs_f64(),
        Err(earlier) => -earlier.duration().as_secs_f64(),
    }
}

/// How a Hold came through the death of its lock's master.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The holder heard `lost` in time, and the lock went to a second client only after that.
    Lost,
    /// Renewals went on on the promoted replica: no `lost`, the same grant, nobody else got it.
    Kept,
}

/// Holds the lock "l" of `ns` with `ttl` through `holder_side` (renewed once), has a second
/// client wait for it through `other_side`, kills the lock's master (SIGKILL) and follows the
/// hold until it says `lost` or has been renewed twice on the promoted replica. Asserts what
/// the Hold promises either way, judged by Redis's clock and record, and prints the numbers.
async fn hold_through_failover(
    cluster: &mut RedisCluster,
    viewer: usize,
    (holder_side, other_side): (&TestServer, &TestServer),
    ns: &str,
    ttl: Duration,
) -> Outcome {
    let holder = holder_side.client(ns).await.lock();
    let other = other_side.client(ns).await.lock();
    let holders_key = keys::lock(ns, "l").holders;
    let slot = cluster.slot_of(viewer, &holders_key).await;
    let victim = cluster.master_of(viewer, slot).await.expect("a live master");

    let (mut events, renewed_end) = hold_renewed(&holder, ttl).await;
    let before = other.inspect("l").await.unwrap();
    assert_eq!(before.holders.len(), 1, "{before:?}");
    let fence = before.holders[0].fence;
    // A second client waits for the lock through the other server replica, retrying while the
    // failover makes its calls fail: it learns the lease's end from Redis and tries again then.
    let next_holder = tokio::spawn(async move {
        let options = LockOptions::new(ttl).wait(Duration::from_secs(30));
        loop {
            match other.acquire("l", &options).await {
                Ok(Some(lease)) => break lease,
                Ok(None) => {}
                Err(status) if status.code() == Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        }
    });

    cluster.kill(victim);
    // Redis is dead and reaped: whatever it ran, it ran before this instant.
    let killed_at = SystemTime::now();
    let cluster = &*cluster;
    let (heard, (promoted, promoted_at, promoted_end)) =
        tokio::join!(hear(&mut events, killed_at, 2, ttl * 3 + Duration::from_secs(30)), async {
            let promoted = cluster.wait_for_takeover(viewer, slot, victim, Duration::from_secs(30)).await;
            let promoted_at = SystemTime::now();
            let promoted = promoted.expect("a replica took over the dead master's slots");
            // The lease as the promoted replica has it, looked at once it serves the slot.
            let lease: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(&holders_key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut cluster.nodes()[promoted].conn().await)
                .await
                .unwrap();
            let end = lease.first().map(|&(_, ms)| UNIX_EPOCH + Duration::from_millis(ms as u64));
            (promoted, promoted_at, end)
        });

    // The lease's end as last confirmed by Redis: every renewal only moves it later.
    let renewals: Vec<(SystemTime, SystemTime)> = heard
        .iter()
        .filter_map(|h| match *h {
            Heard::Renewed { at, end } => Some((at, end)),
            Heard::Lost { .. } => None,
        })
        .collect();
    let told_end = |until: SystemTime| {
        renewals.iter().filter(|(at, _)| *at <= until).map(|(_, end)| *end).fold(renewed_end, SystemTime::max)
    };
    let at_kill = told_end(killed_at);
    let on_promoted = match promoted_end {
        None => "no lease left".to_owned(),
        Some(end) if minus(end, killed_at) > ttl.as_secs_f64() => {
            format!("the lease already renewed there, ending {:+.3}s after the kill", minus(end, killed_at))
        }
        Some(end) => {
            if end < at_kill {
                eprintln!(
                    "FINDING: the promoted replica's copy of the lease ends {:.3}s before the end \
                     the holder was last told (ttl {ttl:?}): the master's last renewal never \
                     reached its replica",
                    minus(at_kill, end)
                );
            }
            format!("the lease ending {:+.3}s from the end the holder was last told", minus(end, at_kill))
        }
    };
    let numbers = format!(
        "ttl {ttl:?}: the holder was last told, before the kill, of an end {:+.3}s after it; node \
         {promoted} promoted, seen {:.3}s after the kill, with {on_promoted}",
        minus(at_kill, killed_at),
        minus(promoted_at, killed_at)
    );

    if let Some(&Heard::Lost { reason, received }) = heard.last() {
        let last_end = told_end(received);
        assert_eq!(reason, pb::LockLostReason::Unreachable, "{numbers}");
        let ahead = assert_lost_in_time(last_end, received, ttl);
        let next: Lease = tokio::time::timeout(Duration::from_secs(30), next_holder)
            .await
            .expect("a second client gets the lock once the promoted replica serves it")
            .unwrap();
        let granted_at = next.expires_at - next.ttl;
        assert!(
            received < granted_at,
            "a second client was granted the lock {:.3}s before the holder heard lost; {numbers}",
            minus(received, granted_at)
        );
        assert!(
            last_end <= granted_at,
            "a second client was granted the lock {:.3}s before the end the holder had last \
             been told; {numbers}",
            minus(last_end, granted_at)
        );
        assert!(next.fence > fence, "fencing went back: {} after {fence}", next.fence);
        eprintln!(
            "hold through a failover, {numbers}; lost heard {ahead:?} before the lease's last \
             confirmed end; the next grant (Redis's clock) {:.3}s after that end, {:.3}s after \
             lost, {:.3}s after the kill",
            minus(granted_at, last_end),
            minus(granted_at, received),
            minus(granted_at, killed_at)
        );
        return Outcome::Lost;
    }

    // Kept: renewals went on without a gap in the lease, the first on the promoted replica
    // within the time the server allows a renewal (the last confirmed end less the margin).
    let resumed: Vec<&(SystemTime, SystemTime)> = renewals.iter().filter(|(at, _)| *at > killed_at).collect();
    assert!(resumed.len() >= 2, "{heard:?}");
    let mut end = renewed_end;
    for &(at, next_end) in &renewals {
        assert!(at < end, "a renewal ran {:.3}s after the lease it renewed ended; {numbers}", minus(at, end));
        end = next_end;
    }
    let resumed_at = resumed[0].0;
    let margin = rookery_server::lock::safety_margin(ttl);
    assert!(
        resumed_at + margin <= at_kill,
        "the first renewal on the promoted replica ran {:.3}s after the lease could be believed; \
         {numbers}",
        minus(resumed_at + margin, at_kill)
    );
    // Redis's record: the same grant (its fencing token) is still the only holder.
    let after = holder_side.client(ns).await.lock().inspect("l").await.unwrap();
    assert_eq!(after.holders.len(), 1, "{after:?}");
    assert_eq!((after.holders[0].fence, after.last_fence), (fence, fence), "{after:?}");
    let inspected_end = SystemTime::try_from(after.holders[0].expires_at.unwrap()).unwrap();
    assert!(inspected_end >= resumed.last().unwrap().1, "{after:?} {heard:?}");
    assert!(
        !next_holder.is_finished(),
        "a second client was granted the lock while the hold kept it: {:?}",
        next_holder.await
    );
    next_holder.abort();
    eprintln!(
        "hold through a failover, {numbers}; renewals resumed on the promoted replica {:.3}s \
         after the kill, {:.3}s before the end the holder had last been told; fencing token \
         unchanged ({fence}); no second grant",
        minus(resumed_at, killed_at),
        minus(at_kill, resumed_at)
    );
    Outcome::Kept
}

/// A lock held by a stream (Hold) whose master is killed (SIGKILL) in a 3+3 Cluster, with a
/// second client waiting for it through another server replica.
///
/// A 1 s lease cannot survive: the last renewal the dead master confirmed ends less than 1 s
/// after the kill, and no replica can be promoted sooner than the node timeout (1 s) plus the
/// election delay (at least 0.5 s) after it, and a renewal of a lease that has ended is refused.
/// So the holder hears `lost` no later than that confirmed end, and the second client gets the
/// lock only after both. An 8 s lease outlives the promotion by far: the hold renews it on the
/// promoted replica, says nothing of loss, keeps its grant (fencing token) and nobody else
/// gets the lock.
// Two worker threads: the `lost` message's way to this test must not queue behind the cluster
// clients' reconnection attempts on the one thread a plain runtime would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_whose_master_is_killed_is_lost_in_time_or_kept() {
    let began = Instant::now();
    let mut cluster = RedisCluster::start_with_replicas(1).await;
    let mut config = test_config(&cluster.url());
    config.redis.cluster = true;
    config.redis.command_timeout = Duration::from_secs(2);
    let (holder_side, other_side) =
        tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    // Two namespaces whose lock "l" lives on two different masters (each with its replica), and
    // a node that outlives both kills to watch the cluster from.
    let master_of_lock = async |ns: &str| {
        let slot = cluster.slot_of(0, &keys::lock(ns, "l").holders).await;
        cluster.master_of(0, slot).await.expect("a live master")
    };
    let short = namespace("hold-failover");
    let first = master_of_lock(&short).await;
    let (long, second) = loop {
        let ns = namespace("hold-failover");
        let master = master_of_lock(&ns).await;
        if master != first {
            break (ns, master);
        }
    };
    let viewer = (0..cluster.nodes().len()).find(|n| ![first, second].contains(n)).unwrap();
    let servers = (&holder_side, &other_side);
    let lost = hold_through_failover(&mut cluster, viewer, servers, &short, Duration::from_secs(1)).await;
    assert_eq!(lost, Outcome::Lost, "a 1 s lease cannot outlive a promotion");
    let kept = hold_through_failover(&mut cluster, viewer, servers, &long, Duration::from_secs(8)).await;
    assert_eq!(kept, Outcome::Kept, "an 8 s lease outlives the promotion");
    eprintln!("hold through a failover: {:.1}s in all", began.elapsed().as_secs_f64());
}
