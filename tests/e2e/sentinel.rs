//! Redis Sentinel: the server finds the master through three sentinels and follows a failover.
//!
//! The master is killed (SIGKILL) while every kind of caller is busy: cache writes, lock
//! grants, pub/sub, stream appends and a consumer group's consumer. The failover's time comes
//! from the sentinels' own record (the moment one of them names the new master), the server's
//! switch from its own metric, and the first call that succeeded again from Redis's clock (a
//! fencing token is Redis's time in microseconds at the grant), so a slow machine cannot make
//! the server look late. Checked: calls succeed again within the failover time + 2 s, and
//! meanwhile fail only with UNAVAILABLE; a subscriber is told of the gap and keeps receiving;
//! fencing tokens keep increasing; the Lua scripts, which Redis does not replicate, are loaded
//! on the new master; the consumer resumes and gets every entry appended after the failover;
//! every write acknowledged after it is on the new master; and the old master, back from its
//! crash as an empty master before the sentinels demote it, is never written to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rookery_client::{AppendOptions, ConsumeOptions, Event, GapReason, LockOptions};
use tokio_stream::StreamExt;

use rookery_server::redis::{keys, scripts};

use crate::harness::{RedisSentinel, TestServer, eventually, namespace, test_config};

/// What the callers saw, shared by their tasks.
#[derive(Default)]
struct Seen {
    /// Failed calls, by RPC and code.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Cache keys whose write was acknowledged, with when.
    written: Mutex<Vec<(String, Instant)>>,
    /// Fencing tokens granted, in grant order (one caller, so that order is the grants').
    fences: Mutex<Vec<u64>>,
    /// Pub/sub messages published: sequence number, receivers, when acknowledged.
    published: Mutex<Vec<(u64, u64, Instant)>>,
    /// What the subscriber received, in order.
    received: Mutex<Vec<Event>>,
    /// Stream entries whose append was acknowledged: sequence number, when.
    appended: Mutex<Vec<(u64, Instant)>>,
    /// Sequence numbers the consumer processed.
    processed: Mutex<BTreeSet<u64>>,
}

impl Seen {
    fn failed(&self, rpc: &str, status: &tonic::Status) {
        *self.errors.lock().unwrap().entry(format!("{rpc} {:?}", status.code())).or_default() += 1;
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A labelled sample from the server's `/metrics`.
fn metric(body: &str, name: &str, label: &str) -> Option<f64> {
    body.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .find_map(|line| line.rsplit_once(' ')?.1.parse().ok())
}

/// Whether the Redis on `port` has the script `sha` in its cache.
async fn has_script(redis: &RedisSentinel, port: u16, sha: &str) -> bool {
    let exists: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(sha)
        .query_async(&mut redis.node_on(port).conn().await)
        .await
        .unwrap();
    exists[0]
}

#[tokio::test]
async fn the_server_follows_a_sentinel_failover_under_load() {
    let mut redis = RedisSentinel::start().await;
    // With [redis.sentinel], redis.url is not used: this one leads nowhere.
    let mut config = test_config("redis://127.0.0.1:1");
    redis.configure(&mut config);
    let server = TestServer::start(config).await;
    let ns = namespace("sentinel");
    let client = server.client(&ns).await;
    let (cache, lock, events) = (client.cache(), client.lock(), client.events());
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));

