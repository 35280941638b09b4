//! The Events service's pub/sub end to end: a subscription is live when `subscribe` returns,
//! messages fan out across replicas and namespaces stay apart, patterns, a slow subscriber is
//! told what it missed (and cut past the bound, freed on the server at once even if it never
//! reads) without slowing the others, and a Redis restart
//! is reported as a gap; durable streams: append with trimming and idempotency, read from the
//! start or after an entry, and follow across replicas.

use std::time::Duration;

use std::collections::HashMap;

use bytes::Bytes;
use rookery_client::{AppendOptions, EntryStream, Event, EventStream, GapReason, StreamEntry, pb};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::{RedisProcess, TestServer, eventually, namespace, shared_redis, test_config};

async fn next(stream: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open")
        .expect("no error")
}

fn message(channel: &str, payload: &[u8]) -> Event {
    Event::Message { channel: channel.into(), pattern: None, payload: Bytes::copy_from_slice(payload) }
}

#[tokio::test]
async fn messages_reach_every_subscriber_on_every_replica_and_stay_in_their_namespace() {
    let config = test_config(&shared_redis().url());
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace("pubsub");
    let (events_a, events_b) = (a.client(&ns).await.events(), b.client(&ns).await.events());
    let other_ns = b.client(&namespace("pubsub-other")).await.events();

    let mut on_a = events_a.subscribe(["orders"], Vec::<String>::new()).await.unwrap();
    let mut on_b = events_b.subscribe(["orders"], ["orders/*"]).await.unwrap();
    let mut elsewhere = other_ns.subscribe(["orders"], Vec::<String>::new()).await.unwrap();
    // Live as soon as subscribe returned: nothing published after it is lost.
    assert_eq!(events_a.publish("orders", b"1".to_vec()).await.unwrap(), 2, "both replicas receive it");
    assert_eq!(next(&mut on_a).await, message("orders", b"1"));
    assert_eq!(next(&mut on_b).await, message("orders", b"1"));
    events_b.publish("orders/eu", b"2".to_vec()).await.unwrap();
    assert_eq!(
        next(&mut on_b).await,
        Event::Message {
            channel: "orders/eu".into(),
            pattern: Some("orders/*".into()),
            payload: Bytes::from_static(b"2")
        }
    );
    // In order.
    for i in 0..100u32 {
        events_a.publish("orders", i.to_be_bytes().to_vec()).await.unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(next(&mut on_a).await, message("orders", &i.to_be_bytes()));
    }
    // Another namespace's channel of the same name heard nothing.
    assert!(tokio::time::timeout(Duration::from_millis(200), elsewhere.next()).await.is_err());
    // Bad names are refused.
    let bad = events_a.subscribe(["a b"], Vec::<String>::new()).await.err().unwrap();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(events_a.publish("x*", vec![]).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_slow_subscriber_is_told_what_it_missed_and_does_not_slow_the_others() {
    let mut config = test_config(&shared_redis().url());
    config.events.subscriber_buffer = 4;
    let server = TestServer::start(config).await;
    let ns = namespace("slow");
    let events = server.client(&ns).await.events();
    // Two connections: the slow one's HTTP/2 window fills without affecting the fast one.
    let slow_client = server.client(&ns).await.events();
    let mut slow = slow_client.subscribe(["feed"], Vec::<String>::new()).await.unwrap();
    let mut fast = events.subscribe(["feed"], Vec::<String>::new()).await.unwrap();
    let payload = vec![7u8; 256 * 1024];
    for _ in 0..60 {
        events.publish("feed", payload.clone()).await.unwrap();
        // The fast subscriber keeps up with every message.
        let got = next(&mut fast).await;
        assert!(matches!(got, Event::Message { .. }), "{got:?}");
    }
    // The slow one gets what fit, and gaps that account for every other message.
    let mut delivered = 0;
    let mut missed = 0;
    while delivered + missed < 60 {
        match next(&mut slow).await {
            Event::Message { .. } => delivered += 1,
            Event::Gap { reason: GapReason::SlowSubscriber, missed: n } => missed += n,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delivered + missed, 60);
    assert!(missed > 0, "nothing was missed: the test did not make the subscriber slow");
}

#[tokio::test]
async fn messages_ready_together_leave_together_in_order_for_clients_that_ask() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("batch");
    let publisher = server.client(&ns).await.events();
    // Each subscriber on a connection of its own, so that its HTTP/2 window fills by itself.
    let (batching, single) = (server.client(&ns).await.events(), server.client(&ns).await.events());
    let subscribe =
        |batch: bool| pb::EventsSubscribeRequest { channels: vec!["burst".into()], patterns: vec![], batch };
    let mut batched = batching.raw().subscribe(subscribe(true)).await.unwrap().into_inner();
    let mut one_by_one = single.raw().subscribe(subscribe(false)).await.unwrap().into_inner();
    for stream in [&mut batched, &mut one_by_one] {
        let first = stream.message().await.unwrap().unwrap().event;
        assert!(matches!(first, Some(pb::events_subscribe_response::Event::Subscribed(_))), "{first:?}");
    }
    // 4.8 MB while nobody reads: more than the HTTP/2 windows hold (2 MB), fewer messages than
    // the subscriber buffers drop.
    const BURST: usize = 600;
    for i in 0..BURST {
        let mut payload = vec![b'.'; 8192];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        publisher.publish("burst", payload).await.unwrap();
    }
    for (stream, batch) in [(&mut batched, true), (&mut one_by_one, false)] {
        let (mut received, mut responses, mut largest) = (Vec::new(), 0, 0);
        while received.len() < BURST {
            use pb::events_subscribe_response::Event as Out;
            let messages = match stream.message().await.unwrap().unwrap().event.unwrap() {
                Out::Message(message) => vec![message],
                Out::Messages(batch) => batch.messages,
                other => panic!("unexpected {other:?}"),
            };
            responses += 1;
            largest = largest.max(messages.len());
            received
                .extend(messages.into_iter().map(|m| u64::from_be_bytes(m.payload[..8].try_into().unwrap())));
        }
        assert_eq!(received, (0..BURST as u64).collect::<Vec<_>>(), "every message, in order");
        if batch {
            assert!(largest > 1 && responses < BURST, "{responses} responses for {BURST} messages");
            eprintln!(
                "batching subscriber: {BURST} messages in {responses} responses, up to {largest} in one"
            );
        } else {
            assert_eq!(responses, BURST, "a client that did not ask gets one message per response");
        }
    }
}

#[tokio::test]
async fn a_subscriber_too_far_behind_is_cut() {
    let mut config = test_config(&shared_redis().url());
    config.events.subscriber_buffer = 2;
    config.events.max_missed = 5;
    let server = TestServer::start(config).await;
    let ns = namespace("cut");
    let events = server.client(&ns).await.events();
    let slow_client = server.client(&ns).await.events();
    let mut slow = slow_client.subscribe(["feed"], Vec::<String>::new()).await.unwrap();
    let payload = vec![1u8; 512 * 1024];
    for _ in 0..40 {
        events.publish("feed", payload.clone()).await.unwrap();
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the slow subscriber's stream ends");
    assert_eq!(ended.map(|s| s.code()), Some(Code::ResourceExhausted));
}

#[tokio::test]
async fn a_subscriber_cut_while_it_does_not_read_is_freed_at_once_and_told_when_it_reads() {
    let mut config = test_config(&shared_redis().url());
    config.events.subscriber_buffer = 2;
    config.events.max_missed = 5;
    let server = TestServer::start(config).await;
    let ns = namespace("cut-unread");
    let events = server.client(&ns).await.events();
    // Its own connection, never read while messages flow: once its HTTP/2 windows are full the
    // server cannot hand it anything, so only the server's own accounting can notice the cut.
    let stalled_client = server.client(&ns).await.events();
    let mut stalled = stalled_client.subscribe(["feed"], Vec::<String>::new()).await.unwrap();
    // Redis's record of the replica's subscription: the channel's subscriber count.
    let channel = format!("{}feed", rookery_server::redis::keys::events_channel_prefix(&ns));
    let conn = shared_redis().conn().await;
    let numsub = || {
        let (mut conn, channel) = (conn.clone(), channel.clone());
        async move {
            let counts: Vec<(String, u64)> =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.unwrap();
            counts[0].1
        }
    };
    assert_eq!(numsub().await, 1, "the replica subscribed the channel for its one subscriber");
    // 20 MB: far more than the HTTP/2 windows and send buffers between the server and the
    // client hold, plus the 2-message queue and the 5 misses allowed.
    let payload = vec![1u8; 512 * 1024];
    for _ in 0..40 {
        events.publish("feed", payload.clone()).await.unwrap();
    }
    let freed = eventually(Duration::from_secs(10), || async { numsub().await == 0 }).await;
    assert!(freed, "the cut subscriber still holds the replica's subscription of {channel}");
    assert_eq!(events.publish("feed", b"after".to_vec()).await.unwrap(), 0, "nobody receives it any more");
    // Reading now, the client gets what was already on its way, then the cut.
    let (delivered, ended) = tokio::time::timeout(Duration::from_secs(30), async {
        let mut delivered = 0;
        loop {
            match stalled.next().await {
                Some(Ok(Event::Message { .. })) => delivered += 1,
                // A miss it was told of while it still had room (within the misses allowed).
                Some(Ok(Event::Gap { reason: GapReason::SlowSubscriber, .. })) => {}
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                Some(Err(status)) => return (delivered, Some(status)),
                None => return (delivered, None),
            }
        }
    })
    .await
    .expect("the cut subscriber's stream ends");
    let status = ended.expect("the stream ends with an error, not quietly");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("events.max_missed"), "{status:?}");
    assert!(delivered < 40, "it received all {delivered} messages: the test did not stall it");
}

#[tokio::test]
async fn a_redis_restart_is_reported_as_a_gap_and_the_subscription_comes_back() {
    let mut redis = RedisProcess::start(&[]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let events = server.client(&namespace("reconnect")).await.events();
    let mut subscription = events.subscribe(["alerts"], Vec::<String>::new()).await.unwrap();
    events.publish("alerts", b"before".to_vec()).await.unwrap();
    assert_eq!(next(&mut subscription).await, message("alerts", b"before"));
    redis.restart();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(15), subscription.next()).await.unwrap().unwrap().unwrap(),
        Event::Gap { reason: GapReason::Reconnected, missed: 0 }
    );
    // Resubscribed: a publish after the gap arrives.
    assert!(
        eventually(Duration::from_secs(5), || async {
            events.publish("alerts", b"after".to_vec()).await.is_ok()
        })
        .await
    );
    assert_eq!(next(&mut subscription).await, message("alerts", b"after"));
}

fn fields(n: u32) -> HashMap<String, Vec<u8>> {
    HashMap::from([("n".to_owned(), n.to_be_bytes().to_vec())])
}

async fn collect(mut stream: EntryStream) -> Vec<StreamEntry> {
    let mut all = Vec::new();
    while let Some(batch) =
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("a batch")
    {
        all.extend(batch.unwrap());
    }
    all
}

#[tokio::test]
async fn streams_append_in_order_resume_after_an_entry_and_never_append_twice() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("streams")).await.events();
    let mut ids = Vec::new();
    for n in 0..250 {
        ids.push(events.append("orders", fields(n), &AppendOptions::default()).await.unwrap().0);
    }
    let all = collect(events.read("orders", "", false).await.unwrap()).await;
    assert_eq!(all.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
    assert!(all.iter().enumerate().all(|(n, e)| e.fields == fields(n as u32)), "entries in append order");
    // Resume after the 100th entry.
    let rest = collect(events.read("orders", ids[99].clone(), false).await.unwrap()).await;
    assert_eq!(rest.first().map(|e| e.id.clone()), Some(ids[100].clone()));
    assert_eq!(rest.len(), 150);
    // A retried append with the same idempotency key adds nothing.
    let once = AppendOptions { idempotency_key: Some("order-7".into()), ..AppendOptions::default() };
    let (first, duplicate) = events.append("orders", fields(7), &once).await.unwrap();
    assert!(!duplicate);
    assert_eq!(events.append("orders", fields(7), &once).await.unwrap(), (first.clone(), true));
    assert_eq!(collect(events.read("orders", ids[249].clone(), false).await.unwrap()).await.len(), 1);
    // Bad input.
    let bad = events.append("orders", HashMap::new(), &AppendOptions::default()).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = events.read("orders", "not-an-id", false).await.err().unwrap();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn every_stream_is_trimmed_even_without_options() {
    let mut config = test_config(&shared_redis().url());
    config.events.stream_max_len = 200;
    let server = TestServer::start(config).await;
    let ns = namespace("trim");
    let events = server.client(&ns).await.events();
    for n in 0..1000 {
        events.append("log", fields(n), &AppendOptions::default()).await.unwrap();
    }
    let bounded = AppendOptions { max_len: 20, ..AppendOptions::default() };
    for n in 0..1000 {
        events.append("bounded", fields(n), &bounded).await.unwrap();
    }
    // A stream given only an age bound is still bounded by events.stream_max_len.
    let aged = AppendOptions { max_age: Some(Duration::from_secs(3600)), ..AppendOptions::default() };
    for n in 0..1000 {
        events.append("aged", fields(n), &aged).await.unwrap();
    }
    // No append may ask for more than the server's bound.
    let unbounded = AppendOptions { max_len: 201, ..AppendOptions::default() };
    let refused = events.append("log", fields(0), &unbounded).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("events.stream_max_len"), "{}", refused.message());
    // Approximate trimming keeps whole nodes of up to 100 entries.
    let mut conn = shared_redis().conn().await;
    for (stream, bound) in [("log", 200), ("bounded", 20), ("aged", 200)] {
        let key = format!("rk1:{{{ns}:st:{stream}}}");
        let len: u64 = redis::cmd("XLEN").arg(&key).query_async(&mut conn).await.unwrap();
        assert!(len <= bound + 100, "{stream} kept {len} entries");
    }
}

