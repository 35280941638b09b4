//! The Session service's domain logic over Redis; `grpc.rs` adapts it to the generated API.
//!
//! IDs. The server makes every ID: `s1.<tag>.<secret>`, where the secret is 32 bytes from a
//! CSPRNG (base64url, 256 bits) and the tag is 8 hex digits of SHA-256 of the subject. Redis
//! stores only SHA-256 of the whole ID (base64url, 43 characters): a dump of Redis holds no
//! usable ID. The tag routes the session to its subject's hash tag, so a session, its alias and
//! its subject's index share one Redis Cluster slot and every change is one atomic script; it
//! tells nothing but that two sessions may share a subject.
//!
//! Data. A session is a hash (`sub`, `v` version, `c` created, `abs` absolute expiry, `idle`
//! timeout, and the attributes prefixed with `.`) whose TTL is its idle expiry, never past the
//! absolute one. Per tag, an index sorted set holds `<subject>|<id hash>` scored by each
//! session's expiry: expired entries leave it by score (no keyspace notifications needed), and
//! its own TTL follows the latest expiry, so it disappears with the subject's last session.
//! A rotated ID with a grace period becomes an alias hash `{to: <new id hash>}` with the grace
//! as its TTL; calls through it are forwarded (one hop).
//!
//! Unknown, expired, revoked and malformed IDs all take the same path (a malformed ID is
//! looked up under a tag no session has) and answer the same NOT_FOUND.

mod grpc;

pub use grpc::SessionApi;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use redis::Value;
use sha2::{Digest, Sha256};

use crate::config::{LimitsConfig, SessionConfig, SessionLimitPolicy};
use crate::convert::millis;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::keys;
use crate::redis::scripts::{self, evalsha};
use crate::redis::{RedisPool, timed};

/// Version prefix of session IDs.
const ID_PREFIX: &str = "s1";
/// Random bytes in an ID's secret.
const SECRET_BYTES: usize = 32;
/// Longest attribute name.
const MAX_ATTRIBUTE_NAME_BYTES: usize = 256;
/// Attempts at an atomic step that another writer keeps invalidating (cap evictions, subject
/// deletion) before giving up with ABORTED.
const MAX_ATTEMPTS: usize = 1000;
/// The answer to every ID that names no session.
const NOT_FOUND: &str = "no such session (unknown, expired or revoked)";

/// A session ID as the server stores it: where it lives and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredId {
    /// The tag of the subject's hash tag.
    tag: String,
    /// SHA-256 of the whole ID, base64url.
    hash: String,
}

/// SHA-256 of `bytes`, base64url without padding (43 characters).
fn sha256_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// The tag of a subject: 8 hex digits of its SHA-256.
fn subject_tag(subject: &str) -> String {
    Sha256::digest(subject.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random ID for a session of `subject`.
fn new_id(subject: &str) -> (String, StoredId) {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill(&mut secret);
    let tag = subject_tag(subject);
    let id = format!("{ID_PREFIX}.{tag}.{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = sha256_b64(id.as_bytes());
    (id, StoredId { tag, hash })
}

/// Where an ID presented by a caller would be stored. A malformed ID gets a tag no session
/// has, so it is looked up like any other and simply not found.
fn stored_id(id: &str) -> StoredId {
    let tag = match id.split('.').collect::<Vec<_>>().as_slice() {
        [prefix, tag, _]
            if *prefix == ID_PREFIX && tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            (*tag).to_owned()
        }
        _ => "none".to_owned(),
    };
    StoredId { tag, hash: sha256_b64(id.as_bytes()) }
}

/// The hint `ListBySubject` shows for a session: the first 8 characters of its ID's hash.
pub fn hint(id: &str) -> String {
    sha256_b64(id.as_bytes())[..8].to_owned()
}

fn redis_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// What a new session starts with.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    /// Whom it belongs to.
    pub subject: String,
    /// Its attributes.
    pub attributes: HashMap<String, Vec<u8>>,
    /// Idle timeout; `None` takes `session.idle_timeout`.
    pub idle_timeout: Option<Duration>,
    /// Absolute timeout; `None` takes `session.absolute_timeout`.
    pub absolute_timeout: Option<Duration>,
    /// Cap on the subject's live sessions; `None` takes `session.max_per_subject`.
    pub max_sessions: Option<u32>,
}

/// A created session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Its ID (the only time the server has it).
    pub id: String,
    /// When it ends if unused.
    pub idle_expires_at: SystemTime,
    /// When it ends at the latest.
    pub absolute_expires_at: SystemTime,
    /// How many of the subject's sessions were evicted for it.
    pub evicted: u32,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionData {
    /// Whom it belongs to.
    pub subject: String,
    /// Its attributes.
    pub attributes: HashMap<String, Vec<u8>>,
    /// Its version.
    pub version: u64,
    /// When it was created.
    pub created_at: Option<SystemTime>,
    /// When it ends if unused from now.
    pub idle_expires_at: Option<SystemTime>,
    /// When it ends at the latest.
    pub absolute_expires_at: Option<SystemTime>,
}

/// An attribute change.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Attributes to add or overwrite.
    pub set: HashMap<String, Vec<u8>>,
    /// Attribute names to remove.
    pub remove: Vec<String>,
    /// Apply only at this version.
    pub expected_version: Option<u64>,
}

