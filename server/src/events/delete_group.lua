#!lua flags=allow-oom
-- Events.DeleteGroup: delete a consumer group, its pending entries and its settings.
--
-- allow-oom: it only deletes, so groups can be removed at maxmemory.
--
-- KEYS[1]  the stream
-- KEYS[2]  its groups' settings hash
-- ARGV[1]  the group
-- ARGV[2]  the settings hash's field for the ack timeout of this group
-- ARGV[3]  the settings hash's field for the delivery limit of this group
--
-- Returns 1 when the group existed.
redis.call('HDEL', KEYS[2], ARGV[2], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
return redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
