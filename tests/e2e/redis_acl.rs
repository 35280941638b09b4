//! Least privilege towards Redis: the server runs every service as a Redis user with exactly
//! the ACL of `scripts/redis-acl.txt` (the line README.md quotes), on a standalone Redis and on
//! a Cluster, and Redis refuses it nothing (its `ACL LOG` stays empty); the ACL is no broader
//! than it says; and the commands the server's sources send are the ones it grants.
//!
//! One room on purpose: the ACL, the commands the sources send and the run that exercises every
//! service under it are checked against each other, and split apart they would drift.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use rookery_client::{
    Algorithm, AppendOptions, CampaignEvent, Client, ConsumeOptions, Consumer, Delivery, Event, EventStream,
    FetchOptions, Fetched, GroupSettings, LeaderStream, LockOptions, RateLimit, RateLimitCheck,
    SessionOptions, SessionUpdate, SetOptions, session_hint,
};
use rookery_server::ServeError;
use rookery_server::redis::StartupError;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::{RedisCluster, RedisProcess, TestServer, namespace, test_config};

/// The documented ACL: comments and one `user` line, in Redis's aclfile syntax.
const ACL_FILE: &str = include_str!("../../scripts/redis-acl.txt");
/// Where the ACL is documented, rule by rule.
const README: &str = include_str!("../../README.md");
/// The password the tests give the user in place of the file's `PASSWORD`.
const PASSWORD: &str = "least-privilege-test-password";
/// What the server sends that the ACL refuses on purpose: the start-up read of the lazy-freeing
/// settings (CONFIG GET would also read passwords; README.md says why the server starts anyway).
const NOT_GRANTED: &[&str] = &["config|get"];
/// What the server sends to Redis Sentinel processes, not to a Redis that holds data: their
/// own users' rules are in README.md ("Sentinels with ACLs").
const SENT_TO_SENTINELS: &[&str] = &["sentinel"];
/// What redis-rs sends on the server's behalf, so no source line of the server names it: the
/// NOSCRIPT fallback, a Cluster's slot map and redirections, and pub/sub.
const SENT_BY_REDIS_RS: &[&str] =
    &["script|load", "cluster|slots", "asking", "subscribe", "unsubscribe", "psubscribe", "punsubscribe"];
/// Commands whose ACL rules name a subcommand (`+xgroup|create`).
const CONTAINERS: &[&str] = &[
    "acl", "client", "cluster", "command", "config", "function", "latency", "memory", "module", "object",
    "pubsub", "script", "slowlog", "xgroup", "xinfo",
];

/// The `user` line of `scripts/redis-acl.txt`.
fn acl_line() -> &'static str {
    let mut lines = ACL_FILE.lines().filter(|line| line.starts_with("user "));
    let line = lines.next().expect("scripts/redis-acl.txt has a `user` line");
    assert!(lines.next().is_none(), "scripts/redis-acl.txt has one `user` line");
    line
}

/// The user's name and its rules, as written.
fn documented() -> (&'static str, Vec<&'static str>) {
    let mut words = acl_line().split_whitespace().skip(1);
    let user = words.next().expect("a user name");
    (user, words.collect())
}

/// The commands (`get`, `xgroup|create`) the documented rules grant.
fn granted() -> BTreeSet<String> {
    documented().1.iter().filter_map(|rule| rule.strip_prefix('+')).map(str::to_owned).collect()
}

/// What a Redis of `version` needs besides the documented line (README.md says why).
fn for_version(version: (u32, u32)) -> &'static [&'static str] {
    if version >= (7, 2) { &["+client|setinfo"] } else { &[] }
}

