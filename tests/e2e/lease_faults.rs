//! Leases at the edge of failure: what a lock caller is told, and what is left in Redis, when
//! Redis hangs (SIGSTOP), the network to it blackholes or is cut, or it runs out of memory.
//!
//! Each bound is judged from Redis's side: which holders it still has after recovery, and the
//! lease ends it confirmed, never how quickly this test's client noticed something.

use std::time::{Duration, SystemTime};

use rookery_client::{LockClient, LockOptions, pb};
use tokio::time::Instant;
use tokio_stream::StreamExt;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::harness::{Paused, RedisProcess, TestServer, eventually, namespace, test_config};

/// Lease TTL of the attempts: far longer than the test, so a ghost grant cannot hide by expiring.
const LONG_TTL: Duration = Duration::from_secs(60);
/// Attempts per call kind and case: 50, or `ROOKERY_FAULT_ATTEMPTS` (`make chaos` asks for more).
fn attempts() -> usize {
    std::env::var("ROOKERY_FAULT_ATTEMPTS").ok().and_then(|n| n.parse().ok()).unwrap_or(50)
}

/// The three ways to ask for a lease.
#[derive(Debug, Clone, Copy)]
enum Call {
    Acquire,
    Hold,
    Campaign,
}

/// One attempt to take `name` that gives up after `deadline`: Acquire through the call's gRPC
/// deadline, Hold and Campaign by cancelling the stream when no grant came in time. Returns
/// whether the caller was told it failed.
async fn attempt(lock: &LockClient, call: Call, name: String, deadline: Duration) -> bool {
    let ttl = Some(LONG_TTL.try_into().unwrap());
    let mut raw = lock.raw();
    match call {
        Call::Acquire => {
            let request = pb::LockAcquireRequest { name, ttl, wait: None, limit: 0, owner: "a".into() };
            let mut request = tonic::Request::new(request);
            request.set_timeout(deadline);
            match raw.acquire(request).await {
                Ok(response) => {
                    // Told it holds the lock: a caller that succeeded releases it.
                    let response = response.into_inner();
                    assert!(response.acquired, "a free lock was refused");
                    false
                }
                Err(_) => true,
            }
        }
        Call::Hold | Call::Campaign => {
            let first = tokio::time::timeout(deadline, async {
                if let Call::Hold = call {
                    let request = pb::LockHoldRequest { name, ttl, wait: None, limit: 0, owner: "h".into() };
                    let mut events = raw.hold(request).await?.into_inner();
                    Ok::<_, tonic::Status>(events.message().await?.is_some())
                } else {
                    let request = pb::LockCampaignRequest { election: name, candidate: "c".into(), ttl };
                    let mut events = raw.campaign(request).await?.into_inner();
                    Ok(events.message().await?.is_some())
                }
            })
            .await;
            // Dropping the stream (here, whatever happened) releases any grant it had.
            !matches!(first, Ok(Ok(true)))
        }
    }
}

/// The names of `ns`'s locks and elections that Redis still has a live holder for.
async fn held_names(redis: &RedisProcess, ns: &str) -> Vec<String> {
    // A lock's holders set is its bare key, `rk1:{<ns>:<kind>:<name>}`.
    redis.keys_of(ns).await.into_iter().filter(|key| key.ends_with('}')).collect()
}

/// How Redis becomes unreachable.
#[derive(Clone, Copy)]
enum Outage<'a> {
    /// redis-server is frozen (SIGSTOP).
    Hang(&'a RedisProcess),
    /// The network holds every byte both ways.
    Blackhole(&'a FaultProxy),
    /// Connections are reset and new ones refused.
    Cut(&'a FaultProxy),
    /// Commands reach Redis and run, but their replies are held until the connection is cut, and
    /// it stays cut for a while: every grant is made and none is heard of.
    RepliesLostThenCut(&'a FaultProxy),
}

impl std::fmt::Debug for Outage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hang(_) => "Redis hung",
            Self::Blackhole(_) => "network blackholed",
            Self::Cut(_) => "connection cut",
            Self::RepliesLostThenCut(_) => "replies lost, then connection cut",
        })
    }
}

