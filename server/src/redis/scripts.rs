//! The registry of Lua scripts: each `.lua` file is compiled into the binary and hashed once.
//!
//! Scripts run with EVALSHA; on NOSCRIPT (a Redis restart or failover flushed the script
//! cache) they are loaded and retried, by [`run`] for single calls and by [`run_batch`]
//! for pipelines. Scripts take every key through KEYS, never through ARGV,
//! so they run unchanged on Redis Cluster.
//!
//! Memory. A script's first line may declare Redis 7 flags (`#!lua flags=...`). Without that
//! line Redis checks maxmemory only at the script's first write command that needs memory, and
//! not at all once a write that does not (a ZREMRANGEBYSCORE, a DEL) came first: such a
//! script could write past maxmemory. With it, Redis decides before the script runs: a script
//! without `allow-oom` (or `no-writes`) is refused with OOM while Redis is over maxmemory, and
//! one with `allow-oom` runs and may call any command. So a script that can grow memory
//! declares `#!lua` (no flags) and is refused whole; `allow-oom` goes only to scripts that
//! free memory or keep it steady, their growth bounded by a constant (releases, renewals,
//! acks, deletes), so that they keep working at maxmemory; read-only scripts declare
//! `no-writes`. A declared script also loses the legacy leave to touch keys of other Cluster
//! slots (`allow-cross-slot-keys`), which ours never need: every key a script touches comes
//! through KEYS and shares one hash tag.
//!
//! Scripts built from a shared helper file and a script file ([`compose`]) keep the script
//! file's first line first, where Redis looks for it.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, Script, ServerErrorKind, Value};

use super::RedisPool;

/// `cache/fetch.lua`: read with the lease protocol.
pub static CACHE_FETCH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../cache/fetch.lua")));
/// `cache/set.lua`: conditional write that cancels a pending lease and wakes waiters.
pub static CACHE_SET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../cache/set.lua")));
/// `cache/fill.lua`: write guarded by a lease token.
pub static CACHE_FILL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../cache/fill.lua")));
/// `cache/release.lua`: give a lease back.
pub static CACHE_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../cache/release.lua")));
/// `cache/delete.lua`: delete an entry and cancel its lease.
pub static CACHE_DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../cache/delete.lua")));
/// `cache/tag.lua`: add an entry to a tag index and keep the index's TTL above the entry's.
pub static CACHE_TAG: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../cache/tag.lua")));
/// `cache/get_bounded.lua`: a value and its PTTL if it is at most a given length, else its length.
pub static CACHE_GET_BOUNDED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../cache/get_bounded.lua")));

/// Joins helpers shared by several scripts and one script into the text Redis runs. The
/// script's flags line (`#!lua ...`), if it has one, goes first: Redis reads flags only from
/// the first line.
fn compose(helpers: &str, script: &str) -> String {
    match script.strip_prefix("#!").and(script.split_once('\n')) {
        Some((flags, body)) => format!("{flags}\n{helpers}{body}"),
        None => format!("{helpers}{script}"),
    }
}

/// A Lock script: `lock/lib.lua` (shared helpers) followed by the named file.
macro_rules! lock_script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(&compose(include_str!("../lock/lib.lua"), include_str!($file))))
    };
}

/// `lock/acquire.lua`: grant a lease if a permit is free.
pub static LOCK_ACQUIRE: LazyLock<Script> = lock_script!("../lock/acquire.lua");
/// `lock/release.lua`: end a live lease and wake waiters.
pub static LOCK_RELEASE: LazyLock<Script> = lock_script!("../lock/release.lua");
/// `lock/extend.lua`: move a live lease's expiry.
pub static LOCK_EXTEND: LazyLock<Script> = lock_script!("../lock/extend.lua");
/// `lock/inspect.lua`: read a lock's holders, last fence and an election's recent terms.
pub static LOCK_INSPECT: LazyLock<Script> = lock_script!("../lock/inspect.lua");