/// Creates the documented user (with [`PASSWORD`]) on the Redis behind `conn`; returns its name.
async fn create_user(conn: &mut MultiplexedConnection) -> &'static str {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await.unwrap();
    let version = info.lines().find_map(|line| line.strip_prefix("redis_version:")).unwrap();
    let mut numbers = version.trim().split('.').map(|n| n.parse::<u32>().unwrap());
    let version = (numbers.next().unwrap(), numbers.next().unwrap());
    let (user, rules) = documented();
    assert!(rules.contains(&">PASSWORD"), "the file's password is a placeholder");
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER").arg(user);
    for rule in rules {
        setuser.arg(if rule == ">PASSWORD" { format!(">{PASSWORD}") } else { rule.to_owned() });
    }
    setuser.arg(for_version(version));
    setuser.query_async::<()>(conn).await.unwrap();
    user
}

/// `url` with the documented user's credentials.
fn as_user(url: &str, user: &str) -> String {
    url.replacen("redis://", &format!("redis://{user}:{PASSWORD}@"), 1)
}

/// Redis's `ACL LOG`, one line per entry: reason, object, context, user, count.
async fn acl_log(conn: &mut MultiplexedConnection) -> Vec<String> {
    let entries: Vec<HashMap<String, redis::Value>> =
        redis::cmd("ACL").arg("LOG").query_async(conn).await.unwrap();
    entries
        .iter()
        .map(|entry| {
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                    .unwrap_or_default()
            };
            format!(
                "{} {} (context {}, user {}, count {})",
                field("reason"),
                field("object"),
                field("context"),
                field("username"),
                field("count")
            )
        })
        .collect()
}

async fn reset_acl_log(conn: &mut MultiplexedConnection) {
    redis::cmd("ACL").arg("LOG").arg("RESET").query_async::<()>(conn).await.unwrap();
}

/// After the server started: Redis refused it only what the ACL refuses on purpose, the read
/// of the lazy-freeing settings (README.md: one entry per start). Clears the log.
async fn expect_only_the_start_up_probe(conn: &mut MultiplexedConnection) {
    let log = acl_log(conn).await;
    assert!(
        !log.is_empty() && log.iter().all(|entry| entry.starts_with("command config|get ")),
        "after start-up, only the CONFIG GET probe is refused: {log:#?}"
    );
    reset_acl_log(conn).await;
}

/// Redis's verdict on `user` running `args` (`OK`, or why not).
async fn dry_run(conn: &mut MultiplexedConnection, user: &str, args: &[&str]) -> String {
    redis::cmd("ACL").arg("DRYRUN").arg(user).arg(args).query_async(conn).await.unwrap()
}

/// The ACL is not trivially broad: no administration, no keys or channels outside `rk1:`,
/// no arbitrary scripts; and it does allow what it is for.
async fn assert_not_broad(conn: &mut MultiplexedConnection, user: &str) {
    let refused: &[&[&str]] = &[
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
        &["CONFIG", "GET", "requirepass"],
        &["ACL", "SETUSER", "intruder", "on"],
        &["SHUTDOWN"],
        &["DEBUG", "SLEEP", "0"],
        &["CLIENT", "KILL", "ID", "1"],
        &["CLIENT", "LIST"],
        &["MONITOR"],
        &["REPLICAOF", "NO", "ONE"],
        &["BGSAVE"],
        &["SWAPDB", "0", "1"],
        &["SELECT", "1"],
        &["MODULE", "LIST"],
        &["SCRIPT", "FLUSH"],
        &["FUNCTION", "FLUSH"],
        &["EVAL", "return 1", "0"],
        &["KEYS", "*"],
        &["GET", "sessions:someone-else"],
        &["SET", "other-app:key", "v"],
        &["RENAME", "rk1:{ns:cache:a}", "other-app:key"],
        &["MIGRATE", "127.0.0.1", "6380", "rk1:{ns:cache:a}", "0", "1000"],
        &["PUBLISH", "other-app:events", "m"],
        &["SUBSCRIBE", "other-app:events"],
        &["PSUBSCRIBE", "*"],
    ];
    for args in refused {
        let verdict = dry_run(conn, user, args).await;
        assert!(verdict.contains("no permissions"), "{args:?} should be refused, got {verdict:?}");
    }
    let allowed: &[&[&str]] = &[
        &["GET", "rk1:{ns:cache:a}"],
        &["XREADGROUP", "GROUP", "g", "c", "BLOCK", "100", "STREAMS", "rk1:{ns:st:s}", ">"],
        &["EVALSHA", "0123456789012345678901234567890123456789", "1", "rk1:{ns:lock:l}"],
        &["PUBLISH", "rk1:ev:ns:orders", "m"],
        &["SUBSCRIBE", "rk1:lock:wake"],
    ];
    for args in allowed {
        assert_eq!(dry_run(conn, user, args).await, "OK", "{args:?} should be allowed");
    }
}

