-- Cache.Fill: store a value only for the holder of the entry's current lease, end the lease
-- and wake every Fetch caller waiting for the entry, on every server replica.
--
-- KEYS[1]  value key of the entry
-- KEYS[2]  lease key of the entry
-- ARGV[1]  lease token
-- ARGV[2]  value
-- ARGV[3]  TTL in milliseconds
-- ARGV[4]  wake channel
-- ARGV[5]  the namespace's changes channel (near caches)
--
-- Returns 1 if stored, 0 if the token is not the current lease (nothing changed).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[4], KEYS[1])
redis.call('PUBLISH', ARGV[5], KEYS[1])
return 1
