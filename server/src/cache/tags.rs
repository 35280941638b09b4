//! Tag indexes of the Cache: recording the entries written with a tag, and invalidating
//! them.
//!
//! A tag's index is split into buckets of at most [`TAG_BUCKET`] names (see `tag.lua` and
//! `redis::keys::CacheTagKeys`), so no key of it grows with what a namespace stores and none
//! is freed in one long step. Each replica remembers which bucket each tag is filling, so a
//! tagged write stays one script call.

use std::time::Duration;

use redis::FromRedisValue;

use super::Cache;
use crate::convert::millis;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::redis::keys;
use crate::redis::scripts::{self, evalsha};
use crate::redis::timed;

/// Entries popped from a tag index per round trip during invalidation.
const TAG_POP_BATCH: usize = 500;
/// Most entry names in one bucket of a tag index (freeing or filling one: well under a
/// millisecond of Redis's time).
pub const TAG_BUCKET: usize = 1000;
/// Buckets listed per ZSCAN round trip during invalidation.
const TAG_BUCKETS_PER_SCAN: usize = 100;
/// Tags whose bucket being filled a replica remembers; past this, it forgets them all (a
/// forgotten tag costs one more round trip at its next write).
const TAG_HEADS_REMEMBERED: usize = 10_000;

impl Cache {
    /// Builds the script call recording `names` (at most [`TAG_BUCKET`]) in bucket `head` of
    /// `tag`'s index, or the next one, for at least `ttl`.
    fn tag_command(tag: &keys::CacheTagKeys, head: u64, names: &[&str], ttl: Duration) -> redis::Cmd {
        let mut cmd = evalsha(
            &scripts::CACHE_TAG,
            &[&tag.head, &tag.buckets, &tag.bucket(head), &tag.bucket(head + 1)],
        );
        cmd.arg(millis(ttl)).arg(head).arg(TAG_BUCKET).arg(names);
        cmd
    }

    fn tag_head(&self, tag: &keys::CacheTagKeys) -> u64 {
        let heads = self.tag_heads.lock().unwrap_or_else(|e| e.into_inner());
        heads.get(&tag.head).copied().unwrap_or(0)
    }

    fn remember_tag_head(&self, tag: &keys::CacheTagKeys, head: u64) {
        let mut heads = self.tag_heads.lock().unwrap_or_else(|e| e.into_inner());
        if heads.len() >= TAG_HEADS_REMEMBERED && !heads.contains_key(&tag.head) {
            heads.clear();
        }
        heads.insert(tag.head.clone(), head);
    }

    pub(super) async fn record_tags(
        &self,
        ns: &Namespace,
        tags: &[String],
        names: &[&str],
        ttl: Duration,
    ) -> Result<()> {
        if tags.is_empty() || names.is_empty() {
            return Ok(());
        }
        // One script call per tag and chunk of at most a bucket's worth of names, all in one
        // round trip; a call that finds another bucket being filled than this replica believed
        // writes nothing and is sent again for that bucket.
        let mut pending: Vec<(keys::CacheTagKeys, &[&str])> = Vec::new();
        for tag in tags {
            let tag = keys::cache_tag_keys(ns.as_str(), tag);
            for chunk in names.chunks(TAG_BUCKET) {
                pending.push((tag.clone(), chunk));
            }
        }
        // Each round either records a call or learns the current bucket; a bounded number of
        // rounds covers buckets opened concurrently by other replicas.
        for _ in 0..8 {
            if pending.is_empty() {
                return Ok(());
            }
            let heads: Vec<u64> = pending.iter().map(|(tag, _)| self.tag_head(tag)).collect();
            let cmds: Vec<redis::Cmd> = pending
                .iter()
                .zip(&heads)
                .map(|((tag, chunk), &head)| Self::tag_command(tag, head, chunk, ttl))
                .collect();
            let replies = timed("cache.tag", scripts::run_batch(&self.redis, &cmds, &[&scripts::CACHE_TAG]))
                .await
                .map_err(Error::from_write)?;
            let mut again = Vec::new();
            for (reply, (tag, chunk)) in replies.into_iter().zip(pending) {
                let reply = reply.map_err(Error::from_write)?;
                let (recorded, head): (u8, u64) =
                    FromRedisValue::from_redis_value(reply).map_err(redis::RedisError::from)?;
                self.remember_tag_head(&tag, head);
                if recorded != 1 {
                    again.push((tag, chunk));
                }
            }
            pending = again;
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "tag indexes kept changing under concurrent writes; the values were written but may \
                 be missing from their tags. Write them again"
                    .into(),
            ))
        }
    }

    /// Pops the tag's index, bucket by bucket, in batches (SPOP is atomic, so an entry tagged
    /// concurrently is either popped and deleted now or stays indexed for the next
    /// invalidation) and deletes each popped entry. Every command is bounded: ZSCAN lists a
    /// few buckets at a time, SPOP takes [`TAG_POP_BATCH`] names. Buckets opened after the
    /// listing began hold entries written after the invalidation began; they stay indexed.
    pub(super) async fn invalidate_tag(&self, ns: &Namespace, tag: &str) -> Result<u64> {
        let index = keys::cache_tag_keys(ns.as_str(), tag);
        // The single set of an earlier version, while one may still live.
        let mut removed = self.pop_and_delete(ns, &keys::cache_tag(ns.as_str(), tag)).await?;
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("ZSCAN");
            scan.arg(&index.buckets).arg(cursor).arg("COUNT").arg(TAG_BUCKETS_PER_SCAN);
            let (next, listed): (u64, Vec<String>) =
                timed("cache.invalidate_tag", scan.query_async(&mut self.redis.conn()))
                    .await
                    .map_err(Error::from_write)?;
            // Members and scores alternate; members are bucket numbers.
            for bucket in listed.iter().step_by(2).filter_map(|n| n.parse::<u64>().ok()) {
                removed += self.pop_and_delete(ns, &index.bucket(bucket)).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Empties one set of entry names, [`TAG_POP_BATCH`] at a time, deleting the entries.
    async fn pop_and_delete(&self, ns: &Namespace, set: &str) -> Result<u64> {
        let mut removed = 0;
        loop {
            let mut conn = self.redis.conn();
            let names: Vec<String> = timed(
                "cache.invalidate_tag",
                redis::cmd("SPOP").arg(set).arg(TAG_POP_BATCH).query_async(&mut conn),
            )
            .await
            .map_err(Error::from_write)?;
            if names.is_empty() {
                return Ok(removed);
            }
            removed += self
                .delete_entries(ns, names.iter().map(|name| keys::cache(ns.as_str(), name)).collect())
                .await?;
        }
    }
}