/// README.md quotes the very line the tests run with, and the one addition Redis 7.2 needs.
#[test]
fn the_readme_quotes_the_tested_acl() {
    assert!(README.contains(acl_line()), "README.md quotes the `user` line of scripts/redis-acl.txt");
    assert!(README.contains("scripts/redis-acl.txt"));
    for rule in for_version((7, 2)) {
        assert!(README.contains(rule), "README.md mentions {rule}");
    }
    for command in NOT_GRANTED {
        assert!(README.contains(command), "README.md says why {command} is refused");
    }
}

/// Every Redis command named in the server's sources (Rust and Lua) is granted, except the
/// probe refused on purpose and what only sentinels are asked, and every granted command is sent: the ACL neither misses a
/// command a rarely taken path sends nor grants one nothing needs.
#[test]
fn the_acl_grants_exactly_the_commands_the_server_sends() {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("server/src");
    let mut sent = BTreeSet::new();
    commands_in(&sources, &mut sent);
    assert!(sent.len() >= 40, "the scan found the server's commands: {sent:?}");
    let granted = granted();
    let missing: Vec<&String> = sent
        .iter()
        .filter(|c| !granted.contains(*c))
        .filter(|c| !NOT_GRANTED.contains(&c.as_str()) && !SENT_TO_SENTINELS.contains(&c.as_str()))
        .collect();
    assert!(missing.is_empty(), "sent but not granted by scripts/redis-acl.txt: {missing:?}");
    let unused: Vec<&String> =
        granted.iter().filter(|c| !sent.contains(*c) && !SENT_BY_REDIS_RS.contains(&c.as_str())).collect();
    assert!(unused.is_empty(), "granted but never sent: {unused:?}");
}

/// Adds to `sent` the commands named in the `.rs` and `.lua` files under `dir`: in Lua, the
/// first argument of `redis.call`/`redis.pcall` and the upper-case first element of a table
/// built for `redis.call(unpack(...))`; in Rust, the argument of `cmd("...")`. For commands
/// with subcommands, the next string literal is the subcommand.
fn commands_in(dir: &Path, sent: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            commands_in(&path, sent);
            continue;
        }
        let markers: &[&str] = match path.extension().and_then(|e| e.to_str()) {
            Some("lua") => &["redis.call(", "redis.pcall(", "{"],
            Some("rs") => &["cmd("],
            _ => continue,
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for marker in markers {
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                let Some((name, after)) = string_literal(rest) else { continue };
                if *marker == "{" && name.chars().any(|c| !c.is_ascii_uppercase()) {
                    continue;
                }
                let name = name.to_ascii_lowercase();
                if CONTAINERS.contains(&name.as_str()) {
                    let sub = next_string_literal(after)
                        .unwrap_or_else(|| panic!("no subcommand after {name} in {}", path.display()));
                    sent.insert(format!("{name}|{}", sub.to_ascii_lowercase()));
                } else {
                    sent.insert(name);
                }
            }
        }
    }
}

/// A string literal (`'...'` or `"..."`) of letters at the start of `text` (after blanks), and
/// the text after it.
fn string_literal(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &text[1..];
    let end = body.find(quote)?;
    let name = &body[..end];
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic())).then_some((name, &body[end + 1..]))
}

