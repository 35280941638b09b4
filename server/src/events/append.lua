-- Events.Append: add an entry to a stream, trimmed, at most once per idempotency key.
--
-- KEYS[1]  the stream
-- KEYS[2]  the idempotency marker (string holding the first append's ID), or KEYS[1] again
--          when the append has no idempotency key
-- ARGV[1]  '1' when KEYS[2] is a marker
-- ARGV[2]  how long the marker lives, in ms
-- ARGV[3]  approximate maximum length (0: none)
-- ARGV[4]  maximum age in ms (0: none)
-- ARGV[5..] field names and values, alternating
--
-- Returns {id, duplicate (0 or 1)}.
if ARGV[1] == '1' then
  local first = redis.call('GET', KEYS[2])
  if first then
    return {first, 1}
  end
end
local add = {'XADD', KEYS[1]}
if ARGV[3] ~= '0' then
  add[#add + 1] = 'MAXLEN'
  add[#add + 1] = '~'
  add[#add + 1] = ARGV[3]
end
add[#add + 1] = '*'
for i = 5, #ARGV do
  add[#add + 1] = ARGV[i]
end
local id = redis.call(unpack(add))
if ARGV[4] ~= '0' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', now - tonumber(ARGV[4])))
end
if ARGV[1] == '1' then
  redis.call('SET', KEYS[2], id, 'PX', ARGV[2])
end
return {id, 0}
