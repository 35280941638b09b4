-- Cache.Fetch: read a cache entry with the lease protocol, atomically.
--
-- KEYS[1]  value key of the entry
-- KEYS[2]  lease key of the entry
-- ARGV[1]  lease token to grant if a lease is granted
-- ARGV[2]  lease TTL in milliseconds
-- ARGV[3]  refresh-ahead window in milliseconds (0: never grant a refresh lease)
--
-- Returns one of
--   {0, value, pttl}             hit
--   {1, value, pttl}             hit within the refresh window; the caller holds the lease
--   {2}                          miss; the caller holds the fill lease
--   {3, lease_pttl}              miss; another caller holds the lease for lease_pttl ms
local value = redis.call('GET', KEYS[1])
if value then
  local pttl = redis.call('PTTL', KEYS[1])
  local window = tonumber(ARGV[3])
  if window > 0 and pttl >= 0 and pttl < window
     and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {1, value, pttl}
  end
  return {0, value, pttl}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2}
end
return {3, redis.call('PTTL', KEYS[2])}
