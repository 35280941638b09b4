#!lua flags=allow-oom
-- Cache.ReleaseLease: give back a lease without filling, so the next waiter gets it at once.
--
-- allow-oom: it only deletes the lease (and publishes), so a lease can be given back at
-- maxmemory.
--
-- KEYS[1]  value key of the entry (named in the wake message)
-- KEYS[2]  lease key of the entry
-- ARGV[1]  lease token
-- ARGV[2]  wake channel
--
-- Returns 1 if released, 0 if the token is not the current lease (nothing changed).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[2], KEYS[1])
return 1