impl Outage<'_> {
    /// Starts the outage; the returned guard (if any) must live until [`Self::end`].
    async fn begin(self) -> Option<Paused> {
        match self {
            Self::Hang(redis) => return Some(redis.pause().await),
            Self::Blackhole(proxy) => proxy.set(Fault::Blackhole),
            Self::Cut(proxy) => proxy.set(Fault::Cut),
            Self::RepliesLostThenCut(proxy) => proxy.set(Fault::HoldReplies),
        }
        None
    }

    /// Ends the outage.
    fn end(self, paused: Option<Paused>) {
        drop(paused);
        match self {
            Self::Hang(_) => {}
            Self::Blackhole(proxy) | Self::Cut(proxy) | Self::RepliesLostThenCut(proxy) => {
                proxy.set(Fault::None);
            }
        }
    }
}

/// Runs [`attempts`] of each call kind at once during `outage`, keeps the outage on until every
/// server-side Redis call of theirs has timed out (so that a grant can only be given back after
/// recovery), ends it, and asserts that Redis soon holds nothing for any of them.
async fn no_grant_survives(
    redis: &RedisProcess,
    lock: &LockClient,
    ns: &str,
    deadline: Duration,
    outage: Outage<'_>,
) {
    let command_timeout = test_config("").redis.command_timeout;
    // Redis knows the scripts before the fault, as it does in a server that has been serving:
    // otherwise the first calls could not run on Redis at all (NOSCRIPT) once it answers again.
    let warm_up = lock.acquire("warm-up", &LockOptions::new(LONG_TTL)).await.unwrap().unwrap();
    assert!(lock.release("warm-up", warm_up.token).await.unwrap());
    let started = Instant::now();
    let paused = outage.begin().await;
    let per_call = attempts();
    let attempts = [Call::Acquire, Call::Hold, Call::Campaign].into_iter().flat_map(|call| {
        (0..per_call).map(move |i| {
            let lock = lock.clone();
            async move { attempt(&lock, call, format!("{call:?}-{i}"), deadline).await }
        })
    });
    let cut = async {
        if let Outage::RepliesLostThenCut(proxy) = outage {
            // Cut once Redis has made every grant, or before the server's calls time out (and
            // would give back on a connection that still reaches Redis) if it has not yet.
            let all_granted = eventually(command_timeout * 3 / 4, || async {
                held_names(redis, ns).await.len() == 3 * per_call
            });
            all_granted.await;
            proxy.set(Fault::Cut);
            let granted = held_names(redis, ns).await.len();
            assert!(granted > 0, "Redis should have made grants while its replies were held");
            eprintln!("{granted} grants made while their replies were held, then the connection was cut");
        }
    };
    let (told_failed, ()) = tokio::join!(futures::future::join_all(attempts), cut);
    assert!(
        told_failed.iter().all(|failed| *failed),
        "with Redis unreachable, every caller should have been told it failed"
    );
    // The server's own script calls end at its command timeout, and so do their first attempts to
    // give a grant back: the outage outlasts both.
    tokio::time::sleep_until(started + deadline.max(command_timeout) * 2 + Duration::from_millis(500)).await;
    outage.end(paused);
    eventually(Duration::from_secs(20), || async { held_names(redis, ns).await.is_empty() }).await;
    let left = held_names(redis, ns).await;
    assert!(
        left.is_empty(),
        "{} of {} callers told that they failed still hold their lease after recovery \
         (deadline {deadline:?}): {left:?}",
        left.len(),
        told_failed.len()
    );
}

/// Deadlines of the attempts: shorter and longer than the server's command timeout (1 s).
const DEADLINES: [Duration; 2] = [Duration::from_millis(300), Duration::from_millis(2500)];

