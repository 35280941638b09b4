//! The Events service's pub/sub end to end: a subscription is live when `subscribe` returns,
//! messages fan out across replicas and namespaces stay apart, patterns, a slow subscriber is
//! told what it missed (and cut past the bound) without slowing the others, and a Redis restart
//! is reported as a gap.

use std::time::Duration;

use rookery_client::{Event, EventStream, GapReason};
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
    Event::Message { channel: channel.into(), pattern: None, payload: payload.to_vec() }
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
            payload: b"2".to_vec()
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