/// A session as listed for its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The first 8 characters of the hash of its ID.
    pub hint: String,
    /// When it was created.
    pub created_at: Option<SystemTime>,
    /// When it ends if unused.
    pub idle_expires_at: SystemTime,
    /// When it ends at the latest.
    pub absolute_expires_at: Option<SystemTime>,
}

/// The Session service's domain logic.
pub struct Sessions {
    redis: Arc<RedisPool>,
    limits: LimitsConfig,
    config: SessionConfig,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("redis", &self.redis).finish_non_exhaustive()
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

impl Sessions {
    /// Builds the service.
    pub fn new(redis: Arc<RedisPool>, limits: LimitsConfig, config: SessionConfig) -> Self {
        Self { redis, limits, config }
    }

    /// The Redis this service uses.
    pub fn redis(&self) -> &Arc<RedisPool> {
        &self.redis
    }

    fn check_subject(&self, subject: &str) -> Result<()> {
        self.limits.check_name("subject", subject)
    }

    /// The refusal of attributes totalling `bytes`, over what one Session.Get may answer.
    fn too_many_bytes(&self, bytes: usize) -> Error {
        Error::InvalidArgument(format!(
            "the session's attribute names and values would total {bytes} bytes; the limit is {} \
             (limits.max_response_bytes, so that Session.Get's answer always fits)",
            self.limits.response_budget()
        ))
    }

    /// Checks attribute names and values, and returns them as script arguments (`.name`, value).
    fn attribute_args(&self, attributes: &HashMap<String, Vec<u8>>) -> Result<Vec<(String, Vec<u8>)>> {
        if attributes.len() > self.config.max_attributes as usize {
            return Err(Error::InvalidArgument(format!(
                "{} attributes; a session may have at most {} (session.max_attributes)",
                attributes.len(),
                self.config.max_attributes
            )));
        }
        let bytes: usize = attributes.iter().map(|(name, value)| name.len() + 1 + value.len()).sum();
        if bytes > self.limits.response_budget() {
            return Err(self.too_many_bytes(bytes));
        }
        attributes
            .iter()
            .map(|(name, value)| {
                check_attribute_name(name)?;
                if value.len() > self.limits.max_value_bytes {
                    return Err(Error::InvalidArgument(format!(
                        "attribute {name:?} is {} bytes; the limit is {} (limits.max_value_bytes)",
                        value.len(),
                        self.limits.max_value_bytes
                    )));
                }
                Ok((format!(".{name}"), value.clone()))
            })
            .collect()
    }

