//! Events.AppendMany end to end: entries added in order with increasing IDs in one call, each
//! entry's idempotency key honoured (within the call and across retries), all or nothing on bad
//! input, and the stream's cap per namespace; and concurrent single appends sharing script
//! calls (group commit), each still answered its own ID or error.

use std::collections::HashMap;

use rookery_client::{AppendOptions, EventsClient, NewEntry, StreamEntry};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::{RedisProcess, TestServer, namespace, shared_redis, test_config};

fn entry(n: u32, key: Option<&str>) -> NewEntry {
    NewEntry {
        fields: HashMap::from([("n".to_owned(), n.to_string().into_bytes())]),
        idempotency_key: key.map(str::to_owned),
    }
}

/// Every entry of `stream`, in order.
async fn entries_of(events: &EventsClient, stream: &str) -> Vec<StreamEntry> {
    let mut batches = events.read(stream, "", false).await.unwrap();
    let mut all = Vec::new();
    while let Some(batch) = batches.next().await {
        all.extend(batch.unwrap());
    }
    all
}

fn numbers(entries: &[StreamEntry]) -> Vec<String> {
    entries.iter().map(|e| String::from_utf8(e.fields["n"].clone()).unwrap()).collect()
}

#[tokio::test]
async fn entries_are_added_in_order_once_per_idempotency_key() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("append-many")).await.events();
    let options = AppendOptions::default();

    // One key twice in one call: the second is the first's retry.
    let batch = vec![
        entry(1, None),
        entry(2, Some("k2")),
        entry(3, None),
        entry(4, Some("k2")),
        entry(5, Some("k5")),
    ];
    let appended = events.append_many("s", batch.clone(), &options).await.unwrap();
    assert_eq!(appended.len(), 5);
    assert_eq!(
        appended.iter().map(|(_, duplicate)| *duplicate).collect::<Vec<_>>(),
        [false, false, false, true, false]
    );
    assert_eq!(appended[3].0, appended[1].0, "a repeated key answers the first entry's ID");
    let stored = entries_of(&events, "s").await;
    assert_eq!(numbers(&stored), ["1", "2", "3", "5"], "added in the call's order");
    let ids: Vec<&String> = [0, 1, 2, 4].iter().map(|&i| &appended[i].0).collect();
    assert_eq!(stored.iter().map(|e| &e.id).collect::<Vec<_>>(), ids, "the IDs answered are the entries'");

    // The whole call retried: only what has no key is added again.
    let retried = events.append_many("s", batch, &options).await.unwrap();
    for i in [1, 3, 4] {
        assert_eq!(retried[i], (appended[i].0.clone(), true), "entry {i} is the earlier one");
    }
    assert_eq!(numbers(&entries_of(&events, "s").await), ["1", "2", "3", "5", "1", "3"]);

    // A call of keyed retries only, on a stream that is already there, adds nothing.
    let keyed = vec![entry(2, Some("k2")), entry(5, Some("k5"))];
    let again = events.append_many("s", keyed, &options).await.unwrap();
    assert_eq!(again, [(appended[1].0.clone(), true), (appended[4].0.clone(), true)]);
    assert_eq!(entries_of(&events, "s").await.len(), 6);

    // Single appends and batches share one order and one set of keys.
    let (single, duplicate) = events
        .append(
            "s",
            entry(5, None).fields,
            &AppendOptions { idempotency_key: Some("k5".into()), ..options.clone() },
        )
        .await
        .unwrap();
    assert_eq!((single, duplicate), (appended[4].0.clone(), true));
}

#[tokio::test]
async fn a_bad_entry_or_batch_adds_nothing() {
    let mut config = test_config(&shared_redis().url());
    config.limits.max_batch_keys = 10;
    let server = TestServer::start(config).await;
    let events = server.client(&namespace("append-many-bad")).await.events();
    let options = AppendOptions::default();
    events.append_many("s", [entry(0, None)], &options).await.unwrap();

    let no_fields = NewEntry::default();
    let refused = events.append_many("s", [entry(1, None), no_fields], &options).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("entry 1"), "names the bad entry: {refused:?}");
    let reserved =
        NewEntry { fields: HashMap::from([("rookery.id".to_owned(), b"x".to_vec())]), idempotency_key: None };
    let refused = events.append_many("s", [entry(1, None), reserved], &options).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let too_many = (0..11).map(|n| entry(n, None));
    let refused = events.append_many("s", too_many, &options).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("limits.max_batch_keys"), "{refused:?}");
    let refused = events.append_many("s", Vec::new(), &options).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let keyed_options = AppendOptions { idempotency_key: Some("k".into()), ..options.clone() };
    let refused = events.append_many("s", [entry(1, None)], &keyed_options).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    assert_eq!(numbers(&entries_of(&events, "s").await), ["0"], "nothing of the refused calls was added");
    // Exactly the limit is fine.
    assert_eq!(events.append_many("s", (1..=10).map(|n| entry(n, None)), &options).await.unwrap().len(), 10);
}

