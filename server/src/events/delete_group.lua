-- Events.DeleteGroup: delete a consumer group, its pending entries and its settings.
--
-- KEYS[1]  the stream
-- KEYS[2]  the group's settings hash
-- ARGV[1]  the group
--
-- Returns 1 when the group existed.
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
return redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