    /// Creates a session; see `session.proto`.
    pub async fn create(&self, ns: &Namespace, new: NewSession) -> Result<Created> {
        let NewSession { subject, attributes, idle_timeout, absolute_timeout, max_sessions } = new;
        self.check_subject(&subject)?;
        let attributes = self.attribute_args(&attributes)?;
        let idle = idle_timeout.unwrap_or(self.config.idle_timeout);
        let absolute = absolute_timeout.unwrap_or(self.config.absolute_timeout);
        if idle < Duration::from_millis(1) {
            return Err(Error::InvalidArgument("idle_timeout must be positive".into()));
        }
        if absolute < idle {
            return Err(Error::InvalidArgument("absolute_timeout must be at least idle_timeout".into()));
        }
        if absolute > self.config.max_absolute_timeout {
            return Err(Error::InvalidArgument(format!(
                "absolute_timeout exceeds the server's session.max_absolute_timeout of {:?}",
                self.config.max_absolute_timeout
            )));
        }
        let cap = max_sessions.filter(|&m| m > 0).unwrap_or(self.config.max_per_subject);
        if cap > 1000 {
            return Err(Error::InvalidArgument("max_sessions must be at most 1000".into()));
        }
        let policy = match self.config.on_limit {
            SessionLimitPolicy::EvictOldest => "evict",
            SessionLimitPolicy::Refuse => "refuse",
        };
        let (id, stored) = new_id(&subject);
        let key = keys::session(ns.as_str(), &stored.tag, &stored.hash);
        let index = keys::session_index(ns.as_str(), &stored.tag);
        let mut victim: Option<String> = None;
        let mut evicted = 0;
        for _ in 0..MAX_ATTEMPTS {
            let victim_key = match &victim {
                Some(hash) => keys::session(ns.as_str(), &stored.tag, hash),
                None => index.clone(),
            };
            let mut cmd = evalsha(&scripts::SESSION_CREATE, &[&key, &index, &victim_key]);
            cmd.arg(&subject)
                .arg(&stored.hash)
                .arg(millis(idle))
                .arg(millis(absolute))
                .arg(cap)
                .arg(policy)
                .arg(victim.as_deref().unwrap_or(""));
            for (name, value) in &attributes {
                cmd.arg(name).arg(value);
            }
            let mut conn = self.redis.conn();
            let reply: Vec<Value> =
                timed("session.create", scripts::run(&mut conn, &scripts::SESSION_CREATE, &cmd))
                    .await
                    .map_err(Error::from_write)?;
            match reply.as_slice() {
                [Value::Int(1), Value::Int(idle_at), Value::Int(absolute_at), Value::Int(n)] => {
                    evicted += u32::try_from(*n).unwrap_or(0);
                    metrics::counter!("rookery_session_created_total").increment(1);
                    if evicted > 0 {
                        metrics::counter!("rookery_session_evicted_total").increment(u64::from(evicted));
                    }
                    return Ok(Created {
                        id,
                        idle_expires_at: redis_time(*idle_at),
                        absolute_expires_at: redis_time(*absolute_at),
                        evicted,
                    });
                }
                [Value::Int(0), next, Value::Int(n)] => {
                    evicted += u32::try_from(*n).unwrap_or(0);
                    victim =
                        Some(text(next).ok_or_else(|| {
                            Error::unexpected("session create", &Value::Array(reply.clone()))
                        })?);
                }
                [Value::Int(-1)] => {
                    return Err(Error::ResourceExhausted(format!(
                        "this subject already has {cap} live sessions, the most allowed; end one first"
                    )));
                }
                _ => return Err(Error::unexpected("session create", &Value::Array(reply))),
            }
        }
        Err(Error::Aborted("the subject's sessions kept changing; retry".into()))
    }