/// `session/create.lua`: store a session, its expiry and index entry, within the subject's cap.
pub static SESSION_CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../session/create.lua")));
/// `session/get.lua`: read a session, optionally sliding its idle expiry.
pub static SESSION_GET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../session/get.lua")));
/// `session/update.lua`: change attributes, optionally only at an expected version.
pub static SESSION_UPDATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../session/update.lua")));
/// `session/rotate.lua`: move a session to a new ID, leaving an alias for a grace period.
pub static SESSION_ROTATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../session/rotate.lua")));
/// `session/delete.lua`: end one session.
pub static SESSION_DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../session/delete.lua")));
/// `session/delete_subject.lua`: end every session of a subject, if the caller named them all.
pub static SESSION_DELETE_SUBJECT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../session/delete_subject.lua")));

/// `rate_limiter/check.lua`: decide one or several limits, consuming only if all allow.
pub static RATE_LIMIT_CHECK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../rate_limiter/check.lua")));

/// `events/append.lua`: append to a stream with trimming and an optional idempotency key,
/// refreshing the idle expiry of the stream and its companions.
pub static EVENTS_APPEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../events/append.lua")));
/// `events/range.lua`: the next entries of a stream, as many as fit a byte budget.
pub static EVENTS_RANGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../events/range.lua")));
/// `events/register.lua`: count a stream in its namespace's index, within the cap on streams.
pub static EVENTS_REGISTER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../events/register.lua")));

/// A consumer-group script: `events/groups.lua` (shared helpers) followed by the named file.
macro_rules! group_script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(&compose(include_str!("../events/groups.lua"), include_str!($file))))
    };
}

/// `events/fetch.lua`: the next entries for a consumer of a group, within its in-flight bound.
pub static EVENTS_FETCH: LazyLock<Script> = group_script!("../events/fetch.lua");
/// `events/nack.lua`: give entries back for delivery after a delay, or to the dead letters.
/// Refused while Redis is over maxmemory (a dead letter copies an entry); see
/// [`EVENTS_NACK_AT_MAXMEMORY`].
pub static EVENTS_NACK: LazyLock<Script> = group_script!("../events/nack.lua");
/// `events/nack.lua` as it runs while Redis is over maxmemory: flagged `allow-oom`, and always
/// called with dead-lettering off, so that it only moves entries between consumers (memory
/// stays steady). Entries at their delivery limit are then given back like the others and go
/// to the dead letters at their next delivery, once memory allows.
pub static EVENTS_NACK_AT_MAXMEMORY: LazyLock<Script> = LazyLock::new(|| {
    let script = include_str!("../events/nack.lua");
    let body = script.split_once('\n').map_or(script, |(_, body)| body);
    Script::new(&compose(include_str!("../events/groups.lua"), &format!("#!lua flags=allow-oom\n{body}")))
});
/// `events/create_group.lua`: create a consumer group with its settings.
pub static EVENTS_CREATE_GROUP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../events/create_group.lua")));
/// `events/delete_group.lua`: delete a consumer group with its settings.
pub static EVENTS_DELETE_GROUP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../events/delete_group.lua")));
/// `events/prune.lua`: forget consumers that hold nothing and have long been idle.
pub static EVENTS_PRUNE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../events/prune.lua")));
/// `events/leave.lua`: forget a consumer that has nothing pending.
pub static EVENTS_LEAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../events/leave.lua")));

