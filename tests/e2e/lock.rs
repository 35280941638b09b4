//! The Lock service end to end: leases and their errors, mutual exclusion and fencing across
//! two server replicas, fencing tokens across a Redis restart that lost everything, leases held
//! by streams (renewal, disconnect, loss), waiting without polling, semaphores and elections.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use rookery_client::{CampaignEvent, Client, LockClient, LockLost, LockOptions, WithLockError, pb};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::{RedisProcess, TestServer, eventually, namespace, shared_redis, test_config};

const TEN_SECONDS: Duration = Duration::from_secs(10);
const TEN_MINUTES: Duration = Duration::from_secs(600);

/// Two server replicas on the shared Redis, and a lock client of each in a fresh namespace.
async fn two_replicas(test: &str) -> (TestServer, TestServer, LockClient, LockClient, String) {
    let config = test_config(&shared_redis().url());
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace(test);
    let (lock_a, lock_b) = (a.client(&ns).await.lock(), b.client(&ns).await.lock());
    (a, b, lock_a, lock_b, ns)
}

/// A resource that accepts a write only with a fencing token at least the highest it has seen,
/// as a storage system protected by a lock should.
#[derive(Default)]
struct FencedResource {
    highest: Mutex<u64>,
}

impl FencedResource {
    fn write(&self, fence: u64) -> bool {
        let mut highest = self.highest.lock().unwrap();
        if fence < *highest {
            return false;
        }
        *highest = fence;
        true
    }
}

#[tokio::test]
async fn acquire_release_extend_and_their_answers() {
    let (_a, _b, lock, other, ns) = two_replicas("basics").await;
    let options = LockOptions::new(TEN_SECONDS).owner("worker-1");
    let lease = lock.acquire("job", &options).await.unwrap().expect("a free lock is granted");
    assert_eq!(lease.token.len(), 32);
    assert!(lease.ttl <= TEN_SECONDS && lease.ttl > Duration::from_secs(9), "{:?}", lease.ttl);
    // Held: a second caller (through the other replica) is told so, without an error.
    assert_eq!(other.acquire("job", &LockOptions::new(TEN_SECONDS)).await.unwrap(), None);

    let state = other.inspect("job").await.unwrap();
    assert_eq!(state.limit, 1);
    assert_eq!(state.last_fence, lease.fence);
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].owner, "worker-1");
    assert_eq!(state.holders[0].fence, lease.fence);

    // Only the holder's token works.
    assert!(!other.release("job", "0123456789abcdef0123456789abcdef").await.unwrap());
    assert_eq!(other.extend("job", "0123456789abcdef0123456789abcdef", TEN_SECONDS).await.unwrap(), None);
    let extended =
        lock.extend("job", &lease.token, Duration::from_secs(20)).await.unwrap().expect("extended");
    assert!(extended > lease.expires_at);
    assert!(lock.release("job", &lease.token).await.unwrap());
    assert!(!lock.release("job", &lease.token).await.unwrap(), "a second release is a no-op");

    // A free lock leaves only its fencing token behind, with a TTL.
    let keys = shared_redis().keys_of(&ns).await;
    assert_eq!(keys, vec![format!("rk1:{{{ns}:lock:job}}:fence")]);
    shared_redis().assert_no_key_without_ttl(&ns).await;

    // The next grant has a higher fencing token.
    let next = other.acquire("job", &LockOptions::new(TEN_SECONDS)).await.unwrap().unwrap();
    assert!(next.fence > lease.fence);

    // A lease that expired answers released: false, and its lock is free.
    let short = lock.acquire("short", &LockOptions::new(Duration::from_millis(50))).await.unwrap().unwrap();
    let waited = lock.acquire("short", &LockOptions::new(TEN_SECONDS).wait(Duration::from_secs(5))).await;
    let after = waited.unwrap().expect("granted once the short lease ended");
    assert!(!lock.release("short", &short.token).await.unwrap());
    assert_eq!(lock.extend("short", &short.token, TEN_SECONDS).await.unwrap(), None);
    assert!(after.fence > short.fence);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_or_failed_precondition() {
    let (_a, _b, lock, _other, _ns) = two_replicas("errors").await;
    let ttl = LockOptions::new(TEN_SECONDS);
    let code = |r: Result<Option<rookery_client::Lease>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(lock.acquire("", &ttl).await), Code::InvalidArgument);
    let status = lock.acquire("x", &LockOptions::new(Duration::ZERO)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "ttl must be at least 1ms, got 0s");
    assert_eq!(
        code(lock.acquire("x", &LockOptions::new(Duration::from_secs(90_000))).await),
        Code::InvalidArgument
    );
    assert_eq!(code(lock.acquire("x", &ttl.clone().limit(1001)).await), Code::InvalidArgument);
    assert_eq!(code(lock.acquire("x", &ttl.clone().owner("o".repeat(300))).await), Code::InvalidArgument);
    assert_eq!(
        code(lock.acquire("x", &ttl.clone().wait(Duration::from_secs(7200))).await),
        Code::InvalidArgument
    );
    assert_eq!(lock.release("x", "").await.unwrap_err().code(), Code::InvalidArgument);
    let status = lock.hold("x", &LockOptions::new(Duration::from_millis(20))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "ttl must be at least 100ms, got 20ms");
    // A semaphore's holders must agree on its permits.
    lock.acquire("sem", &ttl.clone().limit(3)).await.unwrap().unwrap();
    let status = lock.acquire("sem", &ttl.clone().limit(5)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("limit 3"), "{}", status.message());
}