    /// Reads a session, sliding its idle expiry with `touch`.
    pub async fn get(&self, ns: &Namespace, id: &str, touch: bool) -> Result<SessionData> {
        let mut stored = stored_id(id);
        // One hop through a rotated ID's alias at most.
        for _ in 0..2 {
            let key = keys::session(ns.as_str(), &stored.tag, &stored.hash);
            let index = keys::session_index(ns.as_str(), &stored.tag);
            let mut cmd = evalsha(&scripts::SESSION_GET, &[&key, &index]);
            cmd.arg(if touch { "1" } else { "0" }).arg(&stored.hash);
            let mut conn = self.redis.conn();
            let reply: Vec<Value> =
                timed("session.get", scripts::run(&mut conn, &scripts::SESSION_GET, &cmd))
                    .await
                    .map_err(Error::from_write)?;
            match reply.as_slice() {
                [Value::Int(1), Value::Array(fields), Value::Int(expiry)] => {
                    return parse_session(fields, *expiry)
                        .ok_or_else(|| Error::unexpected("session get", &Value::Array(reply.clone())));
                }
                [Value::Int(2), to] if let Some(hash) = text(to) => stored.hash = hash,
                [Value::Int(0)] => break,
                _ => return Err(Error::unexpected("session get", &Value::Array(reply))),
            }
        }
        Err(Error::NotFound(NOT_FOUND.into()))
    }

    /// Changes attributes; returns the new version.
    pub async fn update(&self, ns: &Namespace, id: &str, change: Change) -> Result<u64> {
        let Change { set, mut remove, expected_version } = change;
        let set = self.attribute_args(&set)?;
        for name in &remove {
            check_attribute_name(name)?;
        }
        // A session never has more than session.max_attributes attributes, so no update needs
        // to name more; the bound keeps the script's work bounded too.
        remove.sort_unstable();
        remove.dedup();
        if remove.len() > self.config.max_attributes as usize {
            return Err(Error::InvalidArgument(format!(
                "{} attributes to remove; a session has at most {} (session.max_attributes)",
                remove.len(),
                self.config.max_attributes
            )));
        }
        let mut stored = stored_id(id);
        for _ in 0..2 {
            let key = keys::session(ns.as_str(), &stored.tag, &stored.hash);
            let mut cmd = evalsha(&scripts::SESSION_UPDATE, &[&key]);
            cmd.arg(expected_version.map(|v| v.to_string()).unwrap_or_default())
                .arg(self.config.max_attributes)
                .arg(remove.len());
            for name in &remove {
                cmd.arg(format!(".{name}"));
            }
            for (name, value) in &set {
                cmd.arg(name).arg(value);
            }
            cmd.arg(self.limits.response_budget());
            let mut conn = self.redis.conn();
            let reply: Vec<Value> =
                timed("session.update", scripts::run(&mut conn, &scripts::SESSION_UPDATE, &cmd))
                    .await
                    .map_err(Error::from_write)?;
            match reply.as_slice() {
                [Value::Int(1), Value::Int(version)] => return Ok(u64::try_from(*version).unwrap_or(0)),
                [Value::Int(2), to] if let Some(hash) = text(to) => stored.hash = hash,
                [Value::Int(0)] => break,
                [Value::Int(-1), Value::Int(version)] => {
                    return Err(Error::Aborted(format!(
                        "the session changed since version {}: it is at version {version}; read it again and retry",
                        expected_version.unwrap_or_default()
                    )));
                }
                [Value::Int(-2), Value::Int(count)] => {
                    return Err(Error::InvalidArgument(format!(
                        "the session would have {count} attributes; at most {} are allowed (session.max_attributes)",
                        self.config.max_attributes
                    )));
                }
                [Value::Int(-3), Value::Int(bytes)] => {
                    return Err(self.too_many_bytes(usize::try_from(*bytes).unwrap_or(usize::MAX)));
                }
                _ => return Err(Error::unexpected("session update", &Value::Array(reply))),
            }
        }
        Err(Error::NotFound(NOT_FOUND.into()))
    }

