//! Every Redis key and channel name the server uses is built here, and nowhere else.
//!
//! Shape: `rk1:{<namespace>:<kind>:<name>}[:<part>]`. `rk1` versions the layout; the part in
//! braces is the Redis Cluster hash tag, so all keys of one object live in one slot and
//! multi-key scripts never fail with CROSSSLOT.
//!
//! User input is data, never syntax. Namespaces and names are escaped: `%`,
//! the hash-tag braces, the `:` separator, the glob characters `*?[]\` and control bytes and
//! space become `%XX`. The escaping is injective (`%` itself is escaped), so two different
//! (namespace, name) pairs never share a key; no name can close the hash tag early, reach
//! another namespace, or act as a glob in a SCAN pattern. [`glob_escape`] additionally escapes
//! the literal part of every pattern, so patterns stay literal even if the escaping changes.

use std::fmt::Write as _;

/// Version prefix of every key and channel.
const VERSION: &str = "rk1";

/// Pub/sub channel on which fills, releases and writes of cache keys are announced, so that
/// `Fetch` callers waiting on any replica wake up. The message is the key's value key.
pub const CACHE_WAKE_CHANNEL: &str = "rk1:cache:wake";

/// Pub/sub channel on which lock releases (and election changes) are announced, so that
/// waiters and observers on any replica wake up. The message is the lock's holders key.
pub const LOCK_WAKE_CHANNEL: &str = "rk1:lock:wake";

/// Kind of a lock's or semaphore's keys.
const KIND_LOCK: &str = "lock";
/// Kind of an election's keys.
const KIND_ELECTION: &str = "elect";

/// Kind of the session keys of one subject hash tag.
const KIND_SESSION: &str = "sess";

/// Kind of a rate-limited key's state.
const KIND_RATE_LIMIT: &str = "rl";

/// Kind of a cache entry's keys.
const KIND_CACHE: &str = "cache";
/// Kind of a cache tag's index set.
const KIND_CACHE_TAG: &str = "ctag";
/// Suffix of a cache entry's lease key.
const LEASE_SUFFIX: &str = ":lease";

/// Appends `input` to `out`, escaping every byte that has a meaning in our key syntax, in
/// Redis hash tags or in glob patterns. Other bytes, including all non-ASCII UTF-8, pass
/// through, so the result is valid UTF-8 and escaping a prefix gives a prefix of the escaped
/// name.
fn escape_into(out: &mut String, input: &str) {
    for ch in input.chars() {
        match ch {
            '%' | '{' | '}' | ':' | '*' | '?' | '[' | ']' | '\\' | '\u{0}'..=' ' | '\u{7f}' => {
                // All of these are ASCII, so one byte each.
                let _ = write!(out, "%{:02X}", ch as u32);
            }
            _ => out.push(ch),
        }
    }
}

/// Escapes glob metacharacters (`*?[]\`) so that `input` matches itself literally in a Redis
/// `MATCH` / `KEYS` / `PSUBSCRIBE` pattern.
pub fn glob_escape(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for ch in input.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// `rk1:{<ns>:<kind>:<name>` — the common head of an object's keys, without the closing brace.
fn object_head(namespace: &str, kind: &str, name: &str) -> String {
    let mut key = String::with_capacity(VERSION.len() + namespace.len() + kind.len() + name.len() + 8);
    key.push_str(VERSION);
    key.push_str(":{");
    escape_into(&mut key, namespace);
    key.push(':');
    key.push_str(kind);
    key.push(':');
    escape_into(&mut key, name);
    key
}

/// The Redis keys of one cache entry: both share the entry's hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKeys {
    /// The string holding the value (with its TTL).
    pub value: String,
    /// The fill/refresh lease: a string holding the current lease token, with the lease TTL.
    pub lease: String,
}

impl CacheKeys {
    fn from_value_key(value: String) -> Self {
        let lease = format!("{value}{LEASE_SUFFIX}");
        Self { value, lease }
    }
}

/// The keys of cache entry `name` in `namespace`.
pub fn cache(namespace: &str, name: &str) -> CacheKeys {
    let mut value = object_head(namespace, KIND_CACHE, name);
    value.push('}');
    CacheKeys::from_value_key(value)
}

