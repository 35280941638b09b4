#!lua
-- Lock.Acquire: grant a lease on a lock, semaphore or election if a permit is free, atomically.
--
-- Grows memory (a holder, a fence): refused whole while Redis is over maxmemory.
--
-- KEYS[1]  holders: sorted set, token -> lease expiry (ms)
-- KEYS[2]  info: hash, token -> "fence:acquired_ms:owner", '#limit' -> permits, and
--          '#waited' once a caller was told to wait (releases then announce themselves)
-- KEYS[3]  fence: the last fencing token granted
-- KEYS[4]  history: list of recent terms "fence:acquired_ms:owner", newest first (written
--          only when ARGV[5] is set)
-- ARGV[1]  token of the new holder
-- ARGV[2]  lease TTL in ms
-- ARGV[3]  permits (1 for a mutual-exclusion lock)
-- ARGV[4]  owner label
-- ARGV[5]  channel to announce the grant on (elections, for observers), or '' for none
-- ARGV[6]  TTL in ms of the fence and history keys
-- ARGV[7]  '1' if other callers wait for this lock on the caller's replica: a grant then keeps
--          releases announced, although the caller itself no longer waits
-- ARGV[8]  '1' if the caller will wait when told the lock is held (then releases announce
--          themselves until the lock is free)
--
-- Fencing tokens: max(last + 1, Redis time in us). While the fence key survives, tokens
-- increase by construction; if Redis lost it, the clock still puts the new token above every
-- token granted before (each was at most its grant time, as grants are far fewer than one per
-- microsecond), unless Redis's clock went back.
--
-- Idempotent per token: run again with the token of a live grant, it answers that grant.
--
-- Returns one of
--   {1, fence, expires_ms, now_ms, free}   granted; `free` permits are left
--   {0, wait_ms}                     no permit free; the earliest lease ends in wait_ms
--   {-1, limit}                      held with a different number of permits
local us, now = clock()
local limit = tonumber(ARGV[3])
prune(KEYS[1], KEYS[2], now)
local count = redis.call('ZCARD', KEYS[1])
-- The token already holds a live lease: this is the same request run again (a Cluster client
-- re-sends a command that was in flight when its master's connection dropped, and the first
-- copy had run and replicated). Answer with that grant, its lease restarted, rather than
-- "held" while the caller's own grant lingers until its TTL.
local mine = redis.call('HGET', KEYS[2], ARGV[1])
if mine and redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local expires = now + tonumber(ARGV[2])
  redis.call('ZADD', KEYS[1], 'XX', int(expires), ARGV[1])
  keep_until_last_lease(KEYS[1], KEYS[2])
  return {1, tonumber(string.match(mine, '^(%d+):')), expires, now, math.max(limit - count, 0)}
end
if count > 0 then
  local held_limit = tonumber(redis.call('HGET', KEYS[2], '#limit'))
  if held_limit and held_limit ~= limit then
    return {-1, held_limit}
  end
  if count >= limit then
    -- The caller will wait: from now until the lock is free, releases wake waiters.
    if ARGV[8] == '1' then
      redis.call('HSET', KEYS[2], '#waited', 1)
    end
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, tonumber(first[2]) - now}
  end
end
local fence = math.max(tonumber(redis.call('GET', KEYS[3]) or '0') + 1, us)
local expires = now + tonumber(ARGV[2])
local term = int(fence) .. ':' .. int(now) .. ':' .. ARGV[4]
redis.call('SET', KEYS[3], int(fence), 'PX', ARGV[6])
redis.call('ZADD', KEYS[1], int(expires), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], term, '#limit', ARGV[3])
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[2], '#waited', 1)
end
keep_until_last_lease(KEYS[1], KEYS[2])
if ARGV[5] ~= '' then
  redis.call('LPUSH', KEYS[4], term)
  redis.call('LTRIM', KEYS[4], 0, 15)
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
  redis.call('PUBLISH', ARGV[5], KEYS[1])
end
return {1, fence, expires, now, limit - count - 1}
