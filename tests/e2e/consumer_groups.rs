//! The Events service's consumer groups end to end: append order for one consumer, a crashed
//! consumer's entries redelivered to the others within the ack timeout (every entry acked
//! exactly once), a restarted consumer getting back what it had, the in-flight bound, Nack
//! delays and dead letters, the `process` helper, group management and DescribeStream, and the
//! byte bound of reads of new entries.
//!
//! One room on purpose: the scenarios share one set of helpers (consumers, crash, redelivery
//! counting), and each delivery guarantee is easiest to review beside the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rookery_client::{AppendOptions, ConsumeOptions, Consumer, Delivery, EventsClient, GroupSettings};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::{RedisProcess, TestServer, eventually, namespace, shared_redis, test_config};

fn entry(n: u32) -> HashMap<String, Vec<u8>> {
    HashMap::from([("n".to_owned(), n.to_string().into_bytes())])
}

fn number_of(delivery: &Delivery) -> u32 {
    String::from_utf8_lossy(&delivery.fields["n"]).parse().unwrap()
}

async fn append_many(events: &EventsClient, stream: &str, count: u32) -> Vec<String> {
    let mut ids = Vec::with_capacity(count as usize);
    for n in 0..count {
        ids.push(events.append(stream, entry(n), &AppendOptions::default()).await.unwrap().0);
    }
    ids
}

/// Exactly `count` deliveries, from as many batches as they come in (each within 5 s).
async fn take(consumer: &mut Consumer, count: usize) -> Vec<Delivery> {
    let mut taken = Vec::new();
    while taken.len() < count {
        taken.extend(next_batch(consumer, Duration::from_secs(5)).await.expect("entries"));
    }
    assert_eq!(taken.len(), count, "no more than asked for");
    taken
}

/// The next batch within `within`, or None if none came.
async fn next_batch(consumer: &mut Consumer, within: Duration) -> Option<Vec<Delivery>> {
    match tokio::time::timeout(within, consumer.next()).await {
        Ok(Some(batch)) => Some(batch.expect("no error").entries),
        Ok(None) => panic!("the consumer ended"),
        Err(_) => None,
    }
}

fn group_settings(ack_timeout: Duration, max_deliveries: u32) -> ConsumeOptions {
    ConsumeOptions {
        create_group: true,
        settings: GroupSettings { ack_timeout: Some(ack_timeout), max_deliveries: Some(max_deliveries) },
        ..ConsumeOptions::default()
    }
}