#[tokio::test]
async fn a_caller_told_it_failed_holds_nothing_after_redis_hung() {
    let redis = RedisProcess::start(&[]);
    // Several connections: a grant and its give-back must still reach Redis in order.
    let mut config = test_config(&redis.url());
    config.redis.connections = 4;
    let server = TestServer::start(config).await;
    for deadline in DEADLINES {
        let ns = namespace("ghost-hang");
        let lock = server.client(&ns).await.lock();
        no_grant_survives(&redis, &lock, &ns, deadline, Outage::Hang(&redis)).await;
    }
}

#[tokio::test]
async fn a_caller_told_it_failed_holds_nothing_after_the_network_failed() {
    let redis = RedisProcess::start(&[]);
    let proxy = FaultProxy::start(redis.url().trim_start_matches("redis://").to_owned()).await;
    let mut config = test_config(&proxy.url());
    config.redis.connections = 4;
    let server = TestServer::start(config).await;
    for outage in [Outage::Blackhole(&proxy), Outage::RepliesLostThenCut(&proxy)] {
        for deadline in DEADLINES {
            let ns = namespace("ghost-network");
            let lock = server.client(&ns).await.lock();
            no_grant_survives(&redis, &lock, &ns, deadline, outage).await;
        }
    }
}

/// Holds the lock "l" with `ttl` and waits for its first renewal; the stream and the lease's
/// last confirmed end.
pub(crate) async fn hold_renewed(
    lock: &LockClient,
    ttl: Duration,
) -> (tonic::Streaming<pb::LockHoldResponse>, SystemTime) {
    let request = pb::LockHoldRequest {
        name: "l".into(),
        ttl: Some(ttl.try_into().unwrap()),
        wait: None,
        limit: 0,
        owner: "holder".into(),
    };
    let mut events = lock.raw().hold(request).await.unwrap().into_inner();
    match events.next().await.unwrap().unwrap().event.unwrap() {
        pb::lock_hold_response::Event::Acquired(_) => {}
        other => panic!("{other:?}"),
    }
    // One renewal first, so the hold is in its steady rhythm when the fault begins.
    match events.next().await.unwrap().unwrap().event.unwrap() {
        pb::lock_hold_response::Event::Renewed(renewed) => {
            (events, SystemTime::try_from(renewed.expires_at.unwrap()).unwrap())
        }
        other => panic!("{other:?}"),
    }
}

/// Reads the hold's events until `lost`; the lease's last confirmed end, when `lost` arrived,
/// and why.
async fn until_lost(
    events: &mut tonic::Streaming<pb::LockHoldResponse>,
    mut last_end: SystemTime,
) -> (SystemTime, SystemTime, pb::LockLostReason) {
    loop {
        match events.next().await.unwrap().unwrap().event.unwrap() {
            // A renewal Redis answered just before the fault.
            pb::lock_hold_response::Event::Renewed(renewed) => {
                last_end = SystemTime::try_from(renewed.expires_at.unwrap()).unwrap();
            }
            pb::lock_hold_response::Event::Lost(lost) => break (last_end, SystemTime::now(), lost.reason()),
            other => panic!("{other:?}"),
        }
    }
}

/// Asserts that `lost` came before the lease's last confirmed end (Redis's clock and the test's
/// are the same machine's), and not absurdly early; how long before.
pub(crate) fn assert_lost_in_time(last_end: SystemTime, lost_at: SystemTime, ttl: Duration) -> Duration {
    let ahead = last_end.duration_since(lost_at).unwrap_or_else(|late| {
        panic!("lost arrived {:?} after the lease's last confirmed end", late.duration())
    });
    assert!(ahead < ttl, "lost {ahead:?} early: before the lease's last renewal was even due to fail");
    ahead
}

