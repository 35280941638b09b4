#!lua flags=allow-oom
-- Events.Consume, now and then: forget consumers of a group that hold nothing and have not
-- read for a long time (they left with entries pending, which others have since claimed).
--
-- allow-oom: it only forgets consumers, so it frees memory at maxmemory too.
--
-- KEYS[1]  the stream
-- ARGV[1]  the group
-- ARGV[2]  idle time, in ms, after which an empty consumer is forgotten
--
-- Returns how many consumers were forgotten.
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local idle_limit = tonumber(ARGV[2])
local forgotten = 0
for _, consumer in ipairs(consumers) do
  local name, pending, idle
  for i = 1, #consumer, 2 do
    local field = consumer[i]
    if field == 'name' then
      name = consumer[i + 1]
    elseif field == 'pending' then
      pending = consumer[i + 1]
    elseif field == 'idle' then
      idle = consumer[i + 1]
    end
  end
  if name and pending == 0 and idle and idle > idle_limit then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    forgotten = forgotten + 1
  end
end
return forgotten