#[tokio::test]
async fn a_follower_gets_new_entries_from_another_replica_and_leaves_cleanly() {
    let mut config = test_config(&shared_redis().url());
    // Few dedicated connections, so that a leak would show.
    config.redis.blocking_connections = 8;
    let (a, b) = tokio::join!(TestServer::start(config.clone()), TestServer::start(config));
    let ns = namespace("follow");
    let (writer, reader) = (a.client(&ns).await.events(), b.client(&ns).await.events());
    let first = writer.append("feed", fields(0), &AppendOptions::default()).await.unwrap().0;
    let mut follow = reader.read("feed", "$", true).await.unwrap();
    let mut seen = Vec::new();
    for n in 1..=30 {
        writer.append("feed", fields(n), &AppendOptions::default()).await.unwrap();
        while seen.len() < n as usize {
            let batch = tokio::time::timeout(Duration::from_secs(2), follow.next())
                .await
                .expect("new entries")
                .unwrap()
                .unwrap();
            seen.extend(batch);
        }
    }
    assert!(
        seen.iter().enumerate().all(|(i, e)| e.fields == fields(i as u32 + 1)),
        "only new entries, in order"
    );
    assert!(seen.iter().all(|e| e.id != first));
    // A reader that leaves mid-wait frees its connection: many come and go without exhausting
    // the pool.
    drop(follow);
    for _ in 0..100 {
        let mut stream = reader.read("feed", "$", true).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(5), stream.next()).await.is_err());
    }
    // The connections came back: a new follower waits on one, and hears at once.
    let mut fresh = reader.read("feed", "$", true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let appended_at = std::time::Instant::now();
    writer.append("feed", fields(99), &AppendOptions::default()).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(2), fresh.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(batch[0].fields, fields(99));
    assert!(appended_at.elapsed() < Duration::from_millis(400), "woken by its blocking read, not by polling");
    let mut resumed = reader.read("feed", seen[9].id.clone(), true).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(2), resumed.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(batch.first().map(|e| e.fields.clone()), Some(fields(11)));
}

