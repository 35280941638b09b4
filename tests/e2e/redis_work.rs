//! No single call stalls Redis: Redis runs one command at a time for every namespace, so no
//! command or script Rookery sends may cost time that grows with what one namespace has stored.
//!
//! One namespace builds the worst case on a Redis of its own (a consumer group with 100,000
//! pending entries, idle consumers looking for expired entries, a consumer reconnecting to
//! its own pending entries, a tag of 200,000 entries written with bulk SetMany calls that then
//! expire), and Redis's own records say how long its longest command took: the slowlog (every
//! command of 10 ms or more) and the latency monitor's `expire-del` event (freeing one expired
//! key, which is not a command). The test's own commands (building the pending list with
//! small pipelined commands) carry a client name and are left out, and so are stalls of Redis
//! itself, which a loaded machine causes (a constant-time command as slow as its script, or a
//! command logged within a second of this machine stalling a thread of Redis's priority, see
//! [`work_of_rookery`] and [`StallWatch`]); Redis runs with its default `lazyfree-lazy-*` settings (off), so
//! Rookery's own key shapes are what is tested.

use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::Value;
use rookery_client::{ConsumeOptions, GroupSettings, SetOptions};

use crate::harness::{RedisProcess, TestServer, eventually, namespace, test_config};

/// The longest a command may take, as Redis measures it (wall time), in microseconds. A
/// bounded step (1,000 entries) takes 1–3 ms here, and up to 5 ms while other processes load
/// both cores (seen under `stress-ng --cpu 2`: a 1,000-key tag write took 5.2 ms); a walk over
/// what the namespace stored (100,000 pending entries, 200,000 tagged keys) takes tens of ms.
const LIMIT_MICROS: u64 = 10_000;
/// The name the test's own Redis connections carry, to tell their commands apart.
const TEST_CLIENT: &str = "redis-work-test";
const PENDING: usize = 100_000;
const TAGGED: usize = 200_000;
/// Keys of the test's own that grow Redis's key tables before anything is measured.
const PADDING: usize = 300_000;

async fn test_conn(redis: &RedisProcess) -> redis::aio::MultiplexedConnection {
    let mut conn = redis.conn().await;
    redis::cmd("CLIENT").arg("SETNAME").arg(TEST_CLIENT).query_async::<()>(&mut conn).await.unwrap();
    conn
}

/// Commands whose own work takes constant time (one small value, one field, one expiry).
const CONSTANT_TIME: &[&str] = &["SET", "GET", "EXISTS", "PEXPIRE", "PEXPIREAT", "HSET", "HGET", "INCRBY"];

/// The slowlog entries that measure Rookery's work: those of the server's connections, less
/// stalls of Redis itself. A constant-time command that took the limit (a page fault, a core
/// taken away from Redis on a loaded machine) measures the machine, not the command, and so
/// does the script it ran in when the script took no longer than it (the slowlog lists the
/// commands a script runs just before the script, newest first, with their own durations).
fn work_of_rookery<'a>(log: &'a [Slow], stalls: &std::collections::BTreeSet<u64>) -> Vec<&'a Slow> {
    let constant_time = |command: &str| {
        command.split(' ').next().is_some_and(|name| CONSTANT_TIME.contains(&name.to_uppercase().as_str()))
    };
    log.iter()
        .enumerate()
        .filter(|(_, slow)| slow.client != TEST_CLIENT)
        .filter(|(_, slow)| !constant_time(&slow.command))
        .filter(|(i, slow)| {
            let stalled_inside = log.get(i + 1).is_some_and(|inner| {
                constant_time(&inner.command) && inner.micros >= slow.micros.saturating_sub(LIMIT_MICROS / 10)
            });
            !stalled_inside
        })
        // Within a second of the machine stalling a thread of Redis's priority (the slowlog
        // stamps whole seconds): the machine's doing, not the command's.
        .filter(|(_, slow)| !(slow.at.saturating_sub(1)..=slow.at + 1).any(|second| stalls.contains(&second)))
        .map(|(_, entry)| entry)
        .collect()
}

/// One slowlog entry.
#[derive(Debug)]
struct Slow {
    /// How long the command took, in µs.
    micros: u64,
    /// The command and its first arguments.
    command: String,
    /// The name of the client that sent it.
    client: String,
    /// When it was logged, in Unix seconds.
    at: u64,
}

/// Watches this machine for stalls: a thread at Redis's priority (`renice -n -19`, as
/// [`RedisProcess::prioritize`] gives Redis) sleeps 1 ms at a time and notes the seconds in
/// which it woke half the limit or more late. A command that took the limit in such a second
/// may have waited for a core rather than worked.
struct StallWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::collections::BTreeSet<u64>>,
}