#[tokio::test]
async fn a_single_consumer_gets_the_stream_in_append_order() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("order")).await.events();
    let ids = append_many(&events, "jobs", 1000).await;
    let mut consumer = events
        .consume("jobs", "workers", "w1", &ConsumeOptions { create_group: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(consumer.settings().max_in_flight, 100);
    let mut seen = Vec::new();
    while seen.len() < ids.len() {
        let batch = next_batch(&mut consumer, Duration::from_secs(5)).await.expect("entries");
        assert!(batch.len() <= 100, "never more than the in-flight bound at once");
        assert!(batch.iter().all(|d| d.deliveries == 1));
        consumer.ack(batch.iter().map(|d| d.id.clone())).await.unwrap();
        seen.extend(batch);
    }
    assert_eq!(seen.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids, "in append order");
    assert!(seen.iter().enumerate().all(|(i, d)| number_of(d) == i as u32));
    let described = events.describe("jobs").await.unwrap();
    assert_eq!(described.length, 1000);
    let group = &described.groups[0];
    assert_eq!((group.name.as_str(), group.pending, group.lag), ("workers", 0, Some(0)));
    assert_eq!(group.last_delivered_id, ids[999]);
    assert_eq!(group.oldest_pending_age, None);
}

#[tokio::test]
async fn a_crashed_consumer_s_entries_go_to_the_others_and_every_entry_is_acked_once() {
    const ENTRIES: u32 = 10_000;
    const ACK_TIMEOUT: Duration = Duration::from_secs(2);
    let config = test_config(&shared_redis().url());
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace("crash");
    let (on_a, on_b) = (a.client(&ns).await.events(), b.client(&ns).await.events());
    on_a.create_group(
        "orders",
        "billing",
        "",
        GroupSettings { ack_timeout: Some(ACK_TIMEOUT), max_deliveries: Some(0) },
    )
    .await
    .unwrap();
    let ids = append_many(&on_a, "orders", ENTRIES).await;

    // The consumer that crashes takes some batches and drops its stream without acking.
    let options = ConsumeOptions { max_in_flight: 50, ..ConsumeOptions::default() };
    let mut doomed = on_b.consume("orders", "billing", "doomed", &options).await.unwrap();
    let mut abandoned = Vec::new();
    abandoned.extend(take(&mut doomed, 50).await);
    assert!(next_batch(&mut doomed, Duration::from_millis(200)).await.is_none(), "at its in-flight bound");
    drop(doomed);
    let crashed_at = Instant::now();
    assert!(!abandoned.is_empty());

    // Two survivors ack each entry on its own, recording which acks took effect and when each
    // entry arrived.
    let acked_once: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let received_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let survivor = |events: EventsClient, name: &'static str| {
        let (acked_once, received_at) = (acked_once.clone(), received_at.clone());
        async move {
            let mut consumer = events
                .consume(
                    "orders",
                    "billing",
                    name,
                    &ConsumeOptions { max_in_flight: 20, ..Default::default() },
                )
                .await
                .unwrap();
            loop {
                if acked_once.lock().unwrap().len() == ENTRIES as usize {
                    return;
                }
                let Some(batch) = next_batch(&mut consumer, Duration::from_millis(500)).await else {
                    continue;
                };
                let arrived = Instant::now();
                for delivery in &batch {
                    received_at.lock().unwrap().entry(delivery.id.clone()).or_insert(arrived);
                }
                for delivery in batch {
                    if consumer.ack([delivery.id.clone()]).await.unwrap() == 1 {
                        *acked_once.lock().unwrap().entry(delivery.id).or_default() += 1;
                    }
                }
            }
        }
    };
    let finished = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(survivor(on_a.clone(), "survivor-a"), survivor(on_b.clone(), "survivor-b"))
    })
    .await;
    assert!(finished.is_ok(), "every entry was acked within 120 s");
    let acked_once = acked_once.lock().unwrap().clone();
    assert_eq!(acked_once.len(), ENTRIES as usize, "none lost");
    assert!(acked_once.values().all(|&n| n == 1), "each acked exactly once");
    assert_eq!(
        acked_once.keys().cloned().collect::<HashSet<_>>(),
        ids.iter().cloned().collect::<HashSet<_>>()
    );
    let received_at = received_at.lock().unwrap().clone();
    for delivery in &abandoned {
        let redelivered = received_at[&delivery.id].saturating_duration_since(crashed_at);
        assert!(
            redelivered <= ACK_TIMEOUT + Duration::from_secs(1),
            "entry {} came back {redelivered:?} after the crash",
            delivery.id
        );
    }
    let described = on_a.describe("orders").await.unwrap();
    assert_eq!(described.groups[0].pending, 0);
    assert_eq!(described.groups[0].lag, Some(0));
    // Survivors that left with nothing pending are forgotten (once their last wait ends).
    let forgotten = eventually(Duration::from_secs(3), || async {
        let described = on_a.describe("orders").await.unwrap();
        described.groups[0].consumers.iter().map(|c| c.name.clone()).collect::<Vec<_>>() == ["doomed"]
    })
    .await;
    assert!(forgotten, "{:?}", on_a.describe("orders").await.unwrap().groups[0].consumers);
}

#[tokio::test]
async fn a_restarted_consumer_first_gets_back_what_it_had() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("restart")).await.events();
    let ids = append_many(&events, "jobs", 20).await;
    let options = ConsumeOptions { max_in_flight: 5, ..group_settings(Duration::from_secs(600), 0) };
    let mut consumer = events.consume("jobs", "g", "worker-1", &options).await.unwrap();
    let first = take(&mut consumer, 5).await;
    assert_eq!(first.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids[..5]);
    drop(consumer);

    // Long before the ack timeout, the same consumer gets its own entries back first.
    let mut consumer = events.consume("jobs", "g", "worker-1", &options).await.unwrap();
    let again = take(&mut consumer, 5).await;
    assert_eq!(again.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids[..5]);
    assert!(again.iter().all(|d| d.deliveries == 2), "{again:?}");
    // Another consumer meanwhile gets only new entries.
    let mut other = events.consume("jobs", "g", "worker-2", &options).await.unwrap();
    let theirs = take(&mut other, 5).await;
    assert_eq!(theirs.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids[5..10]);
    consumer.ack(again.iter().map(|d| d.id.clone())).await.unwrap();
    let next = take(&mut consumer, 5).await;
    assert_eq!(next.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids[10..15]);
    assert!(next.iter().all(|d| d.deliveries == 1));
}