#[tokio::test]
async fn two_hundred_subscribers_get_every_message_while_a_stalled_one_is_told_what_it_missed() {
    const SUBSCRIBERS: usize = 200;
    const MESSAGES: u32 = 300;
    let mut config = test_config(&shared_redis().url());
    config.events.subscriber_buffer = 16;
    let server = TestServer::start(config).await;
    let ns = namespace("fanout");
    // Ten connections of twenty subscriptions each, and one connection for the stalled one.
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(server.client(&ns).await.events());
    }
    let mut subscriptions = Vec::new();
    for i in 0..SUBSCRIBERS {
        subscriptions.push(clients[i % 10].subscribe(["fanout"], Vec::<String>::new()).await.unwrap());
    }
    let stalled_client = server.client(&ns).await.events();
    let mut stalled = stalled_client.subscribe(["fanout"], Vec::<String>::new()).await.unwrap();

    let readers: Vec<_> = subscriptions
        .into_iter()
        .map(|mut subscription| {
            tokio::spawn(async move {
                for i in 0..MESSAGES {
                    let event = tokio::time::timeout(Duration::from_secs(20), subscription.next())
                        .await
                        .expect("the next message")
                        .unwrap()
                        .unwrap();
                    let mut expected = i.to_be_bytes().to_vec();
                    expected.resize(8 * 1024, 0);
                    assert_eq!(event, message("fanout", &expected), "every message, in order, no gap");
                }
            })
        })
        .collect();
    let publisher = clients[0].clone();
    for i in 0..MESSAGES {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(8 * 1024, 0);
        publisher.publish("fanout", payload).await.unwrap();
    }
    for reader in readers {
        reader.await.expect("a subscriber missed nothing");
    }
    // The stalled subscriber holds at most its queue and the HTTP/2 windows; the rest is
    // reported, exactly.
    let (mut delivered, mut missed) = (0u64, 0u64);
    while delivered + missed < u64::from(MESSAGES) {
        match next(&mut stalled).await {
            Event::Message { .. } => delivered += 1,
            Event::Gap { reason: GapReason::SlowSubscriber, missed: n } => missed += n,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delivered + missed, u64::from(MESSAGES));
    assert!(missed > 0 && delivered < u64::from(MESSAGES), "the stalled subscriber's backlog was bounded");
}

