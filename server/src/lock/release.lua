-- Lock.Release: end a live lease, and wake the lock's waiters and observers.
--
-- KEYS[1]  holders: sorted set, token -> lease expiry (ms)
-- KEYS[2]  info: hash of grant details
-- ARGV[1]  token of the holder
-- ARGV[2]  channel on which to announce the release
--
-- Returns 1 if the token held a live lease, now released; 0 if it did not (expired, unknown).
local _, now = clock()
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
prune(KEYS[1], KEYS[2], now)
if not expires or tonumber(expires) <= now then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
keep_until_last_lease(KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[2], KEYS[1])
return 1
