#!lua flags=allow-oom
-- Session.Get: read a session and, with touch, slide its idle expiry (never past its absolute
-- expiry), keeping its subject index entry and the index's TTL in step.
--
-- allow-oom: it reads, and a touch only moves expiries (re-adding at most the one index entry
-- pruned at its expiry instant), so sessions stay readable and alive at maxmemory.
--
-- KEYS[1]  the session's hash
-- KEYS[2]  the index of the session's hash tag
-- ARGV[1]  '1' to touch
-- ARGV[2]  the session's ID hash
--
-- Returns one of
--   {1, fields, idle_expiry_ms}   found (fields as HGETALL returns them)
--   {2, id_hash}                  the ID was rotated and is in its grace period: read that one
--   {0}                           no such session (unknown, expired or revoked)
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return {0}
end
local session = {}
for i = 1, #fields, 2 do
  session[fields[i]] = fields[i + 1]
end
if session['to'] then
  return {2, session['to']}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry
if ARGV[1] == '1' then
  expiry = math.min(now + tonumber(session['idle']), tonumber(session['abs']))
  redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', expiry))
  -- A live session always belongs in its index (re-added if pruned at its expiry instant).
  redis.call('ZADD', KEYS[2], string.format('%.0f', expiry), session['sub'] .. '|' .. ARGV[2])
  if redis.call('PTTL', KEYS[2]) < expiry - now then
    redis.call('PEXPIREAT', KEYS[2], string.format('%.0f', expiry))
  end
else
  expiry = now + redis.call('PTTL', KEYS[1])
end
return {1, fields, expiry}
