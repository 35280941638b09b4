//! Events.AppendStream and Events.PublishStream end to end through the client's `Appender` and
//! `Publisher`: many requests in flight on one call, each answered its own outcome or error
//! without ending the call; the namespace's fair share counting each as a call; and requests
//! in flight when the server goes away.

use std::collections::HashMap;
use std::time::Duration;

use rookery_client::{AppendOptions, Appender, Event};
use rookery_server::fair_share::ShareOverride;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::{TestServer, namespace, shared_redis, test_config};

fn fields(n: usize) -> HashMap<String, Vec<u8>> {
    HashMap::from([("n".to_owned(), n.to_string().into_bytes())])
}

async fn append_all(
    appender: &Appender,
    stream: &str,
    count: usize,
) -> Vec<Result<(String, bool), tonic::Status>> {
    let options = AppendOptions::default();
    futures::future::join_all((0..count).map(|n| appender.append(stream, fields(n), &options))).await
}

#[tokio::test]
async fn many_appends_in_flight_on_one_call_each_get_their_own_answer() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("append-stream")).await.events();
    let appender = events.appender().await.unwrap();
    let answers = append_all(&appender, "s", 2000).await;
    let ids: Vec<String> = answers.into_iter().map(|a| a.unwrap().0).collect();
    // Every entry is stored once, under the ID its append was answered.
    let mut stored_ids = HashMap::new();
    for (n, id) in stored(&events, "s").await {
        assert!(stored_ids.insert(n, id).is_none(), "entry {n} stored twice");
    }
    let stored = stored_ids;
    assert_eq!(stored.len(), 2000);
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(&stored[&n], id, "append {n} was answered another entry's ID");
    }

    // A bad append is answered its own error; the call goes on.
    let options = AppendOptions::default();
    let refused = appender.append("s", HashMap::new(), &options).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let keyed = AppendOptions { idempotency_key: Some("once".into()), ..AppendOptions::default() };
    let first = appender.append("s", fields(1), &keyed).await.unwrap();
    let retry = appender.append("s", fields(1), &keyed).await.unwrap();
    assert_eq!((retry.0.as_str(), retry.1), (first.0.as_str(), true), "the idempotency key holds");
}

/// The entries of `stream`, as (n, ID) in stream order.
async fn stored(events: &rookery_client::EventsClient, stream: &str) -> Vec<(usize, String)> {
    let mut stored = Vec::new();
    let mut batches = events.read(stream, "", false).await.unwrap();
    while let Some(batch) = batches.next().await {
        for entry in batch.unwrap() {
            stored.push((String::from_utf8(entry.fields["n"].clone()).unwrap().parse().unwrap(), entry.id));
        }
    }
    stored
}

#[tokio::test]
async fn appends_sent_together_to_many_streams_each_land_once_in_their_own() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("append-stream-mixed")).await.events();
    let appender = events.appender().await.unwrap();
    // Sent at once, so that the server takes them in bursts: three streams, two trimmings on one
    // of them (two groups of one stream), and every seventh append invalid.
    let trimmed = AppendOptions { max_len: 5000, ..AppendOptions::default() };
    let plain = AppendOptions::default();
    let appends = (0..3000).map(|n| {
        let (stream, options) = match n % 4 {
            0 => ("a", &plain),
            1 => ("a", &trimmed),
            2 => ("b", &plain),
            _ => ("c", &plain),
        };
        let fields = if n % 7 == 0 { HashMap::new() } else { fields(n) };
        let appender = appender.clone();
        async move { (n, stream, appender.append(stream, fields, options).await) }
    });
    let answers = futures::future::join_all(appends).await;
    let mut expected: HashMap<&str, HashMap<usize, String>> = HashMap::new();
    for (n, stream, answer) in answers {
        match answer {
            Ok((id, duplicate)) => {
                assert!(n % 7 != 0, "append {n} had no fields yet was added");
                assert!(!duplicate);
                expected.entry(stream).or_default().insert(n, id);
            }
            Err(status) => {
                assert_eq!(n % 7, 0, "append {n} failed: {status:?}");
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            }
        }
    }
    for stream in ["a", "b", "c"] {
        let stored = stored(&events, stream).await;
        let answered = &expected[stream];
        assert_eq!(stored.len(), answered.len(), "stream {stream}: every answered append stored, once");
        for (n, id) in stored {
            assert_eq!(
                answered.get(&n),
                Some(&id),
                "stream {stream}: entry {n} stored under its answered ID"
            );
        }
    }
}

#[tokio::test]
async fn large_appends_sent_together_are_written_in_bounded_groups_each_answered_its_own_id() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("append-stream-large")).await.events();
    let appender = events.appender().await.unwrap();
    // 48 entries of 48 KiB at once: more than one script call's bound of bytes (256 KiB), so a
    // burst of them is split into groups, each answered by position.
    let large = |n: usize| {
        let mut fields = fields(n);
        fields.insert("pad".to_owned(), vec![b'x'; 48 * 1024]);
        fields
    };
    let options = AppendOptions::default();
    let answers =
        futures::future::join_all((0..48).map(|n| appender.append("big", large(n), &options))).await;
    let ids: Vec<String> = answers.into_iter().map(|answer| answer.unwrap().0).collect();
    let stored = stored(&events, "big").await;
    assert_eq!(stored.len(), 48, "every entry stored once");
    for (n, id) in stored {
        assert_eq!(ids[n], id, "entry {n} stored under its answered ID");
    }
}

