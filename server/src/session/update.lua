#!lua
-- Session.Update: change some attributes, optionally only if the version is unchanged.
--
-- May grow memory (new attributes): refused whole while Redis is over maxmemory.
--
-- KEYS[1]  the session's hash
-- ARGV[1]  expected version, or '' for none
-- ARGV[2]  most attributes a session may have
-- ARGV[3]  number R of attribute names to remove
-- ARGV[4 + 2R + 2S]  (the last argument) most bytes a session's attribute names and values
--          may total, so that Session.Get's answer fits its budget
-- ARGV[4 .. 3+R]   names to remove (prefixed '.')
-- ARGV[4+R .. #ARGV-1]  names (prefixed '.') and values to set, alternating
--
-- Returns one of
--   {1, version}      updated
--   {2, id_hash}      the ID was rotated and is in its grace period: update that one
--   {0}               no such session
--   {-1, version}     the version is not the expected one
--   {-2, count}       the session would have more attributes than allowed
--   {-3, bytes}       the session's attributes would total more bytes than allowed
--
-- Its work is bounded by the attributes a session may have (ARGV[2]), not by the caller.
local current = redis.call('HMGET', KEYS[1], 'v', 'to')
if current[2] then
  return {2, current[2]}
end
if not current[1] then
  return {0}
end
if ARGV[1] ~= '' and current[1] ~= ARGV[1] then
  return {-1, tonumber(current[1])}
end
local removes = tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[#ARGV])
local last_set = #ARGV - 1
-- Five fields of every session are not attributes. Each distinct name counts once.
local count = redis.call('HLEN', KEYS[1]) - 5
local removed = {}
for i = 4, 3 + removes do
  if not removed[ARGV[i]] then
    removed[ARGV[i]] = true
    count = count - redis.call('HEXISTS', KEYS[1], ARGV[i])
  end
end
local added = {}
for i = 4 + removes, last_set, 2 do
  if not added[ARGV[i]] then
    added[ARGV[i]] = true
    if removed[ARGV[i]] or redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
      count = count + 1
    end
  end
end
if count > tonumber(ARGV[2]) then
  return {-2, count}
end
-- The attributes' size after the change: each name and value, counted once.
local sizes = {}
local names = redis.call('HKEYS', KEYS[1])
for _, name in ipairs(names) do
  if string.sub(name, 1, 1) == '.' then
    sizes[name] = #name + redis.call('HSTRLEN', KEYS[1], name)
  end
end
for i = 4, 3 + removes do
  sizes[ARGV[i]] = nil
end
for i = 4 + removes, last_set, 2 do
  sizes[ARGV[i]] = #ARGV[i] + #ARGV[i + 1]
end
local bytes = 0
for _, size in pairs(sizes) do
  bytes = bytes + size
end
if bytes > max_bytes then
  return {-3, bytes}
end
if removes > 0 then
  redis.call('HDEL', KEYS[1], unpack(ARGV, 4, 3 + removes))
end
if last_set >= 4 + removes then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4 + removes, last_set))
end
return {1, redis.call('HINCRBY', KEYS[1], 'v', 1)}
