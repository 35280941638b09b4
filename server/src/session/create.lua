#!lua
-- Session.Create: store a new session with its expiry and its subject index entry, atomically,
-- keeping the subject within its cap on live sessions.
--
-- Grows memory: refused whole while Redis is over maxmemory. (Without this line Redis checked
-- only the first write, the index pruning, which needs no memory, and then let the rest write.)
--
-- KEYS[1]  the new session's hash
-- KEYS[2]  the index of the subject's hash tag: sorted set, "<subject>|<id hash>" -> expiry (ms)
-- KEYS[3]  the session to evict (named by the previous attempt), or KEYS[2] again when none
-- ARGV[1]  subject
-- ARGV[2]  the new session's ID hash (43 characters)
-- ARGV[3]  idle timeout in ms
-- ARGV[4]  absolute timeout in ms
-- ARGV[5]  the subject's cap on live sessions
-- ARGV[6]  'refuse' or 'evict': what to do at the cap
-- ARGV[7]  ID hash of the session to evict (from the previous attempt), or ''
-- ARGV[8..] attribute names (prefixed '.') and values, alternating
--
-- A session hash holds 'sub', 'v' (version), 'c' (created ms), 'abs' (absolute expiry ms),
-- 'idle' (idle timeout ms) and the attributes; its TTL is its idle expiry, never past 'abs'.
--
-- Returns one of
--   {1, idle_expiry_ms, absolute_expiry_ms, evicted}   created
--   {0, id_hash, evicted}   at the cap: call again naming this least recently used session
--   {-1}             at the cap, and the policy refuses
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local subject = ARGV[1]
-- A key lives through its expiry millisecond: prune only entries that ended before now.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
local evicted = 0
if ARGV[7] ~= '' then
  local victim = subject .. '|' .. ARGV[7]
  if redis.call('ZREM', KEYS[2], victim) == 1 then
    redis.call('DEL', KEYS[3])
    evicted = 1
  end
end
-- Least recently active first.
local mine = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if string.sub(member, 1, -45) == subject then
    mine[#mine + 1] = member
  end
end
if #mine >= tonumber(ARGV[5]) then
  if ARGV[6] == 'refuse' then
    return {-1}
  end
  return {0, string.sub(mine[1], -43), evicted}
end
local absolute = now + tonumber(ARGV[4])
local expiry = math.min(now + tonumber(ARGV[3]), absolute)
redis.call('HSET', KEYS[1], 'sub', subject, 'v', 1, 'c', string.format('%.0f', now),
  'abs', string.format('%.0f', absolute), 'idle', ARGV[3], unpack(ARGV, 8))
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', expiry))
redis.call('ZADD', KEYS[2], string.format('%.0f', expiry), subject .. '|' .. ARGV[2])
if redis.call('PTTL', KEYS[2]) < expiry - now then
  redis.call('PEXPIREAT', KEYS[2], string.format('%.0f', expiry))
end
return {1, expiry, absolute, evicted}
