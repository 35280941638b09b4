-- Cache.Set: conditional write that cancels any outstanding lease on the entry, so a loader
-- holding older data cannot overwrite it, and wakes Fetch callers waiting for the entry. The
-- change is announced in the same script, so no near cache's heartbeat can overtake it.
--
-- KEYS[1]  value key of the entry
-- KEYS[2]  lease key of the entry
-- ARGV[1]  value
-- ARGV[2]  TTL in milliseconds
-- ARGV[3]  condition: "" (always), "NX" (only if absent) or "XX" (only if present)
-- ARGV[4]  wake channel
-- ARGV[5]  the namespace's changes channel (near caches), told of every write
-- ARGV[6]  the writer's origin mark ("0": none), sent with the change as "<origin>|<key>"
--
-- Returns 1 if the value was written, 0 if the condition was not met.
local written
if ARGV[3] == '' then
  written = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  written = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], ARGV[3])
end
if not written then
  return 0
end
if ARGV[6] == '0' then
  redis.call('PUBLISH', ARGV[5], KEYS[1])
else
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. '|' .. KEYS[1])
end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PUBLISH', ARGV[4], KEYS[1])
end
return 1