    /// Gives a session a new ID; the old one works for `grace` more (if given).
    pub async fn rotate(&self, ns: &Namespace, id: &str, grace: Option<Duration>) -> Result<String> {
        let grace = grace.unwrap_or_default();
        if grace > self.config.max_rotation_grace {
            return Err(Error::InvalidArgument(format!(
                "grace exceeds the server's session.max_rotation_grace of {:?}",
                self.config.max_rotation_grace
            )));
        }
        let old = stored_id(id);
        // The new ID is for the same subject: same tag, same slot.
        let mut secret = [0u8; SECRET_BYTES];
        rand::rng().fill(&mut secret);
        let new_id = format!("{ID_PREFIX}.{}.{}", old.tag, URL_SAFE_NO_PAD.encode(secret));
        let new = stored_id(&new_id);
        let old_key = keys::session(ns.as_str(), &old.tag, &old.hash);
        let new_key = keys::session(ns.as_str(), &new.tag, &new.hash);
        let index = keys::session_index(ns.as_str(), &old.tag);
        let mut cmd = evalsha(&scripts::SESSION_ROTATE, &[&old_key, &new_key, &index]);
        cmd.arg(&old.hash).arg(&new.hash).arg(if grace.is_zero() { 0 } else { millis(grace) });
        let mut conn = self.redis.conn();
        let rotated: i64 = timed("session.rotate", scripts::run(&mut conn, &scripts::SESSION_ROTATE, &cmd))
            .await
            .map_err(Error::from_write)?;
        if rotated != 1 {
            return Err(Error::NotFound(NOT_FOUND.into()));
        }
        Ok(new_id)
    }

    /// Ends a session; `false` if there was none.
    pub async fn delete(&self, ns: &Namespace, id: &str) -> Result<bool> {
        let mut stored = stored_id(id);
        for _ in 0..2 {
            let key = keys::session(ns.as_str(), &stored.tag, &stored.hash);
            let index = keys::session_index(ns.as_str(), &stored.tag);
            let mut cmd = evalsha(&scripts::SESSION_DELETE, &[&key, &index]);
            cmd.arg(&stored.hash);
            let mut conn = self.redis.conn();
            let reply: Vec<Value> =
                timed("session.delete", scripts::run(&mut conn, &scripts::SESSION_DELETE, &cmd))
                    .await
                    .map_err(Error::from_write)?;
            match reply.as_slice() {
                [Value::Int(1)] => return Ok(true),
                [Value::Int(2), to] if let Some(hash) = text(to) => stored.hash = hash,
                [Value::Int(0)] => return Ok(false),
                _ => return Err(Error::unexpected("session delete", &Value::Array(reply))),
            }
        }
        Ok(false)
    }

    /// The ID hashes of `subject`'s live sessions with their expiry (ms), most recently active
    /// first, and Redis's time.
    async fn subject_members(&self, ns: &Namespace, subject: &str) -> Result<(Vec<(String, i64)>, i64)> {
        let index = keys::session_index(ns.as_str(), &subject_tag(subject));
        let mut conn = self.redis.conn();
        let (time, members): ((i64, i64), Vec<(String, f64)>) = timed(
            "session.index",
            redis::pipe()
                .cmd("TIME")
                .cmd("ZRANGE")
                .arg(&index)
                .arg(0)
                .arg(-1)
                .arg("REV")
                .arg("WITHSCORES")
                .query_async(&mut conn),
        )
        .await?;
        let now = time.0 * 1000 + time.1 / 1000;
        let prefix_len = subject.len();
        let mine = members
            .into_iter()
            .filter(|(member, score)| {
                *score as i64 > now
                    && member.len() == prefix_len + 44
                    && member.starts_with(subject)
                    && member.as_bytes()[prefix_len] == b'|'
            })
            .map(|(member, score)| (member[prefix_len + 1..].to_owned(), score as i64))
            .collect();
        Ok((mine, now))
    }

    /// Lists a subject's live sessions, most recently active first.
    pub async fn list_by_subject(&self, ns: &Namespace, subject: &str) -> Result<Vec<Summary>> {
        self.check_subject(subject)?;
        let tag = subject_tag(subject);
        let (members, _) = self.subject_members(ns, subject).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (hash, _) in &members {
            pipe.cmd("HMGET").arg(keys::session(ns.as_str(), &tag, hash)).arg("c").arg("abs");
        }
        let mut conn = self.redis.conn();
        let details: Vec<(Option<i64>, Option<i64>)> =
            timed("session.list", pipe.query_async(&mut conn)).await?;
        Ok(members
            .into_iter()
            .zip(details)
            // A session that ended between the two reads has no details: leave it out.
            .filter(|(_, (created, _))| created.is_some())
            .map(|((hash, expiry), (created, absolute))| Summary {
                hint: hash[..8].to_owned(),
                created_at: created.map(redis_time),
                idle_expires_at: redis_time(expiry),
                absolute_expires_at: absolute.map(redis_time),
            })
            .collect())
    }

