#!lua
-- Events.CreateGroup (and Consume with create_group): create a consumer group and store its
-- settings, within the stream's cap on groups, and start the idle expiry of the stream and
-- its companions again.
--
-- Grows memory: refused whole while Redis is over maxmemory.
--
-- KEYS[1]  the stream (created empty if it does not exist)
-- KEYS[2]  its groups' settings hash
-- KEYS[3]  the stream's registration mark (see append.lua)
-- KEYS[4]  its dead-letter stream
-- ARGV[1]  the group
-- ARGV[2]  where it starts: '0' (the first entry), '$' (new entries) or an entry ID
-- ARGV[3]  ack timeout in ms
-- ARGV[4]  delivery limit (0: none)
-- ARGV[5]  the settings hash's field for the ack timeout of this group
-- ARGV[6]  the settings hash's field for the delivery limit of this group
-- ARGV[7]  the idle TTL, in ms
-- ARGV[8]  '1' when the caller has just registered the stream (set the mark), else '0'
-- ARGV[9]  how long the registration mark lives, in ms (0: set none)
-- ARGV[10] most groups the stream may have
--
-- Returns 1 when the group was created, 0 when it existed (its settings are left as they
-- are), -1 (having written nothing) when the stream must be registered first (see
-- append.lua), -2 when the stream has as many groups as it may.
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists then
  local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
  local names = {}
  for _, group in ipairs(groups) do
    for i = 1, #group, 2 do
      if group[i] == 'name' then
        names[group[i + 1]] = true
      end
    end
  end
  if names[ARGV[1]] then
    return 0
  end
  if #groups >= tonumber(ARGV[10]) then
    return -2
  end
end
if ARGV[8] == '1' then
  if ARGV[9] ~= '0' then
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[9])
  end
elseif redis.call('EXISTS', KEYS[3]) == 0 then
  return -1
end
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
redis.call('HSET', KEYS[2], ARGV[5], ARGV[3], ARGV[6], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('PEXPIRE', KEYS[4], ARGV[7])
return 1
