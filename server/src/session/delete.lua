#!lua flags=allow-oom
-- Session.Delete: end one session and drop it from its subject index.
--
-- allow-oom: it only deletes, so sessions can end at maxmemory.
--
-- KEYS[1]  the session's hash
-- KEYS[2]  the index of the session's hash tag
-- ARGV[1]  the session's ID hash
--
-- Returns one of
--   {1}            deleted
--   {2, id_hash}   the ID was rotated and is in its grace period: delete that one (and this alias)
--   {0}            no such session
local current = redis.call('HMGET', KEYS[1], 'sub', 'to')
if current[2] then
  redis.call('DEL', KEYS[1])
  return {2, current[2]}
end
if not current[1] then
  return {0}
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], current[1] .. '|' .. ARGV[1])
return {1}