    /// Ends every session of a subject, atomically; returns how many.
    pub async fn delete_by_subject(&self, ns: &Namespace, subject: &str) -> Result<u32> {
        self.check_subject(subject)?;
        let tag = subject_tag(subject);
        let index = keys::session_index(ns.as_str(), &tag);
        for _ in 0..MAX_ATTEMPTS {
            let (members, _) = self.subject_members(ns, subject).await?;
            let session_keys: Vec<String> =
                members.iter().map(|(hash, _)| keys::session(ns.as_str(), &tag, hash)).collect();
            let mut all_keys: Vec<&str> = vec![&index];
            all_keys.extend(session_keys.iter().map(String::as_str));
            let mut cmd = evalsha(&scripts::SESSION_DELETE_SUBJECT, &all_keys);
            cmd.arg(subject);
            for (hash, _) in &members {
                cmd.arg(hash);
            }
            let mut conn = self.redis.conn();
            let deleted: i64 = timed(
                "session.delete_subject",
                scripts::run(&mut conn, &scripts::SESSION_DELETE_SUBJECT, &cmd),
            )
            .await
            .map_err(Error::from_write)?;
            if deleted >= 0 {
                return Ok(u32::try_from(deleted).unwrap_or(u32::MAX));
            }
        }
        Err(Error::Aborted("the subject's sessions kept changing; retry".into()))
    }
}

fn check_attribute_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "attribute names must be 1 to {MAX_ATTRIBUTE_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Parses a session hash as HGETALL returns it.
fn parse_session(fields: &[Value], idle_expiry: i64) -> Option<SessionData> {
    let mut session =
        SessionData { idle_expires_at: Some(redis_time(idle_expiry)), ..SessionData::default() };
    for pair in fields.chunks(2) {
        let [Value::BulkString(name), Value::BulkString(value)] = pair else { return None };
        let number = || std::str::from_utf8(value).ok()?.parse::<i64>().ok();
        match name.as_slice() {
            [b'.', attribute @ ..] => {
                session.attributes.insert(String::from_utf8_lossy(attribute).into_owned(), value.clone());
            }
            b"sub" => session.subject = String::from_utf8_lossy(value).into_owned(),
            b"v" => session.version = u64::try_from(number()?).ok()?,
            b"c" => session.created_at = number().map(redis_time),
            b"abs" => session.absolute_expires_at = number().map(redis_time),
            _ => {}
        }
    }
    Some(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_subject_tag_and_256_random_bits() {
        let (id, stored) = new_id("user-42");
        let parts: Vec<&str> = id.split('.').collect();
        assert_eq!(parts[0], "s1");
        assert_eq!(parts[1], subject_tag("user-42"));
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 32);
        assert_eq!(stored_id(&id), stored);
        assert_eq!(stored.hash.len(), 43);
        assert_ne!(new_id("user-42").0, id);
        assert!(!stored.hash.contains(parts[2]));
    }

    #[test]
    fn malformed_ids_are_looked_up_under_no_subject() {
        for id in ["", "s1", "s1.zzzzzzzz.x", "s2.0a1b2c3d.x", "s1.0a1b2c3d.x.y", "s1.{a}.x"] {
            let stored = stored_id(id);
            assert_eq!(stored.tag, "none", "{id}");
            assert_eq!(stored.hash, sha256_b64(id.as_bytes()));
        }
        assert_eq!(stored_id("s1.0a1b2c3d.secret").tag, "0a1b2c3d");
    }

    #[test]
    fn hints_are_prefixes_of_the_stored_hash() {
        let (id, stored) = new_id("u");
        assert_eq!(hint(&id), stored.hash[..8]);
    }
}