#[tokio::test]
async fn a_consumer_never_has_more_than_its_in_flight_bound_unacknowledged() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("inflight")).await.events();
    append_many(&events, "jobs", 100).await;
    let options = ConsumeOptions { max_in_flight: 10, ..group_settings(Duration::from_secs(600), 0) };
    let mut consumer = events.consume("jobs", "g", "slow", &options).await.unwrap();
    let mut held = take(&mut consumer, 10).await;
    assert!(next_batch(&mut consumer, Duration::from_millis(1500)).await.is_none(), "nothing past the bound");
    let described = events.describe("jobs").await.unwrap();
    assert_eq!(described.groups[0].pending, 10, "the server read no more than the bound from Redis");
    assert_eq!(described.groups[0].lag, Some(90));
    assert!(described.groups[0].oldest_pending_age.is_some());
    assert_eq!(described.groups[0].consumers[0].pending, 10);

    // Acking 4 lets exactly 4 more through, at once (the ack went through the same replica).
    let acked_at = Instant::now();
    assert_eq!(consumer.ack(held.drain(..4).map(|d| d.id)).await.unwrap(), 4);
    let more = take(&mut consumer, 4).await;
    assert!(acked_at.elapsed() < Duration::from_millis(400), "woken by the ack, not by polling");
    // Acking an entry twice counts once.
    assert_eq!(consumer.ack([more[0].id.clone(), more[0].id.clone()]).await.unwrap(), 1);
    assert_eq!(consumer.ack([more[0].id.clone()]).await.unwrap(), 0);
}

#[tokio::test]
async fn nacked_entries_come_back_after_their_delay_and_end_in_the_dead_letters() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("nack")).await.events();
    let id = events.append("mail", entry(7), &AppendOptions::default()).await.unwrap().0;
    let mut consumer =
        events.consume("mail", "senders", "s1", &group_settings(Duration::from_secs(5), 3)).await.unwrap();
    let first = next_batch(&mut consumer, Duration::from_secs(5)).await.unwrap();
    assert_eq!((first[0].id.as_str(), first[0].deliveries), (id.as_str(), 1));

    // Only the consumer that has it can give it back, and no later than the ack timeout.
    let nack = |consumer: &str, delay: Duration| {
        events.nack("mail", "senders", consumer.to_owned(), [id.clone()], delay)
    };
    assert_eq!(nack("s2", Duration::ZERO).await.unwrap(), (0, 0));
    assert_eq!(nack("s1", Duration::from_secs(6)).await.unwrap_err().code(), Code::InvalidArgument);

    let nacked_at = Instant::now();
    assert_eq!(consumer.nack([id.clone()], Duration::from_secs(1)).await.unwrap(), (1, 0));
    // Back after its delay, and before the 5 s ack timeout could have brought it back: how much
    // after the delay depends on the machine's load, so only that bound is checked.
    let second = next_batch(&mut consumer, Duration::from_millis(3900)).await.expect("redelivered");
    let waited = nacked_at.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(4),
        "after its delay: {waited:?}"
    );
    assert_eq!(second[0].deliveries, 2);
    let described = events.describe("mail").await.unwrap();
    assert_eq!((described.groups[0].pending, described.groups[0].delayed), (1, 0));

    assert_eq!(consumer.nack([id.clone()], Duration::ZERO).await.unwrap(), (1, 0));
    let third = next_batch(&mut consumer, Duration::from_secs(2)).await.expect("redelivered at once");
    assert_eq!(third[0].deliveries, 3);
    // The third failure reaches the limit: to the dead letters, acknowledged.
    assert_eq!(consumer.nack([id.clone()], Duration::ZERO).await.unwrap(), (0, 1));
    let mut dead = events.read_dead_letters("mail", "", false).await.unwrap();
    let dead = dead.next().await.unwrap().unwrap();
    assert_eq!(dead.len(), 1);
    let fields = &dead[0].fields;
    assert_eq!(fields["rookery.id"], id.as_bytes());
    assert_eq!(fields["rookery.group"], b"senders");
    assert_eq!(fields["rookery.deliveries"], b"3");
    assert_eq!(fields["rookery.reason"], b"max_deliveries");
    assert_eq!(fields["n"], b"7");
    let described = events.describe("mail").await.unwrap();
    assert_eq!((described.dead_letters, described.groups[0].pending), (1, 0));
    assert!(next_batch(&mut consumer, Duration::from_millis(800)).await.is_none(), "never delivered again");

    // An entry whose consumer keeps timing out reaches the dead letters the same way.
    let timeout = Duration::from_millis(300);
    let id = events.append("slow", entry(1), &AppendOptions::default()).await.unwrap().0;
    let mut consumer = events.consume("slow", "g", "stuck", &group_settings(timeout, 2)).await.unwrap();
    for round in 1..=2 {
        let batch = next_batch(&mut consumer, Duration::from_secs(3)).await.expect("delivered");
        assert_eq!((batch[0].id.as_str(), batch[0].deliveries), (id.as_str(), round));
    }
    assert!(next_batch(&mut consumer, Duration::from_secs(2)).await.is_none(), "not a third time");
    let described = events.describe("slow").await.unwrap();
    assert_eq!((described.dead_letters, described.groups[0].pending), (1, 0));
}

