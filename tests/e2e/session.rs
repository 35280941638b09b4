//! The Session service end to end: server-made IDs stored only as hashes, idle and absolute
//! expiry, versioned updates under contention, rotation with and without grace, listing and
//! revoking by subject, the per-subject cap, and what is left in Redis.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use rookery_client::{SessionClient, SessionOptions, SessionUpdate, json_attributes, session_hint};
use rookery_server::config::SessionLimitPolicy;
use tokio::time::Instant;
use tonic::Code;

use crate::harness::{RedisProcess, TestServer, eventually, namespace, shared_redis, test_config};

async fn setup(test: &str) -> (TestServer, SessionClient, String) {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace(test);
    let sessions = server.client(&ns).await.session();
    (server, sessions, ns)
}

fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
}

fn timeouts(idle: Duration, absolute: Duration) -> SessionOptions {
    SessionOptions { idle_timeout: Some(idle), absolute_timeout: Some(absolute), max_sessions: None }
}

#[tokio::test]
async fn create_read_update_delete() {
    let (_server, sessions, ns) = setup("crud").await;
    let created =
        sessions.create("user-1", attrs(&[("role", "admin")]), &SessionOptions::default()).await.unwrap();
    assert!(created.id.starts_with("s1."));
    let session = sessions.get(&created.id, false).await.unwrap().expect("found");
    assert_eq!(session.subject, "user-1");
    assert_eq!(session.attributes, attrs(&[("role", "admin")]));
    assert_eq!(session.version, 1);
    // Defaults: 30 min idle, 12 h absolute.
    let idle_left = session.idle_expires_at.duration_since(session.created_at).unwrap();
    assert!(
        idle_left > Duration::from_secs(29 * 60) && idle_left <= Duration::from_secs(30 * 60),
        "{idle_left:?}"
    );
    let absolute = session.absolute_expires_at.duration_since(session.created_at).unwrap();
    assert_eq!(absolute, Duration::from_secs(12 * 3600));

    let update = SessionUpdate::new()
        .set("theme", b"dark".to_vec())
        .remove("role")
        .set_json("cart", &vec![1, 2])
        .unwrap();
    assert_eq!(sessions.update(&created.id, update).await.unwrap(), 2);
    let session = sessions.get(&created.id, true).await.unwrap().unwrap();
    assert_eq!(session.version, 2);
    assert_eq!(session.attributes.get("theme").map(Vec::as_slice), Some(&b"dark"[..]));
    assert!(!session.attributes.contains_key("role"));
    assert_eq!(session.json::<Vec<u32>>("cart").unwrap(), Some(vec![1, 2]));

    assert!(sessions.delete(&created.id).await.unwrap());
    assert!(!sessions.delete(&created.id).await.unwrap());
    assert_eq!(sessions.get(&created.id, false).await.unwrap(), None);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_and_unknown_ids_all_look_the_same() {
    let (_server, sessions, _ns) = setup("errors").await;
    let code = |r: Result<rookery_client::CreatedSession, tonic::Status>| r.unwrap_err().code();
    let none = HashMap::new();
    assert_eq!(
        code(sessions.create("", none.clone(), &SessionOptions::default()).await),
        Code::InvalidArgument
    );
    let inverted = timeouts(Duration::from_secs(60), Duration::from_secs(10));
    assert_eq!(code(sessions.create("u", none.clone(), &inverted).await), Code::InvalidArgument);
    let too_long = timeouts(Duration::from_secs(60), Duration::from_secs(90 * 24 * 3600));
    assert_eq!(code(sessions.create("u", none.clone(), &too_long).await), Code::InvalidArgument);
    let many: HashMap<String, Vec<u8>> = (0..65).map(|i| (format!("a{i}"), vec![])).collect();
    assert_eq!(code(sessions.create("u", many, &SessionOptions::default()).await), Code::InvalidArgument);
    assert_eq!(
        code(sessions.create("u", attrs(&[("", "x")]), &SessionOptions::default()).await),
        Code::InvalidArgument
    );

    // Unknown, malformed, deleted: one answer.
    let created = sessions.create("u", none, &SessionOptions::default()).await.unwrap();
    sessions.delete(&created.id).await.unwrap();
    let forged = format!("{}x", &created.id[..created.id.len() - 1]);
    let mut messages = HashSet::new();
    for id in [created.id.as_str(), forged.as_str(), "s1.00000000.AAAA", "garbage", ""] {
        let status =
            sessions.raw().get(rookery_client::pb::SessionGetRequest { id: id.into(), touch: true }).await;
        let status = status.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id:?}");
        messages.insert(status.message().to_owned());
    }
    assert_eq!(messages.len(), 1, "{messages:?}");
}