#[tokio::test]
async fn a_new_stream_past_the_namespace_cap_is_refused_whole() {
    let mut config = test_config(&shared_redis().url());
    config.events.max_streams_per_namespace = 1;
    let server = TestServer::start(config).await;
    let events = server.client(&namespace("append-many-cap")).await.events();
    let options = AppendOptions::default();
    events.append_many("first", [entry(1, None), entry(2, None)], &options).await.unwrap();
    let refused = events.append_many("second", [entry(1, None), entry(2, None)], &options).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(entries_of(&events, "second").await.is_empty());
    // The counted stream still takes batches.
    events.append_many("first", [entry(3, None)], &options).await.unwrap();
    assert_eq!(numbers(&entries_of(&events, "first").await), ["1", "2", "3"]);
}

/// Script calls Redis has run so far (EVALSHA and EVAL).
async fn script_calls(redis: &RedisProcess) -> u64 {
    let stats: String =
        redis::cmd("INFO").arg("commandstats").query_async(&mut redis.conn().await).await.unwrap();
    stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| line.split_once("calls=")?.1.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn concurrent_appends_to_one_stream_share_script_calls_and_each_gets_its_own_id() {
    // A Redis of its own, whose script calls are this test's alone.
    let redis = RedisProcess::start(&[]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let events = server.client(&namespace("append-coalesced")).await.events();
    let options = AppendOptions::default();
    events.append("s", entry(0, None).fields, &options).await.unwrap();
    let before = script_calls(&redis).await;

    // 200 appends at once, every fifth with an idempotency key that one other append repeats.
    let key = |n: u32| n.is_multiple_of(5).then(|| format!("k{}", n % 100));
    let calls = (1..=200u32).map(|n| {
        let events = events.clone();
        let options = AppendOptions { idempotency_key: key(n), ..AppendOptions::default() };
        async move { (n, events.append("s", entry(n, None).fields, &options).await.unwrap()) }
    });
    // (append number, (its ID, whether it was answered as a retry))
    type Answer = (u32, (String, bool));
    let answered: Vec<Answer> = futures::future::join_all(calls).await;
    let calls_made = script_calls(&redis).await - before;
    assert!(calls_made < 200, "200 concurrent appends ran {calls_made} scripts: none shared a call");

    // Every append not answered as a retry is stored once, under the ID it was answered.
    let stored: HashMap<String, String> = entries_of(&events, "s")
        .await
        .into_iter()
        .map(|e| (e.id, String::from_utf8(e.fields["n"].clone()).unwrap()))
        .collect();
    let fresh: Vec<&Answer> = answered.iter().filter(|(_, (_, duplicate))| !duplicate).collect();
    for (n, (id, _)) in &fresh {
        assert_eq!(stored.get(id), Some(&n.to_string()), "append {n} answered {id}");
    }
    assert_eq!(stored.len(), 1 + fresh.len(), "nothing else stored");
    // A key's second append is its first's retry, answered with the first's ID.
    let by_key: HashMap<String, Vec<&Answer>> =
        answered.iter().filter(|(n, _)| key(*n).is_some()).fold(HashMap::new(), |mut by_key, answer| {
            by_key.entry(key(answer.0).unwrap()).or_default().push(answer);
            by_key
        });
    assert_eq!(by_key.len(), 20);
    for (key, answers) in by_key {
        let duplicates = answers.iter().filter(|(_, (_, duplicate))| *duplicate).count();
        assert_eq!(duplicates, 1, "key {key}: {answers:?}");
        assert_eq!(answers[0].1.0, answers[1].1.0, "key {key}: one ID");
    }
    eprintln!("200 concurrent appends to one stream ran {calls_made} script calls");
}

#[tokio::test]
async fn appends_queued_behind_a_write_to_a_redis_that_died_are_each_answered() {
    let mut redis = RedisProcess::start(&[]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let events = server.client(&namespace("append-coalesced-down")).await.events();
    let options = AppendOptions::default();
    events.append("s", entry(0, None).fields, &options).await.unwrap();
    // Redis hangs: the first append waits for its answer and the rest queue behind it; then
    // Redis dies and every one of them must learn it, as an error.
    let paused = redis.pause().await;
    let calls: Vec<_> = (1..=50u32)
        .map(|n| {
            let events = events.clone();
            tokio::spawn(
                async move { events.append("s", entry(n, None).fields, &AppendOptions::default()).await },
            )
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    redis.kill();
    drop(paused);
    for call in calls {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(60), call)
            .await
            .expect("every queued append is answered")
            .unwrap();
        let status = answer.expect_err("Redis is gone");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
}