#[tokio::test]
async fn process_acks_what_the_handler_finished_and_retries_what_it_failed() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("process")).await.events();
    append_many(&events, "tasks", 50).await;
    // Entries divisible by 10 fail once; 49 always fails.
    let attempts: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let options = ConsumeOptions {
        retry_delay: Duration::from_millis(100),
        ..group_settings(Duration::from_secs(5), 3)
    };
    let run = events.process("tasks", "g", "p1", &options, |delivery| {
        let attempts = attempts.clone();
        async move {
            let n = number_of(&delivery);
            let mut attempts = attempts.lock().unwrap();
            let tries = attempts.entry(n).or_default();
            *tries += 1;
            if n == 49 || (n.is_multiple_of(10) && *tries == 1) { Err("failed") } else { Ok(()) }
        }
    });
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let described = events.describe("tasks").await.unwrap();
            if described.dead_letters == 1
                && described.groups.first().is_some_and(|g| g.pending == 0 && g.lag == Some(0))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::select! {
        result = run => panic!("process ended: {result:?}"),
        done = done => done.expect("every entry settled within 10 s"),
    }
    let attempts = attempts.lock().unwrap();
    assert_eq!(attempts.len(), 50);
    for (n, tries) in attempts.iter() {
        let expected = if *n == 49 {
            3
        } else if n.is_multiple_of(10) {
            2
        } else {
            1
        };
        assert_eq!(*tries, expected, "entry {n}");
    }
}

/// The status code of a call that must fail.
#[track_caller]
fn code<T>(result: Result<T, tonic::Status>) -> Code {
    result.map(|_| ()).unwrap_err().code()
}