#[tokio::test]
async fn each_streamed_append_counts_against_the_namespace_rate() {
    let noisy = namespace("append-stream-rate");
    let mut config = test_config(&shared_redis().url());
    let share = ShareOverride { requests_per_second: Some(1), burst: Some(2), ..Default::default() };
    config.fair_share.namespaces.insert(noisy.clone(), share);
    let server = TestServer::start(config).await;
    let appender = server.client(&noisy).await.events().appender().await.unwrap();
    let started = tokio::time::Instant::now();
    let answers = append_all(&appender, "s", 30).await;
    let elapsed = started.elapsed();
    let admitted = answers.iter().filter(|a| a.is_ok()).count();
    // GCRA: opening the call took one request; at most 1 + burst at once, then one per second.
    assert!(admitted as f64 <= 3.0 + elapsed.as_secs_f64().ceil(), "{admitted} admitted in {elapsed:?}");
    for status in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("fair_share.requests_per_second"), "{}", status.message());
    }
    assert!(answers.iter().any(|a| a.is_err()), "30 appends at once cannot all fit a rate of 1/s");
}

#[tokio::test]
async fn appends_in_flight_when_the_server_goes_away_fail_as_unknown_outcomes() {
    let mut server = TestServer::start(test_config(&shared_redis().url())).await;
    let appender = server.client(&namespace("append-stream-gone")).await.events().appender().await.unwrap();
    appender.append("s", fields(0), &AppendOptions::default()).await.unwrap();
    let in_flight = {
        let appender = appender.clone();
        tokio::spawn(async move { append_all(&appender, "s", 500).await })
    };
    server.begin_stop();
    let answers = tokio::time::timeout(Duration::from_secs(30), in_flight)
        .await
        .expect("every append answered")
        .unwrap();
    for status in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // Once the call has ended, an append fails at once.
    let later = tokio::time::timeout(
        Duration::from_secs(30),
        appender.append("s", fields(1), &AppendOptions::default()),
    )
    .await
    .expect("answered at once");
    assert_eq!(later.unwrap_err().code(), Code::Unavailable);
}

#[tokio::test]
async fn many_publishes_in_flight_on_one_call_each_reach_the_subscriber_once() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("publish-stream")).await.events();
    let mut subscription = events.subscribe(["c"], Vec::<String>::new()).await.unwrap();
    let publisher = events.publisher().await.unwrap();
    let answers = futures::future::join_all(
        (0..500).map(|n: usize| publisher.publish("c", n.to_string().into_bytes())),
    )
    .await;
    for answer in &answers {
        assert_eq!(answer.as_ref().unwrap(), &1, "one replica (this one) subscribes");
    }
    let mut received = std::collections::HashSet::new();
    while received.len() < 500 {
        match subscription.next().await.unwrap().unwrap() {
            Event::Message { payload, .. } => {
                let n: usize = std::str::from_utf8(&payload).unwrap().parse().unwrap();
                assert!(received.insert(n), "message {n} delivered twice");
            }
            Event::Gap { missed, .. } => panic!("{missed} messages missed"),
        }
    }
    // A bad publish is answered its own error; the call goes on.
    let refused = publisher.publish("bad channel name with spaces", b"x".to_vec()).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(publisher.publish("c", b"after".to_vec()).await.unwrap(), 1);
}

#[tokio::test]
async fn publishes_sent_together_with_bad_ones_among_them_each_get_their_own_answer() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("publish-burst")).await.events();
    let mut subscriptions = Vec::new();
    for channel in ["a", "b"] {
        subscriptions.push(events.subscribe([channel], Vec::<String>::new()).await.unwrap());
    }
    let publisher = events.publisher().await.unwrap();
    // Every seventh goes to a channel name that is refused, so refused and published publishes
    // share bursts; the rest alternate between two channels.
    let channel_of = |n: usize| match (n % 7, n % 2) {
        (0, _) => "no spaces allowed",
        (_, 0) => "a",
        _ => "b",
    };
    let answers = futures::future::join_all(
        (0..2_000).map(|n: usize| publisher.publish(channel_of(n), n.to_string().into_bytes())),
    )
    .await;
    let mut expected: [std::collections::HashSet<usize>; 2] = Default::default();
    for (n, answer) in answers.into_iter().enumerate() {
        match channel_of(n) {
            "no spaces allowed" => {
                assert_eq!(answer.unwrap_err().code(), Code::InvalidArgument, "publish {n}")
            }
            channel => {
                assert_eq!(answer.unwrap(), 1, "publish {n}: one replica (this one) subscribes");
                expected[usize::from(channel == "b")].insert(n);
            }
        }
    }
    for (subscription, expected) in subscriptions.iter_mut().zip(expected) {
        let mut received = std::collections::HashSet::new();
        while received.len() < expected.len() {
            match subscription.next().await.unwrap().unwrap() {
                Event::Message { payload, .. } => {
                    let n: usize = std::str::from_utf8(&payload).unwrap().parse().unwrap();
                    assert!(received.insert(n), "message {n} delivered twice");
                }
                Event::Gap { missed, .. } => panic!("{missed} messages missed"),
            }
        }
        assert_eq!(received, expected, "each published message reaches its own channel's subscriber");
    }
}
