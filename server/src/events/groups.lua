-- Shared by the consumer-group scripts (scripts.rs puts it into each of them, after the
-- script's flags line).
--
-- Every script using it takes KEYS[1] = the stream and KEYS[2] = its dead-letter stream.

-- How many times entry `id` has been delivered in `group`, and to which consumer; 0 and false
-- when it is not pending.
local function pending_entry(group, id)
  local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if #pending == 0 then
    return 0, false
  end
  return pending[1][4], pending[1][2]
end

-- Moves entry `id` (its flat field list `fields`) to the dead-letter stream, trimmed to about
-- `max_len` entries, with where it came from, and acknowledges it in `group`. The dead letters
-- expire with the stream (an append starts both idle expiries again).
local function dead_letter(group, id, fields, deliveries, reason, max_len)
  local add = {'XADD', KEYS[2], 'MAXLEN', '~', max_len, '*',
    'rookery.id', id, 'rookery.group', group,
    'rookery.deliveries', tostring(deliveries), 'rookery.reason', reason}
  for i = 1, #fields do
    add[#add + 1] = fields[i]
  end
  redis.call(unpack(add))
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
  redis.call('XACK', KEYS[1], group, id)
end