#[tokio::test]
async fn groups_are_created_once_described_and_deleted() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("groups");
    let events = server.client(&ns).await.events();
    assert_eq!(code(events.describe("nothing").await), Code::NotFound);
    assert_eq!(code(events.consume("nothing", "g", "c", &ConsumeOptions::default()).await), Code::NotFound);

    events.append("s", entry(0), &AppendOptions::default()).await.unwrap();
    let last = events.append("s", entry(1), &AppendOptions::default()).await.unwrap().0;
    events.create_group("s", "from-start", "", GroupSettings::default()).await.unwrap();
    events
        .create_group("s", "new-only", "$", GroupSettings { max_deliveries: Some(0), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(
        code(events.create_group("s", "new-only", "", GroupSettings::default()).await),
        Code::AlreadyExists
    );
    // Consume with create_group on an existing group just joins it.
    let options = ConsumeOptions { create_group: true, ..ConsumeOptions::default() };
    let mut joined = events.consume("s", "new-only", "c", &options).await.unwrap();
    assert!(
        next_batch(&mut joined, Duration::from_millis(300)).await.is_none(),
        "starts after the last entry"
    );
    assert_eq!(joined.settings().max_deliveries, 0, "the stored setting, not the default");
    assert_eq!(joined.settings().ack_timeout, Duration::from_secs(30), "the server's default");

    let described = events.describe("s").await.unwrap();
    assert_eq!((described.length, described.last_id.as_str()), (2, last.as_str()));
    let by_name: HashMap<_, _> = described.groups.iter().map(|g| (g.name.as_str(), g)).collect();
    assert_eq!(by_name["from-start"].lag, Some(2));
    assert_eq!(by_name["new-only"].lag, Some(0));
    assert_eq!(by_name["new-only"].consumers.len(), 1);
    assert_eq!(by_name["from-start"].settings.unwrap().max_deliveries, Some(10));

    // Bad input.
    assert_eq!(
        code(events.create_group("s", "bad name", "", GroupSettings::default()).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(events.create_group("s", "g2", "soon", GroupSettings::default()).await),
        Code::InvalidArgument
    );
    let too_long = GroupSettings { ack_timeout: Some(Duration::from_secs(24 * 3600)), ..Default::default() };
    assert_eq!(code(events.create_group("s", "g3", "", too_long).await), Code::InvalidArgument);
    assert_eq!(code(events.consume("s", "new-only", "~delayed", &options).await), Code::InvalidArgument);
    let huge = ConsumeOptions { max_in_flight: 1_000_000, ..options.clone() };
    assert_eq!(code(events.consume("s", "new-only", "c2", &huge).await), Code::InvalidArgument);
    assert_eq!(code(events.ack("s", "new-only", ["not-an-id"]).await), Code::InvalidArgument);
    assert_eq!(code(events.ack("s", "new-only", Vec::<String>::new()).await), Code::InvalidArgument);
    assert_eq!(code(events.ack("s", "missing", [last.clone()]).await), Code::NotFound);
    let reserved = HashMap::from([("rookery.id".to_owned(), b"x".to_vec())]);
    assert_eq!(code(events.append("s", reserved, &AppendOptions::default()).await), Code::InvalidArgument);

    // Deleting a group ends its consumers.
    assert!(events.delete_group("s", "new-only").await.unwrap());
    assert!(!events.delete_group("s", "new-only").await.unwrap());
    let ended = tokio::time::timeout(Duration::from_secs(3), joined.next()).await.expect("the consumer ends");
    assert_eq!(ended.unwrap().unwrap_err().code(), Code::NotFound);
    assert_eq!(events.describe("s").await.unwrap().groups.len(), 1);

    // Every key expires: the stream and its groups' settings one idle TTL after the last append
    // or group creation (events.stream_idle_ttl), everything else (marks, markers) sooner.
    let mut conn = shared_redis().conn().await;
    let keys = shared_redis().keys_of(&ns).await;
    assert!(keys.iter().any(|key| key.ends_with("}:groups")), "the groups' settings are stored: {keys:?}");
    let idle_ttl = rookery_server::config::Config::default().events.stream_idle_ttl.as_millis() as i64;
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        // The namespace's stream index holds a registration up to two hours (two lives of a
        // stream's registration mark) longer.
        let bound = if key.ends_with(":streams:}") { idle_ttl + 2 * 3_600_000 } else { idle_ttl };
        assert!(ttl > 0 && ttl <= bound, "{key} has TTL {ttl} ms");
    }
}

#[tokio::test]
async fn large_entries_arrive_in_messages_that_fit_and_a_lost_ack_does_not_stall_a_consumer() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("large")).await.events();
    // Ten entries of 900 KB: more than one 4 MB gRPC message holds.
    for n in 0..10u8 {
        let fields = HashMap::from([("blob".to_owned(), vec![n; 900 * 1024])]);
        events.append("blobs", fields, &AppendOptions::default()).await.unwrap();
    }
    let options = ConsumeOptions { max_in_flight: 10, ..group_settings(Duration::from_secs(600), 0) };
    let mut consumer = events.consume("blobs", "g", "c", &options).await.unwrap();
    let mut received = Vec::new();
    while received.len() < 10 {
        let batch = next_batch(&mut consumer, Duration::from_secs(10)).await.expect("entries");
        consumer.ack(batch.iter().map(|d| d.id.clone())).await.unwrap();
        received.extend(batch.into_iter().map(|d| d.fields["blob"][0]));
    }
    assert_eq!(received, (0..10).collect::<Vec<u8>>(), "all of them, in order");

    // A consumer at its bound whose acks never arrive gets its own entries again after the ack
    // timeout, even as the only consumer.
    append_many(&events, "lost", 3).await;
    let options = ConsumeOptions { max_in_flight: 2, ..group_settings(Duration::from_millis(500), 0) };
    let mut consumer = events.consume("lost", "g", "only", &options).await.unwrap();
    let first = next_batch(&mut consumer, Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.len(), 1, "batches of half the bound");
    let second = next_batch(&mut consumer, Duration::from_secs(5)).await.unwrap();
    let again = next_batch(&mut consumer, Duration::from_secs(3)).await.expect("redelivered to itself");
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].deliveries, 2);
    assert_ne!(second[0].id, first[0].id);
}

