#!lua flags=no-writes
-- Cache.GetMany, one key: its value and PTTL if the value is at most a given length, else only
-- its length, so that a value too long for the answer never leaves Redis.
--
-- KEYS[1]  the value key
-- ARGV[1]  the longest value to return, in bytes
--
-- Returns false when the key does not exist; {value, pttl} when the value fits; {length} when
-- it is longer than ARGV[1].
local length = redis.call('STRLEN', KEYS[1])
if length > tonumber(ARGV[1]) then
  return {length}
end
local value = redis.call('GET', KEYS[1])
if not value then
  return false
end
return {value, redis.call('PTTL', KEYS[1])}