/// The set that indexed the cache entries written with `tag` in `namespace` before tag
/// indexes were split into buckets ([`cache_tag_keys`]): one set of every entry name, freed in
/// one step when it expired. Nothing writes it any more; an invalidation still empties it
/// while one may be left from an earlier version (it expires by itself).
pub fn cache_tag(namespace: &str, tag: &str) -> String {
    let mut key = object_head(namespace, KIND_CACHE_TAG, tag);
    key.push('}');
    key
}

/// The keys of the index of the cache entries written with `tag` in `namespace`, all sharing
/// one hash tag. A tag's entries are spread over buckets (sets of entry names, unescaped, from
/// which [`cache`] rebuilds their keys) of a bounded size, so that no single key of the index
/// grows with the number of entries, and none is freed in one long step when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTagKeys {
    /// The number of the bucket being filled (a string).
    pub head: String,
    /// The live buckets: a sorted set of bucket numbers scored by the time (Redis ms) each
    /// expires.
    pub buckets: String,
    base: String,
}

impl CacheTagKeys {
    /// Bucket number `n`: a set of entry names.
    pub fn bucket(&self, n: u64) -> String {
        format!("{}:b:{n}", self.base)
    }
}

/// The keys of `tag`'s index in `namespace` (see [`CacheTagKeys`]).
pub fn cache_tag_keys(namespace: &str, tag: &str) -> CacheTagKeys {
    let base = cache_tag(namespace, tag);
    CacheTagKeys { head: format!("{base}:head"), buckets: format!("{base}:buckets"), base }
}

/// A SCAN `MATCH` pattern for every key (values and leases) of the cache entries in
/// `namespace` whose names start with `prefix`.
pub fn cache_prefix_pattern(namespace: &str, prefix: &str) -> String {
    let mut pattern = glob_escape(&object_head(namespace, KIND_CACHE, prefix));
    pattern.push('*');
    pattern
}

/// Maps a key found by a [`cache_prefix_pattern`] scan back to its entry's keys; `None` for a
/// key that is not a cache value or lease key.
pub fn cache_keys_from_scanned(key: &str) -> Option<CacheKeys> {
    let value = key.strip_suffix(LEASE_SUFFIX).unwrap_or(key);
    value.ends_with('}').then(|| CacheKeys::from_value_key(value.to_owned()))
}

/// The entry name of a cache value key of `namespace` (as published on
/// [`cache_changes_channel`]); `None` for any other key. The inverse of [`cache`]: escaping is
/// injective, so every value key has exactly one name.
pub fn cache_name_from_value_key(namespace: &str, key: &str) -> Option<String> {
    let head = object_head(namespace, KIND_CACHE, "");
    let escaped = key.strip_prefix(head.as_str())?.strip_suffix('}')?;
    unescape(escaped)
}

/// Reverses [`escape_into`]; `None` for text it cannot have produced.
fn unescape(escaped: &str) -> Option<String> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            // Every byte with a meaning was escaped, so a raw one means this is not our key.
            b'{' | b'}' | b':' => return None,
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// The Redis keys of one lock, semaphore or election: all share its hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockKeys {
    /// Sorted set of the live holders' tokens, scored by lease expiry (Redis ms). Its TTL is
    /// the last lease's expiry; deleted when the last holder leaves.
    pub holders: String,
    /// Hash of token -> grant details, and the permit count; lives and dies with `holders`.
    pub info: String,
    /// The last fencing token granted, with a long TTL (tokens stay increasing without it).
    pub fence: String,
    /// Elections only: the recent terms, newest first, for observers; a long TTL.
    pub history: String,
}

fn lock_keys(namespace: &str, kind: &str, name: &str) -> LockKeys {
    let mut head = object_head(namespace, kind, name);
    head.push('}');
    LockKeys {
        info: format!("{head}:info"),
        fence: format!("{head}:fence"),
        history: format!("{head}:history"),
        holders: head,
    }
}

/// The keys of lock (or semaphore) `name` in `namespace`.
pub fn lock(namespace: &str, name: &str) -> LockKeys {
    lock_keys(namespace, KIND_LOCK, name)
}

/// The keys of election `name` in `namespace`.
pub fn election(namespace: &str, name: &str) -> LockKeys {
    lock_keys(namespace, KIND_ELECTION, name)
}