impl StallWatch {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            // The thread's own ID, for renice (which takes thread IDs on Linux).
            if let Ok(link) = std::fs::read_link("/proc/thread-self")
                && let Some(tid) = link.file_name()
            {
                let _ = std::process::Command::new("renice")
                    .args(["-n", "-19", "-p"])
                    .arg(tid)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            let mut seconds = std::collections::BTreeSet::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let before = Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                let late = before.elapsed().saturating_sub(Duration::from_millis(1));
                if late >= Duration::from_micros(LIMIT_MICROS / 2) {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                    seconds.insert(now.as_secs());
                }
            }
            seconds
        });
        Self { stop, thread }
    }

    /// The seconds in which the machine stalled.
    fn stop(self) -> std::collections::BTreeSet<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The slowlog's entries, newest first.
async fn slowlog(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Slow> {
    let entries: Vec<Value> = redis::cmd("SLOWLOG").arg("GET").arg(-1).query_async(conn).await.unwrap();
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(fields) = entry else { return None };
            let number = |field: Option<&Value>| match field? {
                Value::Int(i) => u64::try_from(*i).ok(),
                _ => None,
            };
            let (at, micros) = (number(fields.get(1))?, number(fields.get(2))?);
            let command = match fields.get(3)? {
                Value::Array(args) => args.iter().take(8).map(text).collect::<Vec<_>>().join(" "),
                _ => String::new(),
            };
            Some(Slow { micros, command, client: fields.get(5).map(text).unwrap_or_default(), at })
        })
        .collect()
}

