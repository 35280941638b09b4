#!lua flags=allow-oom
-- Events.Consume, at its end: forget a consumer that has nothing pending, so that consumers
-- that come and go do not pile up in the group.
--
-- allow-oom: it only deletes, so a leaving consumer is forgotten at maxmemory too.
--
-- KEYS[1]  the stream
-- KEYS[2]  the consumer's lease
-- ARGV[1]  the group
-- ARGV[2]  the consumer
-- ARGV[3]  the leaving Consume's lease token
--
-- Returns 1 when the consumer was deleted. Its lease goes in any case, if it is still this
-- Consume's.
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if type(pending) ~= 'table' or pending.err or #pending > 0 then
  return 0
end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) >= 0 and 1 or 0