/// The hash of one session, by the `tag` its ID carries (derived from its subject) and the hash
/// of its ID: `rk1:{<ns>:sess:<tag>}:s:<id hash>`. Sessions of one subject share a slot with
/// their index.
pub fn session(namespace: &str, tag: &str, id_hash: &str) -> String {
    let mut key = object_head(namespace, KIND_SESSION, tag);
    key.push_str("}:s:");
    escape_into(&mut key, id_hash);
    key
}

/// The index of the sessions whose subjects hash to `tag`: a sorted set of
/// `<subject>|<id hash>` scored by expiry (`rk1:{<ns>:sess:<tag>}:u`).
pub fn session_index(namespace: &str, tag: &str) -> String {
    let mut key = object_head(namespace, KIND_SESSION, tag);
    key.push_str("}:u");
    key
}

/// The state of rate-limited `key` in `namespace` under one limit, named by `shape` (the
/// algorithm and its parameters, e.g. `g:10:1000000:10`), so that two limits on one key never
/// share state: `rk1:{<ns>:rl:<key>}:<shape>`. `shape` is made by the server, never by users.
pub fn rate_limit(namespace: &str, key: &str, shape: &str) -> String {
    let mut state = object_head(namespace, KIND_RATE_LIMIT, key);
    state.push_str("}:");
    state.push_str(shape);
    state
}

/// A SCAN `MATCH` pattern for the state of `key` under every limit.
pub fn rate_limit_pattern(namespace: &str, key: &str) -> String {
    let mut pattern = glob_escape(&object_head(namespace, KIND_RATE_LIMIT, key));
    pattern.push_str("}:*");
    pattern
}

/// The pub/sub channel on which every change to a cache entry of `namespace` is announced for
/// near caches (`Cache.Track`): `rk1:cinv:<ns>`. The message is the entry's value key
/// ([`cache_name_from_value_key`] gives back its name), or `<origin>|<value key>` for a Set a
/// near cache marked as its own.
pub fn cache_changes_channel(namespace: &str) -> String {
    let mut channel = String::from("rk1:cinv:");
    escape_into(&mut channel, namespace);
    channel
}

/// The pub/sub channel on which one server replica publishes its near-cache heartbeats, and
/// to which only it subscribes: `rk1:cbeat:<replica>`.
pub fn cache_heartbeat_channel(replica: &str) -> String {
    let mut channel = String::from("rk1:cbeat:");
    escape_into(&mut channel, replica);
    channel
}

/// The prefix of every pub/sub channel of `namespace`: `rk1:ev:<ns>:`. Channel names (and
/// patterns) are restricted to characters with no meaning in keys or globs beyond `*` and `?`,
/// so they follow it unescaped, and patterns stay inside their namespace.
pub fn events_channel_prefix(namespace: &str) -> String {
    let mut prefix = String::from("rk1:ev:");
    escape_into(&mut prefix, namespace);
    prefix.push(':');
    prefix
}

/// Kind of an event stream's keys.
const KIND_STREAM: &str = "st";

/// The keys of event stream `name` in `namespace`: the stream itself (`rk1:{<ns>:st:<name>}`)
/// and, for one idempotency key, the marker of the append it made (same hash tag).
pub fn event_stream(namespace: &str, name: &str, idempotency_key: Option<&str>) -> (String, Option<String>) {
    let mut stream = object_head(namespace, KIND_STREAM, name);
    stream.push('}');
    let marker = idempotency_key.map(|key| event_idempotency_marker(&stream, key));
    (stream, marker)
}

/// The marker of the append that idempotency key `key` made to the stream whose key is
/// `stream` (same hash tag): `<stream>:idem:<key>`.
pub fn event_idempotency_marker(stream: &str, key: &str) -> String {
    let mut marker = format!("{stream}:idem:");
    escape_into(&mut marker, key);
    marker
}

/// The dead-letter stream of the stream whose key is `stream` (same hash tag): entries that
/// were delivered too often move there.
pub fn event_dead_letters(stream: &str) -> String {
    format!("{stream}:dead")
}

/// The settings of every consumer group of the stream whose key is `stream` (same hash tag): a
/// hash with two fields per group (see `events::groups`). One hash per stream, not one per
/// group, so that an append can refresh its idle expiry along with the stream's without
/// knowing the groups; a group's fields go with the group.
pub fn event_groups(stream: &str) -> String {
    format!("{stream}:groups")
}

/// The common head of the keys of consumer group `group` of the stream whose key is `stream`.
fn event_group_head(stream: &str, group: &str) -> String {
    let mut key = format!("{stream}:grp:");
    escape_into(&mut key, group);
    key
}