/// The COUNT of every read of new entries (XREADGROUP ... `>`) Redis ran on the stream whose
/// key is `stream`, newest first, from a slowlog that records every command. (Redis 7 logs the
/// commands scripts run too; the script's own reads are of pending entries, by ID.)
async fn read_counts(redis: &RedisProcess, stream: &str) -> Vec<u64> {
    let log: redis::Value =
        redis::cmd("SLOWLOG").arg("GET").arg(100_000).query_async(&mut redis.conn().await).await.unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let redis::Value::Array(records) = log else { panic!("{log:?}") };
    let mut counts = Vec::new();
    for record in records {
        let redis::Value::Array(fields) = record else { continue };
        let Some(redis::Value::Array(args)) = fields.get(3) else { continue };
        let args: Vec<String> = args.iter().map(text).collect();
        if args.first().is_some_and(|c| c.eq_ignore_ascii_case("XREADGROUP"))
            && args.ends_with(&[stream.to_owned(), ">".to_owned()])
            && let Some(at) = args.iter().position(|a| a.eq_ignore_ascii_case("COUNT"))
        {
            counts.push(args[at + 1].parse().unwrap());
        }
    }
    counts
}

#[tokio::test]
async fn reads_of_new_entries_take_about_a_megabyte_of_them() {
    // A Redis of its own, whose slowlog records this test's commands, every one of them.
    let redis = RedisProcess::start(&["--slowlog-log-slower-than", "0", "--slowlog-max-len", "100000"]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let ns = namespace("read-bytes");
    let events = server.client(&ns).await.events();
    let key = |stream: &str| rookery_server::redis::keys::event_stream(&ns, stream, None).0;
    // Large entries: a read that asked for the consumer's batch (32) would carry all ten, 9 MB.
    for n in 0..10u8 {
        let fields = HashMap::from([("blob".to_owned(), vec![n; 900 * 1024])]);
        events.append("blobs", fields, &AppendOptions::default()).await.unwrap();
    }
    // Small ones after them.
    append_many(&events, "small", 200).await;
    let mut received = Vec::new();
    // In flight: 64 entries (batches of 32) for the large ones, 10 (batches of 5) for the small.
    for (stream, count, max_in_flight) in [("blobs", 10, 64), ("small", 200, 10)] {
        let options = ConsumeOptions { max_in_flight, ..group_settings(Duration::from_secs(600), 0) };
        let mut consumer = events.consume(stream, "g", "c", &options).await.unwrap();
        let mut taken = 0;
        while taken < count {
            let batch = next_batch(&mut consumer, Duration::from_secs(10)).await.expect("entries");
            consumer.ack(batch.iter().map(|d| d.id.clone())).await.unwrap();
            taken += batch.len();
        }
        received.push(taken);
    }
    assert_eq!(received, [10, 200]);
    // A consumer's first read asks for at most 16 entries, whatever their size (that one
    // carries 9 MB here); once it has seen 900 KB entries, one at a time. Small ones by the batch.
    let large = read_counts(&redis, &key("blobs")).await;
    let (first, after) = large.split_last().expect("reads of the large entries");
    assert!(
        *first == 16 && !after.is_empty() && after.iter().all(|&n| n == 1),
        "reads of 900 KB entries asked for {large:?}"
    );
    let small = read_counts(&redis, &key("small")).await;
    assert!(small.contains(&5), "reads of small entries asked for {small:?}");
}

#[tokio::test]
async fn consumers_that_left_holding_entries_are_forgotten_once_those_are_claimed_and_idle() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("prune");
    let events = server.client(&ns).await.events();
    append_many(&events, "jobs", 4).await;
    let options = ConsumeOptions { max_in_flight: 4, ..group_settings(Duration::from_millis(200), 0) };
    let mut gone = events.consume("jobs", "g", "gone", &options).await.unwrap();
    take(&mut gone, 4).await;
    drop(gone);
    // Its server side ends within one wait for new entries (500 ms), still holding the four.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut worker = events.consume("jobs", "g", "worker", &options).await.unwrap();
    let mut acked = 0;
    while acked < 4 {
        let batch = next_batch(&mut worker, Duration::from_secs(5)).await.expect("the entries gone held");
        acked += worker.ack(batch.iter().map(|d| d.id.clone())).await.unwrap();
    }
    let names = || async {
        let described = events.describe("jobs").await.unwrap();
        described.groups[0].consumers.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names().await, ["gone", "worker"], "the one that left keeps its (now empty) place");
    // The script consumers run every minute, with no idle allowance: the empty, idle `gone` goes.
    let mut conn = shared_redis().conn().await;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("*{ns}*:st:jobs}}")).query_async(&mut conn).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let forgotten: i64 = redis::Script::new(include_str!("../../server/src/events/prune.lua"))
        .key(&keys[0])
        .arg("g")
        .arg(300)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert!(forgotten >= 1);
    assert!(!names().await.contains(&"gone".to_owned()));
}