/// Starts an EVALSHA of `script` over `keys`; append ARGV with `.arg(..)`. Run it with
/// [`run`] or [`run_batch`], which load the script when Redis has lost it.
pub fn evalsha(script: &Script, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    cmd
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Runs one script invocation; on NOSCRIPT (Redis restarted or failed over and lost its
/// script cache) loads `script` and runs it again. NOSCRIPT means the script did not run, so
/// the retry cannot apply a write twice.
pub async fn run<T: FromRedisValue>(
    conn: &mut impl ConnectionLike,
    script: &Script,
    cmd: &Cmd,
) -> RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(e) if is_noscript(&e) => {
            script.load_async(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

/// Runs commands in one round trip (see [`RedisPool::query_each`]) and returns each
/// command's own result. Commands that failed with NOSCRIPT, and only those, are re-sent after
/// loading `scripts`; every other command ran exactly once.
pub async fn run_batch(
    pool: &RedisPool,
    cmds: &[Cmd],
    scripts: &[&Script],
) -> RedisResult<Vec<RedisResult<Value>>> {
    let mut results = pool.query_each(&cmds.iter().collect::<Vec<_>>()).await?;
    let missing: Vec<usize> =
        (0..results.len()).filter(|&i| matches!(&results[i], Err(e) if is_noscript(e))).collect();
    if !missing.is_empty() {
        let mut conn = pool.conn();
        for script in scripts {
            script.load_async(&mut conn).await?;
        }
        let retried = pool.query_each(&missing.iter().map(|&i| &cmds[i]).collect::<Vec<_>>()).await?;
        for (i, result) in missing.into_iter().zip(retried) {
            results[i] = result;
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_scripts_keep_their_flags_line_first() {
        assert_eq!(
            compose("-- lib\n", "#!lua flags=allow-oom\n-- body\n"),
            "#!lua flags=allow-oom\n-- lib\n-- body\n"
        );
        assert_eq!(compose("-- lib\n", "-- body\n"), "-- lib\n-- body\n");
    }

    /// The first line of every script that must keep working at maxmemory, or must be refused
    /// there whole: a change of flags is a change of what survives a full Redis.
    #[test]
    fn scripts_declare_their_memory_behaviour() {
        let flags = |source: &str| source.lines().next().unwrap_or_default().to_owned();
        let allow_oom = [
            include_str!("../lock/release.lua"),
            include_str!("../lock/extend.lua"),
            include_str!("../session/get.lua"),
            include_str!("../session/delete.lua"),
            include_str!("../session/delete_subject.lua"),
            include_str!("../cache/delete.lua"),
            include_str!("../cache/release.lua"),
            include_str!("../events/delete_group.lua"),
            include_str!("../events/prune.lua"),
            include_str!("../events/leave.lua"),
        ];
        for source in allow_oom {
            assert_eq!(flags(source), "#!lua flags=allow-oom", "{source}");
        }
        let refused_at_maxmemory = [
            include_str!("../lock/acquire.lua"),
            include_str!("../session/create.lua"),
            include_str!("../session/update.lua"),
            include_str!("../session/rotate.lua"),
            include_str!("../events/append.lua"),
            include_str!("../events/register.lua"),
            include_str!("../events/create_group.lua"),
            include_str!("../events/fetch.lua"),
            include_str!("../events/nack.lua"),
            include_str!("../rate_limiter/check.lua"),
            include_str!("../cache/tag.lua"),
        ];
        for source in refused_at_maxmemory {
            assert_eq!(flags(source), "#!lua", "{source}");
        }
        assert_eq!(flags(include_str!("../lock/inspect.lua")), "#!lua flags=no-writes");
        assert_eq!(flags(include_str!("../cache/get_bounded.lua")), "#!lua flags=no-writes");
        assert_eq!(flags(include_str!("../events/range.lua")), "#!lua flags=no-writes");
        // Cache fetch, set and fill keep the legacy check: their first write is a SET, which
        // Redis refuses at maxmemory, and a Fetch that finds its value writes nothing, so hits
        // keep working on a full Redis.
        for source in [
            include_str!("../cache/fetch.lua"),
            include_str!("../cache/set.lua"),
            include_str!("../cache/fill.lua"),
        ] {
            assert!(!source.starts_with("#!"), "{source}");
        }
    }
}
