#!lua
-- Cache.Set, SetMany and Fill with tags: record entry names in one tag's index, a bucket of
-- bounded size at a time, keeping every key of the index alive at least as long as the
-- longest-lived entry recorded in it, so the index always has a TTL and never outlives its use
-- by more than one entry TTL.
--
-- Why buckets: one set of every entry of a tag grows with what a namespace stores, and Redis
-- frees an expiring set in one step (a set of 200,000 names held every namespace's calls for
-- about 70 ms). A bucket holds at most ARGV[3] names, so freeing one costs a bounded time.
--
-- Grows memory (its first write, a ZREM of expired buckets, is one Redis would not check for
-- memory): refused whole while Redis is over maxmemory, as the write it records tags for is.
--
-- KEYS[1]  the tag's head: the number of the bucket being filled (absent: 0)
-- KEYS[2]  the tag's live buckets: sorted set, bucket number -> time (Redis ms) it expires
-- KEYS[3]  bucket number ARGV[2]
-- KEYS[4]  bucket number ARGV[2] + 1
-- ARGV[1]  TTL in milliseconds of the longest-lived entry being recorded
-- ARGV[2]  the number of the bucket the caller believes is being filled
-- ARGV[3]  most names in one bucket
-- ARGV[4…] entry names (at most ARGV[3] of them)
--
-- Returns {1, head} when the names were recorded, or {0, head} (nothing written) when bucket
-- ARGV[2] is not the one being filled: the caller asks again with `head`.
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[2])
if head ~= n then
  return {0, head}
end
local ttl = tonumber(ARGV[1])
local capacity = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Forget a few buckets that have expired (a bounded step per call; the list of buckets has one
-- member per ARGV[3] names recorded within the longest TTL, and expires with the tag).
local gone = redis.call('ZRANGE', KEYS[2], '-inf', '(' .. string.format('%.0f', now), 'BYSCORE', 'LIMIT', 0, 8)
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
end

-- Adds ARGV[first..last] to bucket `key` (number `number`) and lists it with its expiry.
local function add(key, number, first, last)
  -- SADD in chunks: unpack() of thousands of arguments would overflow Lua's stack.
  for i = first, last, 1000 do
    redis.call('SADD', key, unpack(ARGV, i, math.min(i + 999, last)))
  end
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
  local expires = now + redis.call('PTTL', key)
  redis.call('ZADD', KEYS[2], 'GT', string.format('%.0f', expires), number)
end

local last = #ARGV
-- Names 4..split fill the current bucket; the rest open the next one.
local split = math.min(last, 3 + math.max(capacity - redis.call('SCARD', KEYS[3]), 0))
if split >= 4 then
  add(KEYS[3], n, 4, split)
end
if split < last then
  add(KEYS[4], n + 1, split + 1, last)
  head = n + 1
end
redis.call('SET', KEYS[1], head, 'KEEPTTL')
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return {1, head}