/// Marks that the stream whose key is `stream` is counted in its namespace's stream index
/// ([`event_stream_index`]) for a while yet (same hash tag; expires by itself, well before the
/// index entry does). An append or group creation that finds no mark registers the stream
/// first, which is how the index learns of new streams without touching another slot.
pub fn event_stream_mark(stream: &str) -> String {
    format!("{stream}:reg")
}

/// Kind of a namespace's stream index.
const KIND_STREAM_INDEX: &str = "streams";

/// The index of `namespace`'s streams, which caps how many it may have: a sorted set of stream
/// names scored by the time (Redis ms) after which each has surely expired unless registered
/// again (`rk1:{<ns>:streams:}`). It has its own hash tag, so on a Cluster it lives in another
/// slot than the streams: it is written in its own round trip, only when a stream is
/// registered.
pub fn event_stream_index(namespace: &str) -> String {
    let mut key = object_head(namespace, KIND_STREAM_INDEX, "");
    key.push('}');
    key
}

/// Marks, for a short while, that some consumer of group `group` of the stream whose key is
/// `stream` has just looked for entries idle past the ack timeout and found them all, so the
/// group's other consumers need not look again yet (same hash tag; expires by itself).
pub fn event_group_expiry_look(stream: &str, group: &str) -> String {
    let mut key = event_group_head(stream, group);
    key.push_str(":look");
    key
}

/// Where the look for entries idle past the ack timeout of group `group` of the stream whose
/// key is `stream` goes on: the last pending entry examined so far (same hash tag; expires by
/// itself, and the next look then starts at the beginning). One look examines a bounded share
/// of the pending list, so a pass over a long list is spread over many looks.
pub fn event_group_scan_cursor(stream: &str, group: &str) -> String {
    let mut key = event_group_head(stream, group);
    key.push_str(":scan");
    key
}

/// The lease of consumer `consumer` of group `group` of the stream whose key is `stream`: the
/// token of the one `Consume` serving that name (same hash tag; expires unless renewed).
pub fn event_consumer_lease(stream: &str, group: &str, consumer: &str) -> String {
    let mut key = event_group_head(stream, group);
    key.push_str(":c:");
    escape_into(&mut key, consumer);
    key
}