#[tokio::test]
async fn one_pubsub_connection_per_replica_and_clients_that_leave_leave_nothing_behind() {
    use rookery_client::{ConsumeOptions, GroupSettings};
    let redis = RedisProcess::start(&[]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let events = server.client(&namespace("leave")).await.events();
    events.append("jobs", fields(0), &AppendOptions::default()).await.unwrap();
    events.create_group("jobs", "g", "$", GroupSettings::default()).await.unwrap();
    let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let mut conn = redis.conn().await;
    let state = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
            let channels: Vec<String> =
                redis::cmd("PUBSUB").arg("CHANNELS").arg("rk1:ev:*").query_async(&mut conn).await.unwrap();
            (clients.lines().count(), channels)
        }
    };
    // One pub/sub connection serves the replica: Events subscribers and the Cache and Lock
    // wake-up channels alike.
    let subscriber_connections = |clients: &str| clients.lines().filter(|c| c.contains("flags=P")).count();
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
    assert_eq!(subscriber_connections(&clients), 1, "{clients}");
    let baseline_tasks = tasks();
    // Dedicated connections (each with its driver task) stay pooled for the next reader, so
    // the first round sets the level that later rounds must come back to.
    let mut settled = (usize::MAX, usize::MAX);
    for round in 0..3 {
        for i in 0..20 {
            let subscription = events.subscribe([format!("c{i}")], Vec::<String>::new()).await.unwrap();
            let follower = events.read("jobs", "$", true).await.unwrap();
            let consumer =
                events.consume("jobs", "g", format!("c{i}"), &ConsumeOptions::default()).await.unwrap();
            tokio::spawn(async move {
                let _keep = (subscription, follower, consumer);
                tokio::time::sleep(Duration::from_millis(300)).await;
            });
        }
        assert!(tasks() > baseline_tasks + 60, "the subscriptions, readers and consumers run as tasks");
        // Every stream is dropped after 300 ms: what they held on the server goes with them.
        let stream_key = redis_stream_key(&redis, "jobs").await;
        let forgotten = eventually(Duration::from_secs(6), || async {
            let consumers: redis::Value = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&stream_key)
                .arg("g")
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            consumers == redis::Value::Array(vec![])
        })
        .await;
        assert!(forgotten, "consumers with nothing pending are forgotten");
        let limit = if round == 0 { baseline_tasks + 64 } else { settled.0 };
        let clean = eventually(Duration::from_secs(6), || async { tasks() <= limit }).await;
        assert!(clean, "round {round}: {} server tasks remain, {limit} expected", tasks());
        let (connections, channels) = state(&mut conn).await;
        assert!(channels.is_empty(), "unsubscribed from {channels:?}");
        let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
        assert_eq!(subscriber_connections(&clients), 1, "{clients}");
        if round == 0 {
            settled = (tasks(), connections);
        } else {
            assert!(
                connections <= settled.1,
                "round {round}: {connections} Redis connections, {} before",
                settled.1
            );
        }
    }
}

