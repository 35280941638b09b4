#!lua flags=no-writes
-- Lock.Inspect and Lock.Observe: read a lock's or election's state without changing it.
--
-- no-writes: a read, so it runs at maxmemory too.
--
-- KEYS[1]  holders: sorted set, token -> lease expiry (ms)
-- KEYS[2]  info: hash, token -> "fence:acquired_ms:owner", and '#limit'
-- KEYS[3]  fence: the last fencing token granted
-- KEYS[4]  history: recent terms, newest first (elections)
--
-- Returns {now_ms, last_fence, limit, {details, expires_ms, ...}, {term, ...}}: the live
-- holders' grant details (never their tokens) with lease expiries, and the recent terms.
local _, now = clock()
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. int(now), '+inf', 'WITHSCORES')
local holders = {}
for i = 1, #live, 2 do
  holders[#holders + 1] = redis.call('HGET', KEYS[2], live[i]) or '0:0:'
  holders[#holders + 1] = tonumber(live[i + 1])
end
local limit = 0
if #live > 0 then
  limit = tonumber(redis.call('HGET', KEYS[2], '#limit') or '1')
end
local last_fence = tonumber(redis.call('GET', KEYS[3]) or '0')
return {now, last_fence, limit, holders, redis.call('LRANGE', KEYS[4], 0, -1)}