#[tokio::test]
async fn process_keeps_consuming_across_a_redis_restart() {
    let mut redis = RedisProcess::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let events = server.client(&namespace("redis-restart")).await.events();
    let seen: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let worker = {
        let (events, seen) = (events.clone(), seen.clone());
        tokio::spawn(async move {
            let options = ConsumeOptions { create_group: true, ..ConsumeOptions::default() };
            events
                .process("jobs", "g", "w", &options, |delivery| {
                    seen.lock().unwrap().insert(number_of(&delivery));
                    async { Ok::<_, ()>(()) }
                })
                .await
        })
    };
    // Appends retried until Redis answers; the idempotency key keeps a retry from adding twice.
    let append = |n: u32| {
        let events = events.clone();
        async move {
            let options =
                AppendOptions { idempotency_key: Some(format!("job-{n}")), ..AppendOptions::default() };
            let appended = eventually(Duration::from_secs(15), || async {
                events.append("jobs", entry(n), &options).await.is_ok()
            })
            .await;
            assert!(appended, "append {n}");
        }
    };
    let all_seen = |count: u32| {
        let seen = seen.clone();
        async move {
            eventually(Duration::from_secs(15), || async { seen.lock().unwrap().len() == count as usize })
                .await
        }
    };
    for n in 0..5 {
        append(n).await;
    }
    assert!(all_seen(5).await, "before the restart");
    redis.restart();
    for n in 5..10 {
        append(n).await;
    }
    assert!(all_seen(10).await, "after the restart: {:?}", seen.lock().unwrap());
    assert!(!worker.is_finished(), "process keeps running: {:?}", worker.await);
    let settled = eventually(Duration::from_secs(5), || async {
        events.describe("jobs").await.is_ok_and(|d| d.groups[0].pending == 0 && d.groups[0].lag == Some(0))
    })
    .await;
    assert!(settled, "everything acked");
    worker.abort();
}