#[tokio::test]
async fn twenty_clients_never_overlap_and_fences_increase() {
    let (_a, _b, lock_a, lock_b, ns) = two_replicas("mutex").await;
    let inside = Arc::new(AtomicBool::new(false));
    let fences = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for client in 0..20 {
        let lock = if client % 2 == 0 { lock_a.clone() } else { lock_b.clone() };
        let (inside, fences) = (inside.clone(), fences.clone());
        tasks.push(tokio::spawn(async move {
            // Leases far longer than the wait: a waiter that missed a release's wake-up fails
            // instead of being rescued by the lease's expiry.
            let options = LockOptions::new(TEN_MINUTES).wait(Duration::from_secs(20));
            for _ in 0..50 {
                let lease =
                    lock.acquire("counter", &options).await.unwrap().expect("granted within the wait");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders inside the critical section");
                fences.lock().unwrap().push(lease.fence);
                tokio::task::yield_now().await;
                inside.store(false, Ordering::SeqCst);
                assert!(lock.release("counter", &lease.token).await.unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let fences = fences.lock().unwrap().clone();
    assert_eq!(fences.len(), 1000);
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "fencing tokens must increase in grant order");
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn a_paused_holder_is_fenced_off() {
    let (_a, _b, lock_a, lock_b, _ns) = two_replicas("fencing").await;
    let resource = FencedResource::default();
    for round in 0..5 {
        let name = format!("storage-{round}");
        // A acquires, writes, then "pauses" past its lease (it does not renew).
        let first =
            lock_a.acquire(&name, &LockOptions::new(Duration::from_millis(100))).await.unwrap().unwrap();
        assert!(resource.write(first.fence));
        // B, through the other replica, gets the lock once A's lease ends, and writes.
        let options = LockOptions::new(TEN_SECONDS).wait(Duration::from_secs(5));
        let second = lock_b.acquire(&name, &options).await.unwrap().expect("granted after A's lease ended");
        assert!(resource.write(second.fence));
        // A wakes up and writes late, still believing it holds the lock: refused.
        assert!(!resource.write(first.fence), "round {round}: the stale holder's write was accepted");
        assert!(!lock_a.release(&name, &first.token).await.unwrap(), "A's lease is long gone");
    }
}

#[tokio::test]
async fn fencing_tokens_increase_across_a_redis_restart_that_lost_everything() {
    let mut redis = RedisProcess::start(&[]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let lock = server.client(&namespace("fence-restart")).await.lock();
    let options = LockOptions::new(TEN_SECONDS);
    let mut highest = 0;
    for _ in 0..20 {
        let lease = lock.acquire("l", &options).await.unwrap().unwrap();
        assert!(lease.fence > highest);
        highest = lease.fence;
        assert!(lock.release("l", &lease.token).await.unwrap());
    }
    // kill -9 and start again, empty: the counter is gone.
    redis.restart();
    let after = Arc::new(Mutex::new(None));
    let recovered = eventually(Duration::from_secs(10), || {
        let (lock, options, after) = (lock.clone(), options.clone(), after.clone());
        async move {
            if let Ok(Some(lease)) = lock.acquire("l", &options).await {
                *after.lock().unwrap() = Some(lease);
            }
            after.lock().unwrap().is_some()
        }
    })
    .await;
    assert!(recovered, "the server did not recover from the Redis restart");
    let after = after.lock().unwrap().take().unwrap();
    assert!(after.fence > highest, "token {} after the restart is not above {highest}", after.fence);
    assert_eq!(lock.inspect("l").await.unwrap().last_fence, after.fence);
}

#[tokio::test]
async fn hold_renews_a_short_lease_and_releases_on_disconnect() {
    let (a, _b, _lock_a, lock_b, ns) = two_replicas("hold").await;
    // A separate connection, so that dropping it is a real client disconnect.
    let holder = a.client(&ns).await;
    let held = holder.lock().hold("h", &LockOptions::new(Duration::from_secs(1))).await.unwrap().unwrap();
    // Renewals keep a 1 s lease held for 5 s: the lock is never lost, and never free.
    let observed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            assert_eq!(lock_b.acquire("h", &LockOptions::new(TEN_SECONDS)).await.unwrap(), None);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::select! {
        lost = held.lost() => panic!("lost a renewed lease: {lost}"),
        _ = observed => {}
    }
    assert!(held.is_held());
    let fence = held.fence();
    // Disconnect: the lock is free within a second, well before the lease could expire.
    drop(held);
    drop(holder);
    let disconnected = Instant::now();
    let options = LockOptions::new(TEN_SECONDS).wait(Duration::from_secs(5));
    let next = lock_b.acquire("h", &options).await.unwrap().expect("free after the holder left");
    assert!(disconnected.elapsed() < Duration::from_secs(1), "released after {:?}", disconnected.elapsed());
    assert!(next.fence > fence);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn a_holder_learns_that_its_lock_was_deleted() {
    let (_a, _b, lock, _other, ns) = two_replicas("lost").await;
    let held = lock.hold("doomed", &LockOptions::new(Duration::from_secs(1))).await.unwrap().unwrap();
    let context = held.context();
    let mut conn = shared_redis().conn().await;
    let _: () = conn.del(format!("rk1:{{{ns}:lock:doomed}}")).await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(2), context.lost()).await.expect("Lost arrives");
    assert!(matches!(lost, LockLost::Revoked(_)), "{lost:?}");
    assert!(!held.is_held());
}

#[tokio::test]
async fn a_waiter_is_woken_by_a_release_on_another_replica() {
    let (_a, b, lock_a, lock_b, _ns) = two_replicas("wake").await;
    let first = lock_a.acquire("w", &LockOptions::new(Duration::from_secs(30))).await.unwrap().unwrap();
    let waiter = tokio::spawn({
        let lock_b = lock_b.clone();
        async move {
            let options = LockOptions::new(TEN_SECONDS).wait(Duration::from_secs(20));
            let lease = lock_b.acquire("w", &options).await.unwrap();
            (lease, Instant::now())
        }
    });
    // Release only once the waiter really waits (on replica b; the gauge is process-wide).
    b.wait_for_gauge("rookery_lock_waiting", 1.0).await;
    let released = Instant::now();
    assert!(lock_a.release("w", &first.token).await.unwrap());
    let (lease, granted) = waiter.await.unwrap();
    assert!(lease.is_some());
    let delay = granted.duration_since(released);
    assert!(delay < Duration::from_millis(100), "the waiter took {delay:?} after the release");
}

#[tokio::test]
async fn a_waiter_that_gives_up_leaves_nothing_behind() {
    let (_a, _b, lock, other, ns) = two_replicas("give-up").await;
    let held = lock.acquire("g", &LockOptions::new(Duration::from_secs(30))).await.unwrap().unwrap();
    // Deadline shorter than the wait: DEADLINE_EXCEEDED.
    let mut request = tonic::Request::new(pb::LockAcquireRequest {
        name: "g".into(),
        ttl: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
        wait: Some(prost_types::Duration { seconds: 20, nanos: 0 }),
        limit: 0,
        owner: "impatient".into(),
    });
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = other.raw().acquire(request).await.unwrap_err();
    // The server's DEADLINE_EXCEEDED, or on a loaded machine the client's own timer firing
    // first (CANCELLED): either way the caller gave up, which is what is tested here.
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A cancelled waiter (its future dropped) also goes away.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        other.acquire("g", &LockOptions::new(TEN_SECONDS).wait(Duration::from_secs(20))),
    )
    .await;
    assert!(cancelled.is_err());
    assert!(lock.release("g", &held.token).await.unwrap());
    // Neither left a waiter that could take the lock after the release.
    let free =
        eventually(Duration::from_secs(1), || async { lock.inspect("g").await.unwrap().holders.is_empty() })
            .await;
    assert!(free);
    let state = lock.inspect("g").await.unwrap();
    assert!(state.holders.is_empty(), "{state:?}");
    assert_eq!(shared_redis().keys_of(&ns).await.len(), 1, "only the fencing token remains");
}

#[tokio::test]
async fn a_semaphore_admits_at_most_its_limit() {
    let (_a, _b, lock_a, lock_b, ns) = two_replicas("semaphore").await;
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for contender in 0..20 {
        let lock = if contender % 2 == 0 { lock_a.clone() } else { lock_b.clone() };
        let (inside, most) = (inside.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            let options = LockOptions::new(TEN_MINUTES).wait(Duration::from_secs(20)).limit(3);
            for _ in 0..5 {
                let lease = lock.acquire("pool", &options).await.unwrap().expect("a permit within the wait");
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert!(lock.release("pool", &lease.token).await.unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 3, "{most} holders at once");
    assert_eq!(most, 3, "the semaphore should have been full at some point");
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn semaphore_holders_expire_on_their_own() {
    let (_a, _b, lock, _other, _ns) = two_replicas("sem-expiry").await;
    let options = LockOptions::new(Duration::from_millis(100)).limit(2);
    lock.acquire("s", &options).await.unwrap().unwrap();
    lock.acquire("s", &options).await.unwrap().unwrap();
    assert_eq!(lock.acquire("s", &options).await.unwrap(), None);
    let state = lock.inspect("s").await.unwrap();
    assert_eq!((state.holders.len(), state.limit), (2, 2));
    // Nobody releases; the expired permits free themselves.
    let third = lock.acquire("s", &options.clone().wait(Duration::from_secs(5))).await.unwrap();
    assert!(third.is_some());
}

#[tokio::test]
async fn with_lock_runs_under_the_lock_and_releases() {
    let (_a, _b, lock, other, _ns) = two_replicas("with-lock").await;
    let options = LockOptions::new(Duration::from_secs(1));
    let fence = lock
        .with_lock("task", &options, |context| {
            let other = other.clone();
            async move {
                assert!(context.is_held());
                assert_eq!(other.acquire("task", &LockOptions::new(TEN_SECONDS)).await.unwrap(), None);
                context.fence()
            }
        })
        .await
        .unwrap();
    assert!(fence > 0);
    let held = other
        .hold("task", &LockOptions::new(TEN_SECONDS))
        .await
        .unwrap()
        .expect("released after the closure");
    assert!(held.fence() > fence);
    let refused = lock.with_lock("task", &options, |_| async {}).await;
    assert!(matches!(refused, Err(WithLockError::NotAcquired)));
    assert!(held.release().await.unwrap());
}

#[tokio::test]
async fn elections_hand_over_and_observers_see_every_leader_in_order() {
    let (a, b, lock_a, _lock_b, ns) = two_replicas("election").await;
    let mut observer = lock_a.observe("leader").await.unwrap();
    assert_eq!(observer.next().await.unwrap().unwrap(), None, "no leader yet");

    // Three candidates on separate connections, over both replicas.
    let mut candidates = Vec::new();
    for (i, server) in [&a, &b, &a].into_iter().enumerate() {
        let client: Client = server.client(&ns).await;
        let stream =
            client.lock().campaign("leader", format!("candidate-{i}"), Duration::from_secs(1)).await.unwrap();
        candidates.push(Some((client, stream)));
    }
    let mut elected = Vec::new();
    for _ in 0..3 {
        // Exactly one live candidate is elected.
        let (index, lease) = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                for (i, candidate) in candidates.iter_mut().enumerate() {
                    let Some((_, stream)) = candidate else { continue };
                    if let Ok(Some(event)) =
                        tokio::time::timeout(Duration::from_millis(20), stream.next()).await
                    {
                        match event.unwrap() {
                            CampaignEvent::Elected(lease) => return (i, lease),
                            CampaignEvent::Lost(lost) => panic!("candidate {i} lost: {lost}"),
                        }
                    }
                }
            }
        })
        .await
        .expect("a new leader within the TTL");
        elected.push((format!("candidate-{index}"), lease.fence));
        // The leader vanishes: its stream and connection are dropped.
        candidates[index] = None;
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let leader =
            tokio::time::timeout(Duration::from_secs(2), observer.next()).await.unwrap().unwrap().unwrap();
        if let Some(leader) = leader {
            seen.push((leader.candidate, leader.fence));
        }
    }
    assert_eq!(seen, elected, "observers see every leader, in order");
    assert!(elected.windows(2).all(|w| w[0].1 < w[1].1));
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn resign_hands_leadership_on() {
    let (_a, _b, lock_a, lock_b, _ns) = two_replicas("resign").await;
    let mut first = lock_a.campaign("e", "first", Duration::from_secs(5)).await.unwrap();
    let Some(Ok(CampaignEvent::Elected(term))) = first.next().await else { panic!("first not elected") };
    let mut second = lock_b.campaign("e", "second", Duration::from_secs(5)).await.unwrap();
    assert!(!lock_b.resign("e", "0123456789abcdef0123456789abcdef").await.unwrap());
    assert!(lock_a.resign("e", &term.token).await.unwrap());
    let next = tokio::time::timeout(Duration::from_secs(1), second.next()).await.unwrap();
    let Some(Ok(CampaignEvent::Elected(next))) = next else { panic!("second not elected: {next:?}") };
    assert!(next.fence > term.fence);
    let lost = tokio::time::timeout(Duration::from_secs(3), first.next()).await.unwrap();
    assert!(matches!(lost, Some(Ok(CampaignEvent::Lost(LockLost::Revoked(_))))), "{lost:?}");
}

#[tokio::test]
async fn shutdown_releases_held_locks_and_ends_streams_unavailable() {
    let (a, _b, lock_a, lock_b, _ns) = two_replicas("shutdown").await;
    let held = lock_a.hold("s", &LockOptions::new(TEN_SECONDS)).await.unwrap().unwrap();
    a.stop().await;
    let lost = tokio::time::timeout(Duration::from_secs(2), held.lost()).await.unwrap();
    assert!(matches!(lost, LockLost::StreamEnded(_)), "{lost:?}");
    // Released by the server on its way out, not left for the 10 s TTL.
    assert!(lock_b.acquire("s", &LockOptions::new(TEN_SECONDS)).await.unwrap().is_some());
}

#[tokio::test]
async fn a_leader_whose_server_dies_is_replaced_within_its_ttl() {
    let ns = namespace("vanish");
    let ttl = Duration::from_secs(1);
    // The leader's server runs on a runtime of its own, which is then dropped without any
    // shutdown: every task of that server stops where it is, as in a crash. Nobody releases.
    let crashed = {
        let (url, ns) = (shared_redis().url(), ns.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let doomed = runtime.block_on(async {
                let server = TestServer::start(test_config(&url)).await;
                let client = server.client(&ns).await;
                let mut campaign = client.lock().campaign("leader", "doomed", ttl).await.unwrap();
                let Some(Ok(CampaignEvent::Elected(term))) = campaign.next().await else {
                    panic!("the first candidate was not elected")
                };
                (server, client, campaign, term.fence)
            });
            drop(runtime);
            let fence = doomed.3;
            // Dropped after their runtime; forget them rather than run their destructors.
            std::mem::forget(doomed);
            (Instant::now(), fence)
        })
    };
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let lock = server.client(&ns).await.lock();
    let (crashed_at, doomed_fence) =
        tokio::task::spawn_blocking(move || crashed.join().unwrap()).await.unwrap();
    let mut follower = lock.campaign("leader", "follower", ttl).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(3), follower.next()).await.expect("a new leader");
    let Some(Ok(CampaignEvent::Elected(term))) = event else { panic!("{event:?}") };
    let took = crashed_at.elapsed();
    assert!(took <= ttl + Duration::from_millis(300), "took over after {took:?}");
    // Nobody released: the crashed leader's lease ran out (it was renewed at most ttl/3 ago).
    assert!(took >= ttl / 2, "took over after only {took:?}: the lease was released, not lost");
    assert!(term.fence > doomed_fence);
}