/// The next string literal in `text`, within a few lines.
fn next_string_literal(text: &str) -> Option<&str> {
    let window = &text[..text.len().min(200)];
    let at = window.find(['\'', '"'])?;
    string_literal(&window[at..]).map(|(name, _)| name)
}

/// The next event of a subscription, within 5 s.
async fn next_event(stream: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open")
        .expect("no error")
}

/// The next batch of a consumer, within `within`, or None if none came.
async fn next_batch(consumer: &mut Consumer, within: Duration) -> Option<Vec<Delivery>> {
    match tokio::time::timeout(within, consumer.next()).await {
        Ok(Some(batch)) => Some(batch.expect("no error").entries),
        Ok(None) => panic!("the consumer ended"),
        Err(_) => None,
    }
}

/// Exactly `count` deliveries, from as many batches as they come in.
async fn take(consumer: &mut Consumer, count: usize) -> Vec<Delivery> {
    let mut taken = Vec::new();
    while taken.len() < count {
        taken.extend(next_batch(consumer, Duration::from_secs(5)).await.expect("entries"));
    }
    assert_eq!(taken.len(), count);
    taken
}

fn entry(n: u32) -> HashMap<String, Vec<u8>> {
    HashMap::from([("n".to_owned(), n.to_string().into_bytes())])
}

const MINUTE: Duration = Duration::from_secs(60);

