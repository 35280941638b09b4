#!lua flags=allow-oom
-- Cache.Delete / Cache.Invalidate of one entry: delete the value and cancel its lease (a fill
-- in flight may carry data older than the deletion), waking waiters if there was a lease.
--
-- allow-oom: it only deletes (and publishes), so entries can be removed at maxmemory.
--
-- KEYS[1]  value key of the entry
-- KEYS[2]  lease key of the entry
-- ARGV[1]  wake channel
-- ARGV[2]  the namespace's changes channel (near caches), told even when the value was gone
--          already (a near cache may still hold a value Redis evicted)
--
-- Returns 1 if the value existed, else 0. UNLINK: Redis frees a large value in the background
-- instead of holding every namespace's commands while it does.
local deleted = redis.call('UNLINK', KEYS[1])
redis.call('PUBLISH', ARGV[2], KEYS[1])
if redis.call('UNLINK', KEYS[2]) == 1 then
  redis.call('PUBLISH', ARGV[1], KEYS[1])
end
return deleted
