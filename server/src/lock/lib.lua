-- Helpers shared by the Lock scripts; scripts.rs puts this file into each of them, after the
-- script's flags line.
--
-- A lock's holders live in a sorted set scored by lease expiry, in milliseconds of Redis's
-- clock; their grant details live in a hash beside it. Both keys expire with the last lease
-- and are deleted when the last holder leaves, so a free lock leaves only its fencing token.

-- Redis's clock, in microseconds and in milliseconds.
local function clock()
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return us, math.floor(us / 1000)
end

-- A number as an integer string (Lua's default formatting would round large numbers).
local function int(n)
  return string.format('%.0f', n)
end

-- Removes holders whose lease ended at or before now_ms, and their details.
local function prune(holders, info, now_ms)
  local expired = redis.call('ZRANGEBYSCORE', holders, '-inf', int(now_ms))
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', holders, '-inf', int(now_ms))
    redis.call('HDEL', info, unpack(expired))
  end
end

-- Keeps the holders set and its details until the last lease ends, or deletes both when no
-- holder is left.
local function keep_until_last_lease(holders, info)
  local last = redis.call('ZRANGE', holders, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', holders, info)
  else
    redis.call('PEXPIREAT', holders, last[2])
    redis.call('PEXPIREAT', info, last[2])
  end
end