/// Cache: writes with and without tags, batch reads, get-or-load (the lease protocol), a lease
/// given back, a waiter woken by another caller's fill, invalidation by tag and by prefix.
async fn cache_core(client: &Client) {
    let cache = client.cache();
    assert!(cache.set("plain", b"v".to_vec(), MINUTE).await.unwrap());
    assert_eq!(cache.get("plain").await.unwrap().expect("stored").value, &b"v"[..]);
    let tagged = SetOptions { ttl: Some(MINUTE), tags: vec!["users".into()], ..SetOptions::default() };
    assert!(cache.set_with("user:1", b"ann".to_vec(), tagged.clone()).await.unwrap());
    cache.set_many([("user:2".to_owned(), b"bob".to_vec())], tagged).await.unwrap();
    let many = cache.get_many(["plain", "user:1", "user:2", "missing"]).await.unwrap();
    assert_eq!(many.iter().filter(|e| e.is_some()).count(), 3);

    let loaded = cache
        .get_or_load("loaded", MINUTE, || async { Ok::<_, std::io::Error>(b"expensive".to_vec()) })
        .await
        .unwrap();
    assert_eq!(loaded, b"expensive");
    let cached = cache
        .get_or_load("loaded", MINUTE, || async { Err::<Vec<u8>, _>(std::io::Error::other("loaded twice")) })
        .await
        .unwrap();
    assert_eq!(cached, b"expensive");

    let Fetched::Fill(lease) = cache.fetch("leased", &FetchOptions::default()).await.unwrap() else {
        panic!("a miss grants a lease")
    };
    assert!(cache.release_lease("leased", lease).await.unwrap());
    let Fetched::Fill(lease) = cache.fetch("leased", &FetchOptions::default()).await.unwrap() else {
        panic!("a released lease is granted again")
    };
    let waiter = {
        let cache = cache.clone();
        let wait = FetchOptions { wait: Some(Duration::from_secs(5)), ..FetchOptions::default() };
        tokio::spawn(async move { cache.fetch("leased", &wait).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let plain = SetOptions { ttl: Some(MINUTE), ..SetOptions::default() };
    cache.fill("leased", lease, b"filled".to_vec(), plain).await.unwrap();
    match waiter.await.unwrap().unwrap() {
        Fetched::Hit(entry) => assert_eq!(entry.value, &b"filled"[..]),
        other => panic!("the waiter gets the fill: {other:?}"),
    }

    assert_eq!(cache.invalidate_tags(["users"]).await.unwrap(), 2);
    assert!(cache.get("user:1").await.unwrap().is_none());
    assert_eq!(cache.invalidate_prefix("load").await.unwrap(), 1);
    assert_eq!(cache.delete(["plain", "leased", "missing"]).await.unwrap(), 2);
}

/// Lock: acquire, a waiter woken by the release, inspect, extend, a semaphore, a `Hold` that
/// is renewed, and an election handed over by resigning, seen by an observer.
async fn lock_core(client: &Client) {
    let lock = client.lock();
    let options = LockOptions::new(Duration::from_secs(10));
    let lease = lock.acquire("job", &options).await.unwrap().expect("free");
    assert!(lock.acquire("job", &options).await.unwrap().is_none(), "held");
    let waiter = {
        let lock = lock.clone();
        let options = options.clone().wait(Duration::from_secs(5));
        tokio::spawn(async move { lock.acquire("job", &options).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lock.inspect("job").await.unwrap().holders.len(), 1);
    assert!(lock.extend("job", &lease.token, Duration::from_secs(20)).await.unwrap().is_some());
    assert!(lock.release("job", &lease.token).await.unwrap());
    let next = waiter.await.unwrap().unwrap().expect("the waiter is woken and gets the lock");
    assert!(next.fence > lease.fence);
    assert!(lock.release("job", &next.token).await.unwrap());

    let two = LockOptions::new(Duration::from_secs(10)).limit(2);
    let first = lock.acquire("pool", &two).await.unwrap().expect("a permit");
    let second = lock.acquire("pool", &two).await.unwrap().expect("a second permit");
    assert!(lock.acquire("pool", &two).await.unwrap().is_none(), "no third");
    assert!(lock.release("pool", &first.token).await.unwrap());
    assert!(lock.release("pool", &second.token).await.unwrap());

    let held = lock.hold("held", &LockOptions::new(Duration::from_secs(1))).await.unwrap().expect("free");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(held.is_held(), "renewed past its TTL");
    assert!(held.release().await.unwrap());

    let mut observer = lock.observe("leader").await.unwrap();
    assert_eq!(observer.next().await.unwrap().unwrap(), None, "no leader yet");
    let mut a = lock.campaign("leader", "node-a", Duration::from_secs(2)).await.unwrap();
    let Some(Ok(CampaignEvent::Elected(term))) = a.next().await else { panic!("node-a is elected") };
    assert_eq!(next_leader(&mut observer).await, "node-a");
    let mut b = lock.campaign("leader", "node-b", Duration::from_secs(2)).await.unwrap();
    assert!(lock.resign("leader", &term.token).await.unwrap());
    let elected = tokio::time::timeout(Duration::from_secs(5), b.next()).await.unwrap();
    assert!(matches!(elected, Some(Ok(CampaignEvent::Elected(_)))), "node-b takes over: {elected:?}");
    assert_eq!(next_leader(&mut observer).await, "node-b");
}

/// The next leader an observer sees (skipping the moments without one), within 5 s.
async fn next_leader(observer: &mut LeaderStream) -> String {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(leader) = observer.next().await.expect("the stream is open").expect("no error") {
                return leader.candidate;
            }
        }
    })
    .await
    .expect("a leader within 5 s")
}

/// RateLimiter: every algorithm allows its limit and denies past it, a reset forgets, and a
/// multi-limit check.
async fn rate_limiter_core(client: &Client) {
    let limiter = client.rate_limiter();
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowLog,
        Algorithm::SlidingWindowCounter,
        Algorithm::FixedWindow,
    ] {
        // An hour's window: no window boundary falls between these calls.
        let limit = RateLimit::Spec { algorithm, limit: 2, period: Duration::from_secs(3600), burst: 0 };
        let key = format!("{algorithm:?}");
        assert!(limiter.check(&key, &limit, 1).await.unwrap().allowed);
        assert!(limiter.check(&key, &limit, 1).await.unwrap().allowed);
        assert!(!limiter.check(&key, &limit, 1).await.unwrap().allowed, "{algorithm:?} denies the third");
        assert_eq!(limiter.reset(&key).await.unwrap(), 1);
        assert!(limiter.check(&key, &limit, 1).await.unwrap().allowed, "{algorithm:?} after a reset");
    }
    let checks = [
        RateLimitCheck { key: "user".into(), limit: RateLimit::per(10, MINUTE), cost: 1 },
        RateLimitCheck { key: "ip".into(), limit: RateLimit::per(10, MINUTE), cost: 1 },
    ];
    assert!(limiter.check_many(&checks).await.unwrap().0);
}

/// Session: create, get (sliding its idle expiry), update, rotate, list and delete by subject,
/// and the per-subject cap.
async fn session_core(client: &Client) {
    let sessions = client.session();
    let attributes = HashMap::from([("role".to_owned(), b"admin".to_vec())]);
    let created = sessions.create("user-1", attributes.clone(), &SessionOptions::default()).await.unwrap();
    let session = sessions.get(&created.id, true).await.unwrap().expect("found");
    assert_eq!(session.attributes, attributes);
    let update = SessionUpdate::new().set("theme", b"dark".to_vec()).if_version(1);
    assert_eq!(sessions.update(&created.id, update).await.unwrap(), 2);
    let rotated = sessions.rotate(&created.id, Some(Duration::from_secs(5))).await.unwrap();
    assert_eq!(sessions.get(&rotated, false).await.unwrap().expect("moved").version, 2);
    let other = sessions.create("user-1", HashMap::new(), &SessionOptions::default()).await.unwrap();
    let listed = sessions.list_by_subject("user-1").await.unwrap();
    assert!(listed.iter().any(|s| s.hint == session_hint(&other.id)), "{listed:?}");
    assert!(sessions.delete(&other.id).await.unwrap());
    assert!(sessions.delete_by_subject("user-1").await.unwrap() >= 1);
    assert!(sessions.get(&rotated, false).await.unwrap().is_none());

    let one = SessionOptions { max_sessions: Some(1), ..SessionOptions::default() };
    sessions.create("user-2", HashMap::new(), &one).await.unwrap();
    assert_eq!(sessions.create("user-2", HashMap::new(), &one).await.unwrap().evicted, 1);
    assert_eq!(sessions.delete_by_subject("user-2").await.unwrap(), 1);
}

/// Events: publish/subscribe; append (idempotent, trimmed), read and follow; consumer groups:
/// create, consume, ack, nack (at once, later, and to the dead letters), entries of a consumer
/// that timed out going to another, describe, delete.
async fn events_core(client: &Client) {
    let events = client.events();
    let mut subscription = events.subscribe(["news"], Vec::<String>::new()).await.unwrap();
    // (On a Cluster, the count of receivers is only that of the node the PUBLISH went to.)
    events.publish("news", b"hello".to_vec()).await.unwrap();
    assert_eq!(
        next_event(&mut subscription).await,
        Event::Message { channel: "news".into(), pattern: None, payload: Bytes::from_static(b"hello") }
    );
    drop(subscription);

    let once = AppendOptions { idempotency_key: Some("order-1".into()), ..AppendOptions::default() };
    let (first, duplicate) = events.append("orders", entry(1), &once).await.unwrap();
    assert!(!duplicate);
    assert_eq!(events.append("orders", entry(1), &once).await.unwrap(), (first.clone(), true));
    let trimmed = AppendOptions { max_len: 100, ..AppendOptions::default() };
    events.append("orders", entry(2), &trimmed).await.unwrap();
    let aged = AppendOptions { max_age: Some(Duration::from_secs(3600)), ..AppendOptions::default() };
    let (third, _) = events.append("orders", entry(3), &aged).await.unwrap();
    let mut read = events.read("orders", "", false).await.unwrap();
    let mut ids = Vec::new();
    while let Some(batch) = read.next().await {
        ids.extend(batch.unwrap().into_iter().map(|e| e.id));
    }
    assert_eq!((ids.len(), ids[0].as_str(), ids[2].as_str()), (3, first.as_str(), third.as_str()));
    // A caught-up follower waits in a blocking read on a dedicated connection.
    let mut follow = events.read("orders", third.clone(), true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fourth, _) = events.append("orders", entry(4), &AppendOptions::default()).await.unwrap();
    let followed =
        tokio::time::timeout(Duration::from_secs(5), follow.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(followed[0].id, fourth);
    drop(follow);

    let settings = GroupSettings { ack_timeout: Some(Duration::from_secs(5)), max_deliveries: Some(2) };
    events.create_group("orders", "billing", "", settings).await.unwrap();
    let again = events.create_group("orders", "billing", "", settings).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let mut consumer = events.consume("orders", "billing", "c1", &ConsumeOptions::default()).await.unwrap();
    let delivered = take(&mut consumer, 4).await;
    assert_eq!(consumer.ack([delivered[0].id.clone(), delivered[1].id.clone()]).await.unwrap(), 2);
    let (retried, delayed) = (delivered[2].id.clone(), delivered[3].id.clone());
    assert_eq!(consumer.nack([retried.clone()], Duration::ZERO).await.unwrap(), (1, 0));
    assert_eq!(consumer.nack([delayed.clone()], Duration::from_millis(300)).await.unwrap(), (1, 0));
    let mut redelivered = take(&mut consumer, 2).await;
    redelivered.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        redelivered.iter().map(|d| (d.id.as_str(), d.deliveries)).collect::<Vec<_>>(),
        [(retried.as_str(), 2), (delayed.as_str(), 2)]
    );
    // At its delivery limit, a nack moves the entry to the dead letters.
    assert_eq!(consumer.nack([retried.clone()], Duration::ZERO).await.unwrap(), (0, 1));
    assert_eq!(consumer.ack([delayed]).await.unwrap(), 1);
    let mut dead = events.read_dead_letters("orders", "", false).await.unwrap();
    let dead = dead.next().await.unwrap().unwrap();
    assert_eq!(dead[0].fields["rookery.id"], retried.as_bytes());

    // A consumer that crashed holding an entry: it goes to another after the ack timeout.
    let quick = ConsumeOptions {
        create_group: true,
        settings: GroupSettings { ack_timeout: Some(Duration::from_millis(300)), max_deliveries: Some(0) },
        max_in_flight: 1,
        ..ConsumeOptions::default()
    };
    let mut stuck = events.consume("orders", "audit", "stuck", &quick).await.unwrap();
    let taken = take(&mut stuck, 1).await;
    drop(stuck);
    let mut rescuer = events.consume("orders", "audit", "rescuer", &quick).await.unwrap();
    let mut rescued = Vec::new();
    while !rescued.iter().any(|d: &Delivery| d.id == taken[0].id) {
        let batch = next_batch(&mut rescuer, Duration::from_secs(5)).await.expect("entries");
        rescuer.ack(batch.iter().map(|d| d.id.clone())).await.unwrap();
        rescued.extend(batch);
    }

    let described = events.describe("orders").await.unwrap();
    assert_eq!((described.length, described.dead_letters, described.groups.len()), (4, 1, 2));
    drop((consumer, rescuer));
    assert!(events.delete_group("orders", "billing").await.unwrap());
    assert!(events.delete_group("orders", "audit").await.unwrap());
}

/// The core of every service, through the real client.
async fn every_service(client: &Client) {
    cache_core(client).await;
    lock_core(client).await;
    rate_limiter_core(client).await;
    session_core(client).await;
    events_core(client).await;
}

#[tokio::test]
async fn every_service_runs_as_the_documented_least_privileged_redis_user() {
    let redis = RedisProcess::start(&[]);
    let mut admin = redis.conn().await;
    let user = create_user(&mut admin).await;
    assert_not_broad(&mut admin, user).await;
    reset_acl_log(&mut admin).await;

    let server = TestServer::start(test_config(&as_user(&redis.url(), user))).await;
    expect_only_the_start_up_probe(&mut admin).await;
    let ns = namespace("acl");
    let client = server.client(&ns).await;
    every_service(&client).await;
    let log = acl_log(&mut admin).await;
    assert!(log.is_empty(), "Redis refused the server something: {log:#?}");
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut admin).await.unwrap();
    let as_user = clients.lines().filter(|c| c.contains(&format!(" user={user} "))).count();
    assert!(as_user >= 2, "the server's connections (commands, pub/sub) are the user's: {clients}");

    // Pattern subscriptions need every channel (README.md): refused under the line as written,
    // with a message that says so, and served once the user has allchannels.
    let events = client.events();
    let refused = events.subscribe(Vec::<String>::new(), ["orders.*"]).await.err().expect("refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("allchannels"), "{refused:?}");
    let log = acl_log(&mut admin).await;
    assert_eq!(log.len(), 1, "{log:#?}");
    assert!(log[0].starts_with(&format!("channel rk1:ev:{ns}:orders.* ")), "{log:#?}");
    reset_acl_log(&mut admin).await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg("resetchannels")
        .arg("allchannels")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let mut patterns = events.subscribe(Vec::<String>::new(), ["orders.*"]).await.unwrap();
    events.publish("orders.1", b"paid".to_vec()).await.unwrap();
    assert_eq!(
        next_event(&mut patterns).await,
        Event::Message {
            channel: "orders.1".into(),
            pattern: Some("orders.*".into()),
            payload: Bytes::from_static(b"paid")
        }
    );
    drop(patterns);

    // Shutting down (releasing what streams held) is refused nothing either.
    server.stop().await;
    let log = acl_log(&mut admin).await;
    assert!(log.is_empty(), "Redis refused the server something: {log:#?}");
}

#[tokio::test]
async fn a_cluster_runs_as_the_documented_user_on_every_node() {
    let cluster = RedisCluster::start().await;
    let mut admins = Vec::new();
    let mut seeds = Vec::new();
    for node in cluster.nodes() {
        let mut admin = node.conn().await;
        let user = create_user(&mut admin).await;
        reset_acl_log(&mut admin).await;
        seeds.push(as_user(&node.url(), user));
        admins.push(admin);
    }
    let mut config = test_config(&seeds.join(","));
    config.redis.cluster = true;
    let server = TestServer::start(config).await;
    for admin in &mut admins {
        expect_only_the_start_up_probe(admin).await;
    }
    let client = server.client(&namespace("acl-cluster")).await;
    every_service(&client).await;
    server.stop().await;
    for (node, admin) in admins.iter_mut().enumerate() {
        let log = acl_log(admin).await;
        assert!(log.is_empty(), "node {node} refused the server something: {log:#?}");
    }
}

/// Without `+info` the eviction policy cannot be read, and an unverified policy is not a
/// verified one: the server refuses to start, unless told to accept evictions.
#[tokio::test]
async fn an_unreadable_eviction_policy_stops_start_up_unless_eviction_is_allowed() {
    let redis = RedisProcess::start(&[]);
    let mut admin = redis.conn().await;
    let user = create_user(&mut admin).await;
    redis::cmd("ACL").arg("SETUSER").arg(user).arg("-info").query_async::<()>(&mut admin).await.unwrap();
    let mut config = test_config(&as_user(&redis.url(), user));
    match TestServer::try_start(config.clone()).await {
        Err(ServeError::Redis(StartupError::EvictionPolicyUnverified { refusal })) => {
            assert!(refusal.contains("NOPERM") || refusal.contains("no permissions"), "{refusal}")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("started without knowing the eviction policy"),
    }
    config.redis.allow_eviction = true;
    let server = TestServer::start(config).await;
    let cache = server.client(&namespace("acl-no-info")).await.cache();
    assert!(cache.set("k", b"v".to_vec(), MINUTE).await.unwrap());
}