#[tokio::test]
async fn a_new_call_takes_a_consumer_name_over_and_the_old_one_ends() {
    let config = test_config(&shared_redis().url());
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace("takeover");
    let (on_a, on_b) = (a.client(&ns).await.events(), b.client(&ns).await.events());
    let ids = append_many(&on_a, "jobs", 4).await;
    let options = ConsumeOptions { max_in_flight: 2, ..group_settings(Duration::from_secs(600), 0) };
    // The first call holds two entries; its client then goes silent (it never reads again).
    let mut old = on_a.consume("jobs", "g", "worker-1", &options).await.unwrap();
    let held = take(&mut old, 2).await;
    // A new call with the same name, through another replica, takes the name over: it gets the
    // held entries first, and the old call ends with ABORTED.
    let mut new = on_b.consume("jobs", "g", "worker-1", &options).await.unwrap();
    let again = take(&mut new, 2).await;
    assert_eq!(
        again.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        held.iter().map(|d| d.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(again.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids[..2]);
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match old.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status.code(),
                None => panic!("the old call ended without a status"),
            }
        }
    })
    .await
    .expect("the old call ends");
    assert_eq!(ended, Code::Aborted);
    new.ack(again.iter().map(|d| d.id.clone())).await.unwrap();
    assert_eq!(take(&mut new, 2).await.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids[2..]);
}

#[tokio::test]
async fn a_group_has_at_most_its_cap_of_consumers_and_returning_ones_are_let_in() {
    let mut config = test_config(&shared_redis().url());
    config.events.max_consumers_per_group = 3;
    let server = TestServer::start(config).await;
    let events = server.client(&namespace("consumer-cap")).await.events();
    events.append("s", entry(1), &AppendOptions::default()).await.unwrap();
    let options = ConsumeOptions { create_group: true, ..ConsumeOptions::default() };
    let mut open = Vec::new();
    for name in ["c1", "c2", "c3"] {
        open.push(events.consume("s", "g", name, &options).await.unwrap());
    }
    // c1 holds the entry, so it stays a consumer of the group whatever happens to its call.
    let first = open[0].next().await.unwrap().unwrap();
    assert_eq!(first.entries.len(), 1);
    let refused = events.consume("s", "g", "c4", &options).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("events.max_consumers_per_group"), "{}", refused.message());
    // A consumer the group knows comes back, at the cap: its own pending entry first.
    drop(open.remove(0));
    let mut back = events.consume("s", "g", "c1", &options).await.unwrap();
    let again = back.next().await.unwrap().unwrap();
    assert_eq!(again.entries[0].id, first.entries[0].id);
}

#[tokio::test]
async fn describe_lists_every_group_and_as_many_consumers_as_the_budget_holds() {
    let mut config = test_config(&shared_redis().url());
    config.limits.max_value_bytes = 1;
    config.limits.max_response_bytes = Some(2_000);
    let server = TestServer::start(config).await;
    let events = server.client(&namespace("describe-budget")).await.events();
    events.create_group("s", "g", "", GroupSettings::default()).await.unwrap();
    let options = ConsumeOptions::default();
    let mut open = Vec::new();
    for i in 0..10 {
        // 200-byte names: about 230 bytes of answer each, so a 2,000-byte budget holds a few.
        open.push(events.consume("s", "g", format!("{i}{}", "c".repeat(199)), &options).await.unwrap());
    }
    let described = events.describe("s").await.unwrap();
    let group = &described.groups[0];
    assert_eq!(group.consumers.len() as u64 + group.consumers_omitted, 10, "{group:?}");
    assert!(group.consumers_omitted > 0 && !group.consumers.is_empty(), "{group:?}");
    let size = prost::Message::encoded_len(&described);
    assert!(size <= 2_000, "the answer is {size} bytes");
}

#[tokio::test]
async fn the_groups_own_holder_of_nacked_entries_takes_no_consumers_place() {
    let mut config = test_config(&shared_redis().url());
    config.events.max_consumers_per_group = 1;
    let server = TestServer::start(config).await;
    let events = server.client(&namespace("consumer-cap-delayed")).await.events();
    events.append("s", entry(1), &AppendOptions::default()).await.unwrap();
    let options = ConsumeOptions { create_group: true, ..ConsumeOptions::default() };
    let mut first = events.consume("s", "g", "a", &options).await.unwrap();
    let delivered = first.next().await.unwrap().unwrap();
    // Given back for later: it now waits with the group's own holder of nacked entries, and
    // `a`, holding nothing, is forgotten when it leaves.
    first.nack(delivered.entries.iter().map(|d| d.id.clone()), Duration::from_secs(30)).await.unwrap();
    drop(first);
    assert!(
        eventually(Duration::from_secs(10), || async {
            events.consume("s", "g", "b", &options).await.is_ok()
        })
        .await,
        "a new consumer could not join a group whose only consumer left"
    );
}
