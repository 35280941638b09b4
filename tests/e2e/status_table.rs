//! The README's status-code table and the server agree: every row whose situation a client
//! can bring about is brought about here, and the code the server answers is the one the
//! README's row names. (Two rows cannot be produced from outside: UNAUTHENTICATED /
//! PERMISSION_DENIED need identities, and INTERNAL is a bug — the fuzz test checks that no
//! input reaches it.)

use std::collections::HashMap;
use std::time::Duration;

use rookery_client::{GroupSettings, LockOptions, SessionOptions, SessionUpdate};
use tonic::Status;

use crate::fuzz::raw_call;
use crate::harness::{RedisProcess, TestServer, namespace, test_config};

const MINUTE: Duration = Duration::from_secs(60);

/// The README's status table: (situation, code column), one per row.
fn readme_rows() -> Vec<(String, String)> {
    let readme = include_str!("../../README.md");
    let table = readme.split("## Status codes").nth(1).expect("a Status codes section");
    table
        .lines()
        .skip_while(|line| !line.starts_with("| situation"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].to_owned(), cells[1].to_owned())
        })
        .collect()
}

/// Asserts the README row whose situation contains `situation` names `status`'s code.
fn agrees(rows: &[(String, String)], situation: &str, status: &Status) {
    let (_, code) = rows
        .iter()
        .find(|(text, _)| text.contains(situation))
        .unwrap_or_else(|| panic!("no README row mentions {situation:?}"));
    let name = format!("{:?}", status.code());
    // The README writes codes as gRPC does (INVALID_ARGUMENT); tonic's names are CamelCase.
    let spelled: String = name
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
            sep.into_iter().chain(std::iter::once(c.to_ascii_uppercase()))
        })
        .collect();
    assert!(
        code.contains(&spelled),
        "{situation:?}: the server answered {spelled} ({status:?}), the README says {code}"
    );
}

#[tokio::test]
async fn every_row_a_client_can_cause_answers_the_readmes_code() {
    let rows = readme_rows();
    assert!(rows.len() >= 10, "the README's table has {} rows", rows.len());
    let mut redis = RedisProcess::start(&["--enable-debug-command", "yes"]);
    let mut config = test_config(&redis.url());
    config.redis.command_timeout = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let client = server.client(&namespace("table")).await;
    let (cache, events, sessions, locks) = (client.cache(), client.events(), client.session(), client.lock());

    let status = cache.get("").await.unwrap_err();
    agrees(&rows, "malformed or out-of-bounds input", &status);
    let status = raw_call(&client.channel(), "/rookery.v1.Cache/Get", vec![0x0f, 0x01]).await.unwrap_err();
    agrees(&rows, "an undecodable message", &status);
    let status =
        raw_call(&client.channel(), "/rookery.v1.Cache/Get", vec![0x0a, 0x01, 0xff]).await.unwrap_err();
    agrees(&rows, "invalid UTF-8", &status);

    let status = events.describe("missing").await.unwrap_err();
    agrees(&rows, "does not exist where it must", &status);
    events.create_group("s", "g", "", GroupSettings::default()).await.unwrap();
    let status = events.create_group("s", "g", "", GroupSettings::default()).await.unwrap_err();
    agrees(&rows, "create of something that exists", &status);

    let created = sessions.create("alice", HashMap::new(), &SessionOptions::default()).await.unwrap();
    let update = SessionUpdate::new().set("a", b"1".to_vec()).if_version(99);
    let status = sessions.update(created.id, update).await.unwrap_err();
    agrees(&rows, "a retry may resolve", &status);
    let status = cache.fill(
        "k",
        "no-such-lease".into(),
        b"v".to_vec(),
        rookery_client::SetOptions { ttl: Some(MINUTE), ..Default::default() },
    );
    let status = status.await.unwrap_err();
    agrees(&rows, "retrying cannot help", &status);

    let held = locks.acquire("l", &LockOptions::new(MINUTE)).await.unwrap().unwrap();
    let mut request = tonic::Request::new(rookery_client::pb::LockAcquireRequest {
        name: "l".into(),
        ttl: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
        wait: Some(prost_types::Duration { seconds: 20, nanos: 0 }),
        limit: 0,
        owner: String::new(),
    });
    request.set_timeout(Duration::from_millis(200));
    let status = locks.raw().acquire(request).await.unwrap_err();
    agrees(&rows, "deadline passed", &status);
    locks.release("l", held.token).await.unwrap();

    let status =
        raw_call(&client.channel(), "/rookery.v1.Cache/Set", vec![0; 5 * 1024 * 1024]).await.unwrap_err();
    agrees(&rows, "a request over `limits.max_message_bytes`", &status);

    // Redis full (noeviction): the write is refused.
    let mut conn = redis.conn().await;
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query_async::<()>(&mut conn).await.unwrap();
    let status = cache.set("k", b"v".to_vec(), MINUTE).await.unwrap_err();
    agrees(&rows, "Redis out of memory", &status);
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query_async::<()>(&mut conn).await.unwrap();

    // Redis hangs after the write was sent: its outcome is unknown, and the message says so.
    let mut probe = redis.conn().await;
    let sleeper = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg(2).query_async(&mut conn).await;
    });
    // Asleep once a PING on another connection goes unanswered.
    while tokio::time::timeout(
        Duration::from_millis(50),
        redis::cmd("PING").query_async::<String>(&mut probe),
    )
    .await
    .is_ok()
    {}
    let status = cache.set("k", b"v".to_vec(), MINUTE).await.unwrap_err();
    agrees(&rows, "whose answer never came", &status);
    assert!(status.message().contains("may or may not have been applied"), "{}", status.message());
    sleeper.await.unwrap();

    redis.kill();
    let status = cache.get("k").await.unwrap_err();
    agrees(&rows, "Redis unreachable", &status);
}
