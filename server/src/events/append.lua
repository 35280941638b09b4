#!lua
-- Events.Append and Events.AppendMany: add entries to a stream, in order, each trimmed and at
-- most once per idempotency key, and start the idle expiry of the stream and its companions
-- again. One entry is the Append case; all of a call's entries run in this one script, so they
-- get consecutive IDs and cost one round trip.
--
-- Grows memory: refused whole while Redis is over maxmemory.
--
-- KEYS[1]  the stream
-- KEYS[2]  the stream's registration mark (present while the stream is counted in its
--          namespace's stream index)
-- KEYS[3]  its dead-letter stream
-- KEYS[4]  its groups' settings hash
-- KEYS[4+i] entry i's idempotency marker (string holding the first append's ID), or KEYS[1]
--          again when entry i has no idempotency key
-- ARGV[1]  how long a marker lives, in ms (at most the idle TTL)
-- ARGV[2]  approximate maximum length (0: none)
-- ARGV[3]  maximum age in ms (0: none)
-- ARGV[4]  the idle TTL, in ms: how long the stream and its companions live after this append
-- ARGV[5]  '1' when the caller has just registered the stream (set the mark), else '0'
-- ARGV[6]  how long the registration mark lives, in ms (0: set none; the next append
--          registers again)
-- ARGV[7..] per entry, in order: '1' when its KEYS entry is a marker, else '0'; its number of
--          fields n; then n field names and values, alternating
--
-- Returns {id 1, duplicate 1 (0 or 1), id 2, duplicate 2, ...}, or {'register'} (having
-- written nothing) when the stream is not counted in its namespace's index: the caller
-- registers it there (another slot on a Cluster, hence another round trip), within the
-- namespace's cap, and calls again with ARGV[5] = '1'.
if ARGV[5] == '1' then
  if ARGV[6] ~= '0' then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[6])
  end
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  -- Unless every entry is a retry answered by its marker: then nothing is written.
  local a = 7
  for i = 1, #KEYS - 4 do
    if ARGV[a] ~= '1' or not redis.call('GET', KEYS[4 + i]) then
      return {'register'}
    end
    a = a + 2 + 2 * tonumber(ARGV[a + 1])
  end
end
local answers = {}
local wrote = false
local a = 7
for i = 1, #KEYS - 4 do
  local marked = ARGV[a] == '1'
  local n = tonumber(ARGV[a + 1])
  local first = marked and redis.call('GET', KEYS[4 + i])
  if first then
    answers[#answers + 1] = first
    answers[#answers + 1] = 1
  else
    local add = {'XADD', KEYS[1]}
    if ARGV[2] ~= '0' then
      add[#add + 1] = 'MAXLEN'
      add[#add + 1] = '~'
      add[#add + 1] = ARGV[2]
    end
    add[#add + 1] = '*'
    for f = a + 2, a + 1 + 2 * n do
      add[#add + 1] = ARGV[f]
    end
    local id = redis.call(unpack(add))
    if marked then
      redis.call('SET', KEYS[4 + i], id, 'PX', ARGV[1])
    end
    answers[#answers + 1] = id
    answers[#answers + 1] = 0
    wrote = true
  end
  a = a + 2 + 2 * n
end
if not wrote then
  -- Every entry was a retry: nothing changed, so nothing starts again either.
  return answers
end
if ARGV[3] ~= '0' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', now - tonumber(ARGV[3])))
end
-- The stream and what belongs to it expire together, one idle TTL after this append (PEXPIRE
-- of a key that does not exist creates nothing).
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return answers
