#!lua flags=allow-oom
-- Session.DeleteBySubject: end every session of a subject, atomically.
--
-- allow-oom: it only deletes, so sessions can end at maxmemory.
--
-- The caller first reads the index and names every session of the subject it found; this
-- script deletes them only if that list is still complete, so a session created or rotated in
-- between is never missed (the caller reads again and retries).
--
-- KEYS[1]     the index of the subject's hash tag
-- KEYS[2..]   the session hashes the caller found
-- ARGV[1]     subject
-- ARGV[2..]   the ID hashes of KEYS[2..], in the same order
--
-- Returns the number of sessions deleted, or -1 if the subject has a session not named.
local subject = ARGV[1]
local named = {}
for i = 2, #ARGV do
  named[subject .. '|' .. ARGV[i]] = true
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A key lives through its expiry millisecond: prune only entries that ended before now.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, -45) == subject and not named[member] then
    return -1
  end
end
local deleted = 0
for i = 2, #KEYS do
  deleted = deleted + redis.call('DEL', KEYS[i])
  redis.call('ZREM', KEYS[1], subject .. '|' .. ARGV[i])
end
return deleted
