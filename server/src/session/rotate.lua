#!lua
-- Session.Rotate: move a session to a new ID; the old ID is deleted, or left as a forwarding
-- alias for a grace period.
--
-- Grows memory (the new ID, an alias): refused whole while Redis is over maxmemory.
--
-- KEYS[1]  the session's hash under its old ID
-- KEYS[2]  the session's hash under its new ID
-- KEYS[3]  the index of the sessions' hash tag
-- ARGV[1]  old ID hash
-- ARGV[2]  new ID hash
-- ARGV[3]  grace period in ms (0: none)
--
-- Returns 1 if rotated, 0 if there was no such session (an alias is not rotated again).
local subject = redis.call('HGET', KEYS[1], 'sub')
if not subject then
  return 0
end
local pttl = redis.call('PTTL', KEYS[1])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], subject .. '|' .. ARGV[1])
-- Indexed under the new ID at its expiry (also if its entry was pruned at the expiry instant).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + pttl
redis.call('ZADD', KEYS[3], string.format('%.0f', expiry), subject .. '|' .. ARGV[2])
if redis.call('PTTL', KEYS[3]) < pttl then
  redis.call('PEXPIREAT', KEYS[3], string.format('%.0f', expiry))
end
local grace = math.min(tonumber(ARGV[3]), pttl)
if grace > 0 then
  redis.call('HSET', KEYS[1], 'to', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], grace)
end
return 1