// One thread for the server and the client: on a 2-core machine Redis then keeps a core of its
// own, and the slowlog (wall time) measures commands rather than Redis waiting to be scheduled.
#[tokio::test]
async fn no_command_stalls_redis_while_a_namespace_builds_its_worst_case() {
    let started = Instant::now();
    let redis = RedisProcess::start(&[]);
    redis.prioritize().await;
    let server = TestServer::start(test_config(&redis.url())).await;
    let ns = namespace("redis-work");
    let client = server.client(&ns).await;
    let (events, cache) = (client.events(), client.cache());
    let mut conn = test_conn(&redis).await;

    // The pending list: a group (made through Rookery, so the stream is registered), 100,000
    // entries appended and read by a consumer that never acks, with small pipelined commands.
    let settings = GroupSettings { ack_timeout: Some(Duration::from_secs(3600)), max_deliveries: None };
    events.create_group("big", "g", "", settings).await.unwrap();
    let (stream, _) = rookery_server::redis::keys::event_stream(&ns, "big", None);
    for chunk in (0..PENDING).collect::<Vec<_>>().chunks(5_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD").arg(&stream).arg("*").arg("n").arg(i).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    let mut read = 0;
    while read < PENDING {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("hog")
            .arg("COUNT")
            .arg(500)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut conn)
            .await
            .unwrap();
        let Value::Array(streams) = reply else { panic!("nothing to read after {read}: {reply:?}") };
        let Some(Value::Array(pair)) = streams.first() else { panic!("{streams:?}") };
        let Some(Value::Array(entries)) = pair.get(1) else { panic!("{pair:?}") };
        read += entries.len();
    }
    let summary: Value = redis::cmd("XPENDING").arg(&stream).arg("g").query_async(&mut conn).await.unwrap();
    let Value::Array(summary) = summary else { panic!("{summary:?}") };
    assert_eq!(summary.first(), Some(&Value::Int(PENDING as i64)));

    // Redis doubles its key tables when the key count passes a power of two, allocating each
    // new table in one step inside whichever command adds the key: 11 ms for a plain SET at
    // 131,072 keys on a loaded machine (seen under `stress-ng --cpu 2`), whoever's keys they
    // are. The tag below adds 200,000 keys; the tables are grown past that first, so that what
    // is measured is Rookery's commands rather than Redis's growth.
    for chunk in (0..PADDING).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET").arg(format!("padding:{i}")).arg(1).arg("EX").arg(3600).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }

    // From here on, Redis's record.
    for (name, value) in [
        ("slowlog-log-slower-than", LIMIT_MICROS.to_string()),
        ("slowlog-max-len", "10000".to_owned()),
        ("latency-monitor-threshold", (LIMIT_MICROS / 1000).to_string()),
    ] {
        redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async::<()>(&mut conn).await.unwrap();
    }
    redis::cmd("SLOWLOG").arg("RESET").query_async::<()>(&mut conn).await.unwrap();
    let stalls = StallWatch::start();
    redis::cmd("LATENCY").arg("RESET").query_async::<()>(&mut conn).await.unwrap();

    // Idle consumers: nothing new, nothing expired, and 100,000 pending entries to look through.
    let options = ConsumeOptions { max_in_flight: 100, ..Default::default() };
    let mut idle = Vec::new();
    for i in 0..3 {
        idle.push(events.consume("big", "g", format!("idle-{i}"), &options).await.unwrap());
    }

    // The consumer that holds them all reconnects, twice, with the largest in-flight bound, and
    // gets its own pending entries back in bounded batches (acking them as it goes).
    let reconnect = ConsumeOptions { max_in_flight: 10_000, ..Default::default() };
    let mut replayed = 0;
    for _ in 0..2 {
        let mut hog = events.consume("big", "g", "hog", &reconnect).await.unwrap();
        let mut batches = 0;
        while batches < 10 {
            let batch = tokio::time::timeout(Duration::from_secs(10), hog.next())
                .await
                .expect("own pending entries come back")
                .unwrap()
                .unwrap();
            assert!(batch.entries.iter().all(|d| d.deliveries >= 2), "own entries are deliveries again");
            replayed += batch.entries.len();
            hog.ack(batch.entries.iter().map(|d| d.id.clone())).await.unwrap();
            batches += 1;
        }
    }
    assert!(replayed >= 20, "the reconnecting consumer got its entries back ({replayed})");

    // A tag of 200,000 entries, written with bulk SetMany calls, expiring shortly after.
    let ttl = Duration::from_secs(2);
    let calls: Vec<_> = (0..TAGGED / 1000)
        .map(|call| {
            let cache = cache.clone();
            async move {
                let entries = (0..1000).map(|i| (format!("k{}", call * 1000 + i), vec![b'v'; 16]));
                let options = SetOptions { ttl: Some(ttl), tags: vec!["huge".into()], ..Default::default() };
                cache.set_many(entries, options).await.unwrap();
            }
        })
        .collect();
    futures::stream::iter(calls).buffer_unordered(4).collect::<Vec<()>>().await;
    // The index is split into bounded buckets (the earliest may have expired already).
    let tag = rookery_server::redis::keys::cache_tag_keys(&ns, "huge");
    let head: u64 = redis::cmd("GET").arg(&tag.head).query_async(&mut conn).await.unwrap();
    assert!(head as usize + 1 >= TAGGED / rookery_server::cache::TAG_BUCKET, "last bucket {head}");
    let buckets: Vec<String> =
        redis::cmd("ZRANGE").arg(&tag.buckets).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert!(!buckets.is_empty());
    for bucket in &buckets {
        let size: usize = redis::cmd("SCARD")
            .arg(tag.bucket(bucket.parse().unwrap()))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(size <= rookery_server::cache::TAG_BUCKET, "bucket {bucket} holds {size}");
    }
    // ...and it expires, entries and buckets, while the consumers keep looking. Judged by what
    // Redis answers for the keys (an expired key is gone at once), not by how soon its active
    // expiry frees them: on a busy machine that cycle lags.
    let mut index: Vec<String> = buckets.iter().map(|bucket| tag.bucket(bucket.parse().unwrap())).collect();
    index.extend([tag.head.clone(), tag.buckets.clone()]);
    let entries: Vec<String> =
        (0..TAGGED).map(|i| rookery_server::redis::keys::cache(&ns, &format!("k{i}")).value).collect();
    let expired = eventually(Duration::from_secs(30), || {
        let (mut conn, index, entries) = (conn.clone(), &index, &entries);
        async move {
            let mut left: usize = redis::cmd("EXISTS").arg(index).query_async(&mut conn).await.unwrap();
            for chunk in entries.chunks(10_000) {
                left += redis::cmd("EXISTS").arg(chunk).query_async::<usize>(&mut conn).await.unwrap();
            }
            left == 0
        }
    })
    .await;
    assert!(expired, "the tag and its entries expired");
    // The idle consumers are still there and got nothing new (nothing was appended) and nothing
    // expired (the ack timeout is an hour). What they may have: entries the reconnecting
    // consumer's server had read for it when it left, which go back to the group at once
    // (deliveries already counted: 2 or more), however the run's timing fell.
    for consumer in &mut idle {
        while let Ok(got) = tokio::time::timeout(Duration::from_millis(50), consumer.next()).await {
            let batch = got.expect("the consumer is still there").expect("a batch");
            assert!(
                batch.entries.iter().all(|d| d.deliveries >= 2),
                "an idle consumer got new entries: {batch:?}"
            );
        }
    }

    // Deleting the group with its 100,000 pending entries frees them in bounded steps.
    drop(idle);
    assert!(events.delete_group("big", "g").await.unwrap());

    // The slowlog records commands as it should: a slow script of the test's own shows in it.
    redis::cmd("EVAL")
        .arg("local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 12000 return 1")
        .arg(0)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let log = slowlog(&mut conn).await;
    assert!(log.iter().any(|slow| slow.client == TEST_CLIENT && slow.command.starts_with("EVAL")), "{log:?}");
    let stalls = stalls.stop();
    let slow = work_of_rookery(&log, &stalls);
    assert!(slow.is_empty(), "commands of {LIMIT_MICROS} µs or more: {slow:#?}");

    // No expired key took the limit or more to free.
    let latest: Vec<Value> = redis::cmd("LATENCY").arg("LATEST").query_async(&mut conn).await.unwrap();
    let expire_del = latest.iter().find_map(|event| match event {
        Value::Array(fields) if matches!(fields.first(), Some(Value::BulkString(b)) if b == b"expire-del") => {
            Some(fields.clone())
        }
        _ => None,
    });
    assert!(expire_del.is_none(), "an expired key took {LIMIT_MICROS} µs or more to free: {expire_del:?}");
    eprintln!(
        "redis_work: {:?} in all; the machine stalled a thread of Redis's priority in {} of those seconds",
        started.elapsed(),
        stalls.len()
    );
}
