//! The Cache on a Redis Cluster: keys spread over every master, batch calls across slots,
//! invalidation by prefix across all masters and by tag across slots, and the lease protocol
//! (wake-ups travel through cluster-wide pub/sub); locks, waiters and elections, and sessions on
//! a Cluster; Events pub/sub, streams and consumer groups on a Cluster.

use std::time::Duration;

use std::collections::HashMap;

use rookery_client::{CampaignEvent, LockOptions, SessionOptions, SessionUpdate, SetOptions};
use tokio_stream::StreamExt;

use crate::harness::{RedisCluster, TestServer, namespace, stampede, test_config};

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
    assert!(matches!(event, Event::Message { payload, .. } if payload == b"hello"));

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