/// The Redis key of the one stream named `name` in `redis` (tests use a fresh Redis).
async fn redis_stream_key(redis: &RedisProcess, name: &str) -> String {
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("*:st:{name}}}")).query_async(&mut redis.conn().await).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys[0].clone()
}

#[tokio::test]
async fn a_subscription_redis_refuses_fails_alone_and_at_once() {
    let redis = RedisProcess::start(&[]);
    // The server's Redis user may use the wake-up channels, and Events channels named ok-*.
    let mut conn = redis.conn().await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("resetchannels")
        .arg("&rk1:lock:wake")
        .arg("&rk1:cache:wake")
        .arg("&rk1:ev:*:ok-*")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let server = TestServer::start(test_config(&redis.url())).await;
    let events = server.client(&namespace("acl")).await.events();
    let mut allowed = events.subscribe(["ok-1"], Vec::<String>::new()).await.unwrap();
    let started = std::time::Instant::now();
    let refused = events.subscribe(["secret"], Vec::<String>::new()).await.err().expect("refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not after a timeout");
    // The shared connection stayed up: the other subscription hears the next message, no gap.
    events.publish("ok-1", b"still here".to_vec()).await.unwrap();
    assert_eq!(next(&mut allowed).await, message("ok-1", b"still here"));
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
    assert_eq!(clients.lines().filter(|c| c.contains("flags=P")).count(), 1, "{clients}");
}

#[tokio::test]
async fn a_read_of_large_entries_comes_in_messages_that_fit() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("read-large")).await.events();
    let big = |n: u8| HashMap::from([("f".to_owned(), vec![n; 900_000])]);
    for n in 0..10 {
        events.append("big", big(n), &AppendOptions::default()).await.unwrap();
    }
    // Ten entries of 900 KB are 9 MB: more than one 4 MiB answer, so several messages.
    let mut read = events.read("big", "", false).await.unwrap();
    let mut seen = Vec::new();
    let mut messages = 0;
    while let Some(batch) = read.next().await {
        let batch = batch.unwrap();
        messages += 1;
        assert!(batch.len() <= 4, "{} entries of 900 KB in one message", batch.len());
        seen.extend(batch.into_iter().map(|e| e.fields["f"][0]));
    }
    assert_eq!(seen, (0..10).collect::<Vec<u8>>());
    assert!(messages >= 3, "{messages} messages");
}
