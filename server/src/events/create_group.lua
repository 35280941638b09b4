-- Events.CreateGroup (and Consume with create_group): create a consumer group and store its
-- settings.
--
-- KEYS[1]  the stream (created empty if it does not exist)
-- KEYS[2]  the group's settings hash
-- ARGV[1]  the group
-- ARGV[2]  where it starts: '0' (the first entry), '$' (new entries) or an entry ID
-- ARGV[3]  ack timeout in ms
-- ARGV[4]  delivery limit (0: none)
--
-- Returns 1 when the group was created, 0 when it existed (its settings are left as they are).
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(created) == 'table' and created.err then
  if string.find(created.err, 'BUSYGROUP', 1, true) then
    return 0
  end
  return redis.error_reply(created.err)
end
redis.call('HSET', KEYS[2], 'ack_timeout_ms', ARGV[3], 'max_deliveries', ARGV[4])
return 1
