#!lua flags=allow-oom
-- Lock.Release: end a live lease, and wake the lock's waiters and observers if it has any.
--
-- allow-oom: it only removes a holder (and publishes), so a lease can end at maxmemory.
--
-- KEYS[1]  holders: sorted set, token -> lease expiry (ms)
-- KEYS[2]  info: hash of grant details
-- ARGV[1]  token of the holder
-- ARGV[2]  channel on which to announce the release
-- ARGV[3]  '1' to announce every release (elections, for observers); otherwise a release is
--          announced only if someone was told to wait since the lock was last free
--
-- Returns 1 if the token held a live lease, now released; 0 if it did not (expired, unknown).
local _, now = clock()
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
prune(KEYS[1], KEYS[2], now)
if not expires or tonumber(expires) <= now then
  return 0
end
local announce = ARGV[3] == '1' or redis.call('HEXISTS', KEYS[2], '#waited') == 1
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
keep_until_last_lease(KEYS[1], KEYS[2])
if announce then
  redis.call('PUBLISH', ARGV[2], KEYS[1])
end
return 1
