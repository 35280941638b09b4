#!lua flags=allow-oom
-- Cache.Delete / Cache.Invalidate of one entry: delete the value and cancel its lease (a fill
-- in flight may carry data older than the deletion), waking waiters if there was a lease.
--
-- allow-oom: it only deletes (and publishes), so entries can be removed at maxmemory.
--
-- KEYS[1]  value key of the entry
-- KEYS[2]  lease key of the entry
-- ARGV[1]  wake channel
--
-- Returns 1 if the value existed, else 0.
local deleted = redis.call('DEL', KEYS[1])
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PUBLISH', ARGV[1], KEYS[1])
end
return deleted
