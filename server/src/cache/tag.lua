-- Record cache entries under a tag, keeping the tag index alive at least as long as the
-- longest-lived entry recorded, so the index always has a TTL and never outlives its use by
-- more than one entry TTL.
--
-- KEYS[1]  tag index (a set of entry names)
-- ARGV[1]  TTL in milliseconds of the longest-lived entry being recorded
-- ARGV[2…] entry names
--
-- Returns the number of names newly added.
local added = 0
-- SADD in chunks: unpack() of thousands of arguments would overflow Lua's stack.
for first = 2, #ARGV, 1000 do
  added = added + redis.call('SADD', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
local ttl = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return added