#[tokio::test]
async fn a_holder_hears_lost_before_its_lease_can_end_and_before_anyone_else_gets_it() {
    let redis = RedisProcess::start(&[]);
    let proxy = FaultProxy::start(redis.url().trim_start_matches("redis://").to_owned()).await;
    // The harness's command timeout is 1 s: a renewal that waited for it would overrun this lease.
    let (server, direct) = tokio::join!(
        TestServer::start(test_config(&proxy.url())),
        TestServer::start(test_config(&redis.url()))
    );
    let ttl = Duration::from_secs(3);
    for outage in [Outage::Hang(&redis), Outage::Blackhole(&proxy), Outage::Cut(&proxy)] {
        let ns = namespace("lost");
        let lock = server.client(&ns).await.lock();
        let other_replica = direct.client(&ns).await.lock();
        let (mut events, last_end) = hold_renewed(&lock, ttl).await;
        let paused = outage.begin().await;
        // A second holder tries through a replica whose own way to Redis works (or recovers).
        let next_holder = tokio::spawn(async move {
            let options = LockOptions::new(ttl).wait(Duration::from_secs(30));
            loop {
                match other_replica.acquire("l", &options).await {
                    Ok(Some(lease)) => break lease,
                    Ok(None) => {}
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(status) => panic!("{status:?}"),
                }
            }
        });
        let (last_end, lost_at, reason) = until_lost(&mut events, last_end).await;
        // The outage outlasts the lease, so that the lock passes on by expiry, not by the first
        // holder's server giving it back once Redis answers.
        tokio::time::sleep(last_end.duration_since(SystemTime::now()).unwrap_or_default() * 2).await;
        outage.end(paused);
        assert_eq!(reason, pb::LockLostReason::Unreachable, "{outage:?}");
        let ahead = assert_lost_in_time(last_end, lost_at, ttl);
        // Redis granted the lock again only after the first holder knew it had lost it.
        let next = next_holder.await.unwrap();
        let granted_at = next.expires_at - next.ttl;
        assert!(
            lost_at < granted_at,
            "{outage:?}: a second holder was granted the lock {:?} before the first heard lost",
            lost_at.duration_since(granted_at).unwrap()
        );
        eprintln!(
            "{outage:?}: lost {ahead:?} before the lease's last confirmed end, {:?} before the next grant",
            granted_at.duration_since(lost_at).unwrap()
        );
    }
}

#[tokio::test]
async fn an_acquire_run_twice_with_one_token_answers_the_same_grant() {
    // A Cluster client re-sends a command that was in flight when its master's connection
    // dropped; if the first copy ran and replicated, the grant script runs twice with one token.
    // Run here directly against Redis, with the arguments its header documents.
    let redis = crate::harness::shared_redis();
    let ns = namespace("resent");
    let keys = rookery_server::redis::keys::lock(&ns, "l");
    let mut conn = redis.conn().await;
    let mut acquire = async |token: &str| -> Vec<i64> {
        rookery_server::redis::scripts::LOCK_ACQUIRE
            .key(&keys.holders)
            .key(&keys.info)
            .key(&keys.fence)
            .key(&keys.history)
            .arg(token)
            .arg(60_000)
            .arg(1)
            .arg("owner")
            .arg("")
            .arg(600_000)
            .arg("0")
            .arg("0")
            .invoke_async(&mut conn)
            .await
            .unwrap()
    };
    let first = acquire("token-a").await;
    assert_eq!(first[0], 1, "a free lock is granted: {first:?}");
    let again = acquire("token-a").await;
    assert_eq!(again[0], 1, "the same request run again is the same grant, not 'held': {again:?}");
    assert_eq!(again[1], first[1], "with the same fencing token");
    assert!(again[2] >= first[2], "and its lease restarted: {again:?} after {first:?}");
    let other = acquire("token-b").await;
    assert_eq!(other[0], 0, "anyone else is still told the lock is held: {other:?}");
    let holders: i64 = redis::cmd("ZCARD").arg(&keys.holders).query_async(&mut conn).await.unwrap();
    assert_eq!(holders, 1);
}