/// A key that health reads (EXISTS) to learn whether a Cluster serves its slot, and that
/// nothing ever writes: `rk1:probe:{<n>}`. Outside every namespace (namespaced keys start
/// with `rk1:{`), and the hash tag `<n>` lets health pick one in any master's slots.
pub fn cluster_probe(n: u64) -> String {
    format!("{VERSION}:probe:{{{n}}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn escape(input: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, input);
        out
    }

    /// The hash tag Redis Cluster hashes: the bytes between the first `{` and the next `}`,
    /// when non-empty; otherwise the whole key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    /// Redis's glob matcher (`stringmatchlen`) for `*`, `?`, `\x` and `[...]` without ranges:
    /// enough to check that escaped patterns match literally.
    fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.first() {
            None => text.is_empty(),
            Some(b'*') => (0..=text.len()).any(|i| glob_match(&pattern[1..], &text[i..])),
            Some(b'?') => !text.is_empty() && glob_match(&pattern[1..], &text[1..]),
            Some(b'\\') if pattern.len() > 1 => {
                text.first() == Some(&pattern[1]) && glob_match(&pattern[2..], &text[1..])
            }
            Some(b'[') => {
                let Some(close) = pattern.iter().position(|&b| b == b']') else {
                    return false;
                };
                !text.is_empty()
                    && pattern[1..close].contains(&text[0])
                    && glob_match(&pattern[close + 1..], &text[1..])
            }
            Some(&b) => text.first() == Some(&b) && glob_match(&pattern[1..], &text[1..]),
        }
    }

    fn any_text() -> impl Strategy<Value = String> {
        // Bias towards the characters that matter, plus arbitrary Unicode.
        prop_oneof![proptest::string::string_regex(r"[%{}:*?\[\]\\a-c ]{0,8}").unwrap(), any::<String>(),]
    }

    proptest! {
        #[test]
        fn cache_keys_are_injective(ns1 in any_text(), n1 in any_text(), ns2 in any_text(), n2 in any_text()) {
            prop_assume!((&ns1, &n1) != (&ns2, &n2));
            let (a, b) = (cache(&ns1, &n1), cache(&ns2, &n2));
            prop_assert_ne!(&a.value, &b.value);
            prop_assert_ne!(&a.lease, &b.lease);
            prop_assert_ne!(&a.value, &b.lease);
            prop_assert_ne!(cache_tag(&ns1, &n1), cache_tag(&ns2, &n2));
            prop_assert_ne!(cache_tag(&ns1, &n1), a.value);
        }

        #[test]
        fn a_value_key_gives_back_its_name_in_its_namespace_only(
            ns in any_text(), other_ns in any_text(), name in any_text()
        ) {
            let keys = cache(&ns, &name);
            prop_assert_eq!(cache_name_from_value_key(&ns, &keys.value), Some(name.clone()));
            prop_assert_eq!(cache_name_from_value_key(&ns, &keys.lease), None);
            if other_ns != ns {
                prop_assert_eq!(cache_name_from_value_key(&other_ns, &keys.value), None);
            }
        }

        #[test]
        fn all_keys_of_an_entry_share_one_hash_tag(ns in any_text(), name in any_text()) {
            let keys = cache(&ns, &name);
            let tag = hash_tag(&keys.value);
            prop_assert_eq!(tag, hash_tag(&keys.lease));
            prop_assert_eq!(tag, format!("{}:cache:{}", escape(&ns), escape(&name)));
        }

        #[test]
        fn prefix_pattern_matches_exactly_the_names_with_that_prefix(
            ns in any_text(), other_ns in any_text(), prefix in any_text(), name in any_text()
        ) {
            let pattern = cache_prefix_pattern(&ns, &prefix);
            let keys = cache(&ns, &name);
            let expected = name.starts_with(&prefix);
            prop_assert_eq!(glob_match(pattern.as_bytes(), keys.value.as_bytes()), expected);
            prop_assert_eq!(glob_match(pattern.as_bytes(), keys.lease.as_bytes()), expected);
            if other_ns != ns {
                let foreign = cache(&other_ns, &name);
                prop_assert!(!glob_match(pattern.as_bytes(), foreign.value.as_bytes()));
            }
            prop_assert!(!glob_match(pattern.as_bytes(), cache_tag(&ns, &name).as_bytes()));
        }

        #[test]
        fn scanned_keys_map_back_to_their_entry(ns in any_text(), name in any_text()) {
            let keys = cache(&ns, &name);
            prop_assert_eq!(cache_keys_from_scanned(&keys.value), Some(keys.clone()));
            prop_assert_eq!(cache_keys_from_scanned(&keys.lease), Some(keys));
        }

        #[test]
        fn lock_keys_are_injective_and_share_one_hash_tag(
            ns1 in any_text(), n1 in any_text(), ns2 in any_text(), n2 in any_text()
        ) {
            let keys = [lock(&ns1, &n1), election(&ns1, &n1), lock(&ns2, &n2), election(&ns2, &n2)];
            for k in &keys {
                let tag = hash_tag(&k.holders);
                for part in [&k.info, &k.fence, &k.history] {
                    prop_assert_eq!(hash_tag(part), tag);
                }
            }
            // A lock and an election of the same name never share keys, nor do two names.
            let distinct = if (&ns1, &n1) == (&ns2, &n2) { 2 } else { 4 };
            let all: std::collections::HashSet<&String> = keys[..distinct]
                .iter()
                .flat_map(|k| [&k.holders, &k.info, &k.fence, &k.history])
                .collect();
            prop_assert_eq!(all.len(), distinct * 4);
            prop_assert_ne!(&keys[0].holders, &cache(&ns1, &n1).value);
        }

        #[test]
        fn session_keys_share_their_tag_and_are_injective(
            ns1 in any_text(), t1 in any_text(), h1 in any_text(), ns2 in any_text(), t2 in any_text(), h2 in any_text()
        ) {
            let (key, index) = (session(&ns1, &t1, &h1), session_index(&ns1, &t1));
            prop_assert_eq!(hash_tag(&key), hash_tag(&index));
            if (&ns1, &t1, &h1) != (&ns2, &t2, &h2) {
                prop_assert_ne!(session(&ns1, &t1, &h1), session(&ns2, &t2, &h2));
            }
            prop_assert_ne!(session(&ns1, &t1, &h1), session_index(&ns2, &t2));
        }

        #[test]
        fn stream_keys_share_their_tag_and_are_injective(
            ns1 in any_text(), s1 in any_text(), g1 in any_text(), i1 in any_text(),
            ns2 in any_text(), s2 in any_text(), g2 in any_text(), i2 in any_text()
        ) {
            let of = |ns: &str, s: &str, g: &str, i: &str| {
                let (stream, marker) = event_stream(ns, s, Some(i));
                let (dead, groups) = (event_dead_letters(&stream), event_groups(&stream));
                let look = event_group_expiry_look(&stream, g);
                let lease = event_consumer_lease(&stream, g, i);
                let mark = event_stream_mark(&stream);
                let scan = event_group_scan_cursor(&stream, g);
                [stream, marker.unwrap(), dead, groups, look, lease, mark, scan]
            };
            let (a, b) = (of(&ns1, &s1, &g1, &i1), of(&ns2, &s2, &g2, &i2));
            for key in &a[1..] {
                prop_assert_eq!(hash_tag(key), hash_tag(&a[0]));
            }
            let all: std::collections::HashSet<&String> = a.iter().chain(&b).collect();
            let same_stream = (&ns1, &s1) == (&ns2, &s2);
            // The lease names a consumer (here `i`, standing in for any name) of a group.
            let expected = if !same_stream {
                16
            } else {
                8 + usize::from(i1 != i2) + 2 * usize::from(g1 != g2) + usize::from(g1 != g2 || i1 != i2)
            };
            prop_assert_eq!(all.len(), expected);
            // A namespace's stream index is no stream key of any namespace.
            let index = event_stream_index(&ns1);
            prop_assert!(!all.contains(&index));
            prop_assert_eq!(index == event_stream_index(&ns2), ns1 == ns2);
        }

        #[test]
        fn glob_escape_matches_itself_only(text in any_text(), other in any_text()) {
            let pattern = glob_escape(&text);
            prop_assert!(glob_match(pattern.as_bytes(), text.as_bytes()));
            prop_assert_eq!(glob_match(pattern.as_bytes(), other.as_bytes()), text == other);
        }
    }

    #[test]
    fn key_shape_is_readable() {
        let keys = cache("team-a", "user:42");
        assert_eq!(keys.value, "rk1:{team-a:cache:user%3A42}");
        assert_eq!(keys.lease, "rk1:{team-a:cache:user%3A42}:lease");
        assert_eq!(cache_tag("team-a", "users"), "rk1:{team-a:ctag:users}");
        let tag = cache_tag_keys("team-a", "users");
        assert_eq!(tag.head, "rk1:{team-a:ctag:users}:head");
        assert_eq!(tag.buckets, "rk1:{team-a:ctag:users}:buckets");
        assert_eq!(tag.bucket(7), "rk1:{team-a:ctag:users}:b:7");
        assert_eq!(cache_prefix_pattern("team-a", "a*"), "rk1:{team-a:cache:a%2A*");
        assert_eq!(lock("team-a", "jobs").fence, "rk1:{team-a:lock:jobs}:fence");
        assert_eq!(election("team-a", "jobs").holders, "rk1:{team-a:elect:jobs}");
        assert_eq!(session("team-a", "0a1b2c3d", "h-_"), "rk1:{team-a:sess:0a1b2c3d}:s:h-_");
        assert_eq!(session_index("team-a", "0a1b2c3d"), "rk1:{team-a:sess:0a1b2c3d}:u");
        assert_eq!(
            rate_limit("team-a", "ip:1.2.3.4", "g:5:1000:5"),
            "rk1:{team-a:rl:ip%3A1.2.3.4}:g:5:1000:5"
        );
        assert_eq!(events_channel_prefix("team:a"), "rk1:ev:team%3Aa:");
        assert_eq!(rate_limit_pattern("team-a", "a*"), "rk1:{team-a:rl:a%2A}:*");
        let (stream, _) = event_stream("team-a", "orders", None);
        assert_eq!(stream, "rk1:{team-a:st:orders}");
        assert_eq!(event_groups(&stream), "rk1:{team-a:st:orders}:groups");
        assert_eq!(event_stream_mark(&stream), "rk1:{team-a:st:orders}:reg");
        assert_eq!(event_stream_index("team-a"), "rk1:{team-a:streams:}");
    }
}