    let mut subscription = events.subscribe(["news"], Vec::<String>::new()).await.unwrap();
    let subscriber = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Some(Ok(event)) = subscription.next().await {
                seen.received.lock().unwrap().push(event);
            }
        }
    });
    let mut consumer = tokio::spawn({
        let (events, seen) = (events.clone(), seen.clone());
        async move {
            let options = ConsumeOptions { create_group: true, ..ConsumeOptions::default() };
            events
                .process("jobs", "workers", "w1", &options, |delivery| {
                    let seq = String::from_utf8_lossy(&delivery.fields["seq"]).parse().unwrap();
                    seen.processed.lock().unwrap().insert(seq);
                    async { Ok::<_, ()>(()) }
                })
                .await
        }
    });
    let mut load = Vec::new();
    load.push(tokio::spawn({
        let (cache, seen, stop) = (cache.clone(), seen.clone(), stop.clone());
        async move {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("w{i}");
                match cache.set(&key, b"v".to_vec(), Duration::from_secs(60)).await {
                    Ok(_) => seen.written.lock().unwrap().push((key, Instant::now())),
                    Err(status) => seen.failed("Cache.Set", &status),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }));
    load.push(tokio::spawn({
        let (lock, seen, stop) = (lock.clone(), seen.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                match lock.acquire("fenced", &LockOptions::new(Duration::from_secs(2))).await {
                    Ok(Some(lease)) => {
                        seen.fences.lock().unwrap().push(lease.fence);
                        if let Err(status) = lock.release("fenced", &lease.token).await {
                            seen.failed("Lock.Release", &status);
                        }
                    }
                    // Still held: by the lease granted before the failover whose release failed.
                    Ok(None) => {}
                    Err(status) => seen.failed("Lock.Acquire", &status),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }));
    load.push(tokio::spawn({
        let (events, seen, stop) = (events.clone(), seen.clone(), stop.clone());
        async move {
            for seq in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match events.publish("news", seq.to_string().into_bytes()).await {
                    Ok(receivers) => seen.published.lock().unwrap().push((seq, receivers, Instant::now())),
                    Err(status) => seen.failed("Events.Publish", &status),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }));
    load.push(tokio::spawn({
        let (events, seen, stop) = (events.clone(), seen.clone(), stop.clone());
        async move {
            for seq in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let fields = HashMap::from([("seq".to_owned(), seq.to_string().into_bytes())]);
                match events.append("jobs", fields, &AppendOptions::default()).await {
                    Ok(_) => seen.appended.lock().unwrap().push((seq, Instant::now())),
                    Err(status) => seen.failed("Events.Append", &status),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }));

    // Every caller is busy before the master dies.
    let busy = eventually(Duration::from_secs(20), || async {
        seen.written.lock().unwrap().len() >= 20
            && seen.fences.lock().unwrap().len() >= 5
            && seen.received.lock().unwrap().len() >= 5
            && seen.processed.lock().unwrap().len() >= 5
    })
    .await;
    assert!(busy, "the load did not get going");
    assert!(seen.errors.lock().unwrap().is_empty(), "errors before the failover: {:?}", seen.errors);

    // Connections cut without a failover (CLIENT KILL) are mended on the same master.
    let old = redis.master_port().await;
    let master_label = format!("master=\"{}\"", redis.name);
    let written_before = seen.written.lock().unwrap().len();
    let cut: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut redis.node_on(old).conn().await)
        .await
        .unwrap();
    assert!(cut > 0);
    let mended = eventually(Duration::from_secs(10), || async {
        seen.written.lock().unwrap().len() >= written_before + 20
    })
    .await;
    assert!(mended, "writes did not resume after the connections were cut");
    let (_, metrics) = server.admin_get("/metrics").await;
    assert_eq!(metric(&metrics, "rookery_redis_sentinel_failovers_total", &master_label), Some(0.0));

    // Redis does not replicate its script cache: the replica has never seen the Lock's script,
    // so the calls that succeed after the failover are the ones that loaded it (NOSCRIPT).
    let replica = redis.ports().into_iter().find(|&port| port != old).unwrap();
    let acquire_script = scripts::LOCK_ACQUIRE.get_hash().to_owned();
    assert!(!has_script(&redis, replica, &acquire_script).await, "a replica has no scripts of its own");
    redis.node_on_mut(old).kill();
    let killed_at = Instant::now();
    let new = redis
        .wait_for_failover(old, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the sentinels did not fail over:\n{}", redis.sentinel_log()));
    let (switched_at, switched_unix) = (Instant::now(), unix_now());
    let failover = switched_at - killed_at;

    // Calls succeed again: the first fencing token granted after the failover is Redis's clock
    // at that grant, on the new master.
    let fences_before = seen.fences.lock().unwrap().len();
    let granted =
        eventually(Duration::from_secs(10), || async { seen.fences.lock().unwrap().len() > fences_before })
            .await;
    assert!(granted, "no lock granted after the failover; errors {:?}", seen.errors.lock().unwrap());
    assert_eq!(new, replica);
    assert!(has_script(&redis, new, &acquire_script).await, "the server loaded its script on the new master");
    let first_grant_unix = seen.fences.lock().unwrap()[fences_before] as f64 / 1e6;
    let back_after_switch = first_grant_unix - switched_unix;
    assert!(
        back_after_switch <= 2.0,
        "calls succeeded again {back_after_switch:.3} s after the sentinels named the new master (failover \
         took {failover:?}); the bound is 2 s"
    );
    let (_, metrics) = server.admin_get("/metrics").await;
    let server_switched_unix = metric(&metrics, "rookery_redis_sentinel_switched_at_seconds", &master_label)
        .expect("the server records when it switched");
    assert!(
        server_switched_unix - switched_unix <= 2.0,
        "the server switched {:.3} s after the sentinels named the new master",
        server_switched_unix - switched_unix
    );
    assert_eq!(metric(&metrics, "rookery_redis_sentinel_failovers_total", &master_label), Some(1.0));
    let new_address = format!("address=\"127.0.0.1:{new}\"");
    assert_eq!(
        metric(&metrics, "rookery_redis_sentinel_master", &format!("{master_label},{new_address}")),
        Some(1.0)
    );

    // The subscriber's side: once the server's pub/sub connection is on the new master,
    // publishes reach it again.
    let resubscribed = eventually(Duration::from_secs(10), || async {
        seen.published.lock().unwrap().iter().any(|&(_, receivers, at)| receivers > 0 && at > switched_at)
    })
    .await;
    assert!(resubscribed, "the server's pub/sub connection did not move to the new master");

    // The old master comes back from its crash, empty, and says it is a master (until the
    // sentinels demote it, about 8 s later; this one refuses to be): nothing may be written there.
    redis.restart_as_stale_master(old);
    let restarted_at = Instant::now();
    let written_before = seen.written.lock().unwrap().len();
    let more = eventually(Duration::from_secs(10), || async {
        seen.written.lock().unwrap().len() >= written_before + 50
            && restarted_at.elapsed() > Duration::from_secs(1)
    })
    .await;
    assert!(more, "writes stalled after the old master came back");
    let stale = redis.node_on(old);
    let role: String =
        redis::cmd("INFO").arg("replication").query_async(&mut stale.conn().await).await.unwrap();
    assert!(role.contains("role:master"), "the old master is back as a master");
    assert_eq!(stale.keys_of(&ns).await, Vec::<String>::new(), "the server wrote to the old master");

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    // Every write acknowledged after the failover is on the new master.
    let on_master: BTreeSet<String> = redis.node_on(new).keys_of(&ns).await.into_iter().collect();
    let stored = |key: &str| on_master.contains(&keys::cache(&ns, key).value);
    let written = seen.written.lock().unwrap().clone();
    let missing: Vec<&String> =
        written.iter().filter(|(key, at)| *at > switched_at && !stored(key)).map(|(key, _)| key).collect();
    assert!(missing.is_empty(), "writes acknowledged after the failover are missing: {missing:?}");
    let before: Vec<&String> = written.iter().filter(|(_, at)| *at < killed_at).map(|(key, _)| key).collect();
    let lost_before = before.iter().filter(|key| !stored(key)).count();

    // Fencing tokens kept increasing, across the failover.
    let fences = seen.fences.lock().unwrap().clone();
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "fencing tokens went back: {fences:?}");

    // The consumer resumed: every entry appended after the failover is processed.
    let appended_after: BTreeSet<u64> = seen
        .appended
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at > switched_at)
        .map(|(seq, _)| *seq)
        .collect();
    assert!(!appended_after.is_empty());
    let resumed = eventually(Duration::from_secs(15), || async {
        appended_after.is_subset(&seen.processed.lock().unwrap())
    })
    .await;
    let unprocessed: Vec<u64> = appended_after.difference(&seen.processed.lock().unwrap()).copied().collect();
    if !resumed {
        let consumer_ended = if consumer.is_finished() { Some((&mut consumer).await) } else { None };
        let (stream, _) = keys::event_stream(&ns, "jobs", None);
        let mut conn = redis.node_on(new).conn().await;
        let groups: redis::Value =
            redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut conn).await.unwrap();
        let consumers: redis::Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg("workers")
            .query_async(&mut conn)
            .await
            .unwrap();
        panic!(
            "the consumer did not get entries appended after the failover: {unprocessed:?}; it ended with \
             {consumer_ended:?}; errors {:?}; the group on the new master: {groups:?}, its consumers: \
             {consumers:?}",
            seen.errors.lock().unwrap()
        );
    }
    consumer.abort();

    // The subscriber heard of the gap, then received every message published after the server
    // resubscribed, in order.
    let published = seen.published.lock().unwrap().clone();
    let first_heard =
        published.iter().find(|&&(_, receivers, at)| receivers > 0 && at > switched_at).unwrap().0;
    let expected: Vec<u64> = published
        .iter()
        .filter(|&&(seq, receivers, _)| seq >= first_heard && receivers > 0)
        .map(|&(seq, _, _)| seq)
        .collect();
    let last = expected.last().unwrap().to_string().into_bytes();
    let heard = eventually(Duration::from_secs(5), || async {
        seen.received
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Message { payload, .. } if *payload == last))
    })
    .await;
    assert!(heard, "the subscriber stopped receiving");
    subscriber.abort();
    let received = seen.received.lock().unwrap().clone();
    let gap = received
        .iter()
        .position(|e| matches!(e, Event::Gap { reason: GapReason::Reconnected, .. }))
        .expect("the subscriber was told of the gap");
    let after_gap: Vec<u64> = received[gap..]
        .iter()
        .filter_map(|e| match e {
            Event::Message { payload, .. } => String::from_utf8_lossy(payload).parse().ok(),
            Event::Gap { .. } => None,
        })
        .collect();
    let tail: Vec<u64> = after_gap.iter().copied().filter(|&seq| seq >= first_heard).collect();
    assert_eq!(tail, expected, "messages published after the server resubscribed, in order");

    // Meanwhile calls failed only with UNAVAILABLE (retryable), never INTERNAL.
    let errors = seen.errors.lock().unwrap().clone();
    assert!(
        errors.keys().all(|key| key.ends_with(" Unavailable")),
        "calls failed with other codes than UNAVAILABLE: {errors:?}"
    );
    let count: u64 = errors.values().sum();
    eprintln!(
        "sentinel failover: {failover:?} from SIGKILL to the sentinels naming the new master; calls \
         succeeded again {back_after_switch:.3} s after (by Redis's clock), the server switched \
         {:.3} s after; {count} calls failed {errors:?}; {lost_before} of {} writes acknowledged \
         before the crash were lost with it (asynchronous replication)",
        server_switched_unix - switched_unix,
        before.len(),
    );
    server.stop().await;
}
