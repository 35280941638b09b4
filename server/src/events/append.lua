#!lua
-- Events.Append: add an entry to a stream, trimmed, at most once per idempotency key, and
-- start the idle expiry of the stream and its companions again.
--
-- Grows memory: refused whole while Redis is over maxmemory.
--
-- KEYS[1]  the stream
-- KEYS[2]  the idempotency marker (string holding the first append's ID), or KEYS[1] again
--          when the append has no idempotency key
-- KEYS[3]  the stream's registration mark (present while the stream is counted in its
--          namespace's stream index)
-- KEYS[4]  its dead-letter stream
-- KEYS[5]  its groups' settings hash
-- ARGV[1]  '1' when KEYS[2] is a marker
-- ARGV[2]  how long the marker lives, in ms (at most the idle TTL)
-- ARGV[3]  approximate maximum length (0: none)
-- ARGV[4]  maximum age in ms (0: none)
-- ARGV[5]  the idle TTL, in ms: how long the stream and its companions live after this append
-- ARGV[6]  '1' when the caller has just registered the stream (set the mark), else '0'
-- ARGV[7]  how long the registration mark lives, in ms (0: set none; the next append
--          registers again)
-- ARGV[8..] field names and values, alternating
--
-- Returns {id, duplicate (0 or 1)}, or {'register'} (having written nothing) when the stream
-- is not counted in its namespace's index: the caller registers it there (another slot on a
-- Cluster, hence another round trip), within the namespace's cap, and calls again with
-- ARGV[6] = '1'.
if ARGV[1] == '1' then
  local first = redis.call('GET', KEYS[2])
  if first then
    return {first, 1}
  end
end
if ARGV[6] == '1' then
  if ARGV[7] ~= '0' then
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[7])
  end
elseif redis.call('EXISTS', KEYS[3]) == 0 then
  return {'register'}
end
local add = {'XADD', KEYS[1]}
if ARGV[3] ~= '0' then
  add[#add + 1] = 'MAXLEN'
  add[#add + 1] = '~'
  add[#add + 1] = ARGV[3]
end
add[#add + 1] = '*'
for i = 8, #ARGV do
  add[#add + 1] = ARGV[i]
end
local id = redis.call(unpack(add))
if ARGV[4] ~= '0' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', now - tonumber(ARGV[4])))
end
-- The stream and what belongs to it expire together, one idle TTL after this append (PEXPIRE
-- of a key that does not exist creates nothing).
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
redis.call('PEXPIRE', KEYS[5], ARGV[5])
if ARGV[1] == '1' then
  redis.call('SET', KEYS[2], id, 'PX', ARGV[2])
end
return {id, 0}