#[tokio::test]
async fn a_hundred_thousand_ids_are_unique_and_redis_never_sees_one() {
    // A Redis of its own: 200k keys would slow every other test's scans of the shared one.
    let redis = RedisProcess::start(&[]);
    // A load test, not a fault test: on a loaded machine 50 writers may wait past the usual 1 s
    // command timeout for a Redis that is only slow.
    let mut config = test_config(&redis.url());
    config.redis.command_timeout = Duration::from_secs(10);
    let server = TestServer::start(config).await;
    let ns = namespace("ids");
    let sessions = server.client(&ns).await.session();
    // Every session must still be live when Redis is inspected: on a loaded machine creating
    // 100,000 can take minutes, so no idle timeout may end one before then.
    let options =
        SessionOptions { idle_timeout: Some(Duration::from_secs(3600)), ..SessionOptions::default() };
    let mut tasks = Vec::new();
    for worker in 0..50 {
        let (sessions, options) = (sessions.clone(), options.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(2000);
            for i in 0..2000 {
                let subject = format!("user-{}", (worker * 2000 + i) % 10_000);
                ids.push(sessions.create(subject, HashMap::new(), &options).await.unwrap().id);
            }
            ids
        }));
    }
    let mut ids = Vec::with_capacity(100_000);
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 100_000, "an ID was issued twice");
    // 256 random bits per ID by construction: 32 bytes of base64url after the routing tag.
    for id in &ids {
        let secret = id.rsplit('.').next().unwrap();
        assert_eq!(secret.len(), 43, "{id}");
    }
    // Redis holds hashes only: no key and no stored field contains a raw ID or its secret.
    let keys = redis.keys_of(&ns).await;
    assert!(keys.len() >= 100_000, "{} keys: a session ended before it was inspected", keys.len());
    let all_keys = keys.join("\n");
    let mut conn = redis.conn().await;
    for id in ids.iter().step_by(997) {
        let secret = id.rsplit('.').next().unwrap();
        assert!(!all_keys.contains(secret), "a key holds a raw session secret");
        assert!(!all_keys.contains(id.as_str()));
    }
    for key in keys.iter().filter(|k| k.contains("}:s:")).step_by(499) {
        let fields: HashMap<String, Vec<u8>> = conn.hgetall(key).await.unwrap();
        for value in fields.values() {
            let text = String::from_utf8_lossy(value);
            assert!(!text.contains("s1."), "a stored field holds an ID: {key}");
        }
    }
    redis.assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn idle_and_absolute_expiry_hold_to_a_quarter_second() {
    let (_server, sessions, ns) = setup("expiry").await;
    let tolerance = Duration::from_millis(250);
    // Idle: unused, it ends after its idle timeout.
    let idle = Duration::from_millis(600);
    let started = Instant::now();
    let created =
        sessions.create("idle", HashMap::new(), &timeouts(idle, Duration::from_secs(60))).await.unwrap();
    assert!(sessions.get(&created.id, false).await.unwrap().is_some());
    while sessions.get(&created.id, false).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lived = started.elapsed();
    assert!(lived + tolerance >= idle && lived <= idle + tolerance, "idle session lived {lived:?}");

    // Absolute: touched all the time, it still ends at its absolute timeout, and no touch
    // ever moves the idle expiry past it.
    let absolute = Duration::from_millis(1500);
    let started = Instant::now();
    let created = sessions
        .create("busy", HashMap::new(), &timeouts(Duration::from_millis(500), absolute))
        .await
        .unwrap();
    loop {
        match sessions.get(&created.id, true).await.unwrap() {
            Some(session) => assert!(session.idle_expires_at <= session.absolute_expires_at),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lived = started.elapsed();
    assert!(
        lived + tolerance >= absolute && lived <= absolute + tolerance,
        "touched session lived {lived:?}"
    );
    // The index follows: when a subject's sessions are all gone, so is its index.
    let empty =
        eventually(Duration::from_secs(2), || async { shared_redis().keys_of(&ns).await.is_empty() }).await;
    assert!(empty, "left behind: {:?}", shared_redis().keys_of(&ns).await);
}

#[tokio::test]
async fn of_racing_writers_with_one_version_exactly_one_wins() {
    let (_server, sessions, _ns) = setup("race").await;
    let created = sessions.create("u", attrs(&[("n", "0")]), &SessionOptions::default()).await.unwrap();
    let version = sessions.get(&created.id, false).await.unwrap().unwrap().version;
    let id = Arc::new(created.id);
    let mut tasks = Vec::new();
    for writer in 0..20 {
        let (sessions, id) = (sessions.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let update = SessionUpdate::new().set("n", writer.to_string().into_bytes()).if_version(version);
            sessions.update(id.as_str(), update).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(v) => {
                won += 1;
                assert_eq!(v, version + 1);
            }
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(sessions.get(id.as_str(), false).await.unwrap().unwrap().version, version + 1);
}

#[tokio::test]
async fn rotation_retires_the_old_id_at_once_or_after_its_grace() {
    let (_server, sessions, ns) = setup("rotate").await;
    let created = sessions.create("u", attrs(&[("k", "v")]), &SessionOptions::default()).await.unwrap();
    let rotated = sessions.rotate(&created.id, None).await.unwrap();
    assert_ne!(rotated, created.id);
    assert_eq!(sessions.get(&created.id, false).await.unwrap(), None, "the old ID must stop at once");
    let session = sessions.get(&rotated, false).await.unwrap().unwrap();
    assert_eq!((session.subject.as_str(), session.attributes.clone()), ("u", attrs(&[("k", "v")])));

    // With a grace period the old ID still reads and writes the same session, then stops.
    let grace = Duration::from_millis(600);
    let started = Instant::now();
    let newer = sessions.rotate(&rotated, Some(grace)).await.unwrap();
    assert!(sessions.get(&rotated, true).await.unwrap().is_some());
    sessions.update(&rotated, SessionUpdate::new().set("late", b"write".to_vec())).await.unwrap();
    let through_new = sessions.get(&newer, false).await.unwrap().unwrap();
    assert_eq!(through_new.attributes.get("late").map(Vec::as_slice), Some(&b"write"[..]));
    while sessions.get(&rotated, false).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() <= grace + Duration::from_millis(250), "grace lasted {:?}", started.elapsed());
    assert!(sessions.get(&newer, false).await.unwrap().is_some());
    assert_eq!(sessions.rotate(&rotated, None).await.unwrap_err().code(), Code::NotFound);
    // The subject's index follows the rotation.
    let listed = sessions.list_by_subject("u").await.unwrap();
    assert_eq!(listed.iter().map(|s| s.hint.clone()).collect::<Vec<_>>(), vec![session_hint(&newer)]);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn list_and_revoke_everything_of_a_subject() {
    let (_server, sessions, ns) = setup("subject").await;
    let mut ids = Vec::new();
    for device in ["phone", "laptop", "tablet"] {
        let attributes = json_attributes([("device".to_owned(), device)]).unwrap();
        ids.push(sessions.create("alice", attributes, &SessionOptions::default()).await.unwrap().id);
    }
    let bob = sessions.create("bob", HashMap::new(), &SessionOptions::default()).await.unwrap().id;
    // Most recently active first: touch the phone.
    sessions.get(&ids[0], true).await.unwrap();
    let listed = sessions.list_by_subject("alice").await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].hint, session_hint(&ids[0]));
    let hints: HashSet<String> = listed.iter().map(|s| s.hint.clone()).collect();
    assert_eq!(hints, ids.iter().map(|id| session_hint(id)).collect());
    assert_eq!(sessions.delete_by_subject("alice").await.unwrap(), 3);
    for id in &ids {
        assert_eq!(sessions.get(id, true).await.unwrap(), None);
    }
    assert!(sessions.list_by_subject("alice").await.unwrap().is_empty());
    assert!(sessions.get(&bob, false).await.unwrap().is_some(), "another subject is untouched");
    assert_eq!(sessions.delete_by_subject("alice").await.unwrap(), 0);
    shared_redis().assert_no_key_without_ttl(&ns).await;
}

#[tokio::test]
async fn the_per_subject_cap_evicts_the_least_recently_used_or_refuses() {
    let (_server, sessions, _ns) = setup("cap").await;
    let capped = SessionOptions { max_sessions: Some(2), ..SessionOptions::default() };
    let first = sessions.create("u", HashMap::new(), &capped).await.unwrap();
    let second = sessions.create("u", HashMap::new(), &capped).await.unwrap();
    // Expiries have millisecond resolution: let the touch land in a later millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    sessions.get(&first.id, true).await.unwrap();
    let third = sessions.create("u", HashMap::new(), &capped).await.unwrap();
    assert_eq!(third.evicted, 1);
    assert_eq!(sessions.get(&second.id, false).await.unwrap(), None, "the least recently used goes");
    assert!(sessions.get(&first.id, false).await.unwrap().is_some());
    assert_eq!(sessions.list_by_subject("u").await.unwrap().len(), 2);
    // A lower cap for one call evicts as many as needed.
    let alone = sessions
        .create("u", HashMap::new(), &SessionOptions { max_sessions: Some(1), ..capped.clone() })
        .await
        .unwrap();
    assert_eq!(alone.evicted, 2);

    let mut config = test_config(&shared_redis().url());
    config.session.max_per_subject = 1;
    config.session.on_limit = SessionLimitPolicy::Refuse;
    let strict = TestServer::start(config).await;
    let strict_sessions = strict.client(&namespace("cap-refuse")).await.session();
    strict_sessions.create("u", HashMap::new(), &SessionOptions::default()).await.unwrap();
    let refused = strict_sessions.create("u", HashMap::new(), &SessionOptions::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn an_eight_attribute_session_takes_at_most_600_bytes_in_redis() {
    let (_server, sessions, ns) = setup("memory").await;
    // Eight attributes as an application would store them: short names, 16-byte values.
    let attributes: HashMap<String, Vec<u8>> =
        (0..8).map(|i| (format!("attr{i}"), format!("value-{i:0>10}").into_bytes())).collect();
    sessions.create("user-12345", attributes, &SessionOptions::default()).await.unwrap();
    let keys = shared_redis().keys_of(&ns).await;
    let session_key = keys.iter().find(|k| k.contains("}:s:")).expect("the session's hash");
    let mut conn = shared_redis().conn().await;
    let bytes: i64 = redis::cmd("MEMORY").arg("USAGE").arg(session_key).query_async(&mut conn).await.unwrap();
    let encoding: String =
        redis::cmd("OBJECT").arg("ENCODING").arg(session_key).query_async(&mut conn).await.unwrap();
    assert_eq!(encoding, "listpack", "the session should stay in the compact encoding");
    assert!(bytes <= 600, "an 8-attribute session takes {bytes} bytes");
    println!("MEMORY USAGE of an 8-attribute session: {bytes} bytes ({encoding})");
}

#[tokio::test]
async fn a_sessions_attributes_never_outgrow_one_answer() {
    let mut config = test_config(&shared_redis().url());
    config.limits.max_value_bytes = 150_000;
    config.limits.max_response_bytes = Some(200_000);
    let server = TestServer::start(config).await;
    let sessions = server.client(&namespace("session-bytes")).await.session();
    // Names (with one byte of framing) and values: exactly the budget.
    let at_limit = HashMap::from([("a".to_owned(), vec![1; 99_998]), ("b".to_owned(), vec![2; 99_998])]);
    let created = sessions.create("alice", at_limit, &SessionOptions::default()).await.unwrap();
    let over = HashMap::from([("a".to_owned(), vec![1; 99_999]), ("b".to_owned(), vec![2; 99_998])]);
    let refused = sessions.create("alice", over, &SessionOptions::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("limits.max_response_bytes"), "{}", refused.message());

    // Growing by an update is refused in Redis, where the stored sizes are known.
    let refused = sessions.update(&created.id, SessionUpdate::new().set("c", vec![3; 1])).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("200003 bytes"), "{}", refused.message());
    // Replacing and removing within the budget works, and the answer carries it all.
    let update = SessionUpdate::new().set("a", vec![4; 50_000]).set("c", vec![5; 49_000]);
    sessions.update(&created.id, update).await.unwrap();
    sessions.update(&created.id, SessionUpdate::new().remove("b").set("d", vec![6; 99_000])).await.unwrap();
    let session = sessions.get(&created.id, false).await.unwrap().unwrap();
    assert_eq!(session.attributes.len(), 3);
    assert_eq!(session.attributes["d"].len(), 99_000);
    // No update names more attributes to remove than a session may have (64 by default).
    let many = (0..65).fold(SessionUpdate::new(), |update, i| update.remove(format!("r{i}")));
    let refused = sessions.update(&created.id, many).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("session.max_attributes"), "{}", refused.message());
}
