#!lua flags=allow-oom
-- Lock.Extend (and Hold's renewals): move a live lease's expiry to now + TTL.
--
-- allow-oom: it only moves an existing lease's expiry (memory steady), so leases stay renewable
-- at maxmemory.
--
-- KEYS[1]  holders: sorted set, token -> lease expiry (ms)
-- KEYS[2]  info: hash of grant details
-- ARGV[1]  token of the holder
-- ARGV[2]  new TTL in ms, from now
--
-- Returns {1, expires_ms, now_ms} if the lease was live and is extended, {0} if it was not.
local _, now = clock()
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires or tonumber(expires) <= now then
  prune(KEYS[1], KEYS[2], now)
  return {0}
end
local new_expiry = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', int(new_expiry), ARGV[1])
keep_until_last_lease(KEYS[1], KEYS[2])
return {1, new_expiry, now}
