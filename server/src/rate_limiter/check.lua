#!lua
-- RateLimiter.Check / CheckMany: decide one or several limits for one request, atomically.
--
-- KEYS[i]  the state of limit i (its type depends on the algorithm; each has a TTL of about
--          one period after its last write)
-- ARGV[1]  '1' for a dry run: decide as if consuming, but write nothing
-- ARGV[2 + 6(i-1) ..]  per limit i, six values:
--          algorithm (1 GCRA, 2 token bucket, 3 sliding-window log, 4 sliding-window counter,
--          5 fixed window), limit, period (us), burst, cost (0: peek), shadow ('1': its denial
--          does not deny the request)
--
-- All limits are decided first; state is written only if every non-shadow limit allows (a
-- denied request consumes nothing anywhere), and then only for the limits that allowed and
-- have a cost. Time is Redis's clock, in microseconds.
--
-- Grows memory (a sliding-window log adds entries after removing old ones, a write Redis would
-- not check for memory on its own): refused whole while Redis is over maxmemory, dry runs too.
--
-- Returns {all_allowed, then per limit: allowed, remaining, reset_after_us, retry_after_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function ms_ceil(us)
  return math.max(1, math.ceil(us / 1000))
end

local function fmt(n)
  return string.format('%.3f', n)
end

-- A point in time as a whole microsecond and a fraction, stored as "us.fraction": near 1.8e15
-- a double steps by 0.25 us, too coarse for GCRA at high rates, so arithmetic on stored times
-- is done relative to now, on small numbers.
local function offset_of(stored)
  if not stored then
    return nil
  end
  local whole, fraction = string.match(stored, '^(%d+)%.?(%d*)$')
  if not whole then
    return nil
  end
  return (tonumber(whole) - now) + (fraction ~= '' and tonumber('0.' .. fraction) or 0)
end

local function stored_at(offset)
  local whole = math.floor(offset)
  return string.format('%.0f.%06d', now + whole, math.floor((offset - whole) * 1000000))
end

-- Each decide_* returns allowed, remaining, reset_after, retry_after, write (a function).

-- All times relative to now (see offset_of): tat is the theoretical arrival time.
local function decide_gcra(key, limit, period, burst, cost)
  local interval = period / limit
  local tolerance = burst * interval
  local tat = math.max(0, offset_of(redis.call('GET', key)) or 0)
  if cost == 0 then
    local allowed = 0 >= tat + interval - tolerance
    return allowed, math.max(0, math.floor((tolerance - tat) / interval)), tat, 0, nil
  end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - tolerance
  if allow_at > 0 then
    return false, math.max(0, math.floor((tolerance - tat) / interval)), tat, allow_at, nil
  end
  local write = function()
    redis.call('SET', key, stored_at(new_tat), 'PX', ms_ceil(new_tat))
  end
  return true, math.max(0, math.floor((tolerance - new_tat) / interval)), new_tat, 0, write
end

local function decide_token_bucket(key, limit, period, burst, cost)
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(state[1]) or burst
  local since = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - since) * limit / period)
  local per_token = period / limit
  if cost == 0 then
    return tokens >= 1, math.floor(tokens), (burst - tokens) * per_token, 0, nil
  end
  if tokens < cost then
    return false, math.floor(tokens), (burst - tokens) * per_token, (cost - tokens) * per_token, nil
  end
  local left = tokens - cost
  local write = function()
    -- Rounded down: a stored count never holds more than the bucket does.
    redis.call('HSET', key, 't', string.format('%.3f', math.floor(left * 1000) / 1000), 'ts', fmt(now))
    redis.call('PEXPIRE', key, ms_ceil((burst - left) * per_token))
  end
  return true, math.floor(left), (burst - left) * per_token, 0, write
end

local function decide_log(key, limit, period, cost)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - period))
  local count = redis.call('ZCARD', key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local reset = 0
  if #last > 0 then
    reset = tonumber(last[2]) + period - now
  end
  local need = math.max(cost, 1)
  if count + need > limit then
    -- The request fits once enough of the oldest entries have left the window.
    local oldest = redis.call('ZRANGE', key, count + need - limit - 1, count + need - limit - 1, 'WITHSCORES')
    local retry = tonumber(oldest[2]) + period - now
    return false, math.max(0, limit - count), reset, cost > 0 and retry or 0, nil
  end
  if cost == 0 then
    return true, limit - count, reset, 0, nil
  end
  local write = function()
    -- Distinct members even for requests in the same microsecond.
    local at = now
    if #last > 0 and tonumber(last[1]) >= at then
      at = tonumber(last[1]) + 1
    end
    local entries = {}
    for i = 0, cost - 1 do
      entries[#entries + 1] = fmt(now)
      entries[#entries + 1] = string.format('%.0f', at + i)
    end
    redis.call('ZADD', key, unpack(entries))
    redis.call('PEXPIRE', key, ms_ceil(period))
  end
  return true, limit - count - cost, period, 0, write
end

local function decide_counter(key, limit, period, cost)
  local window = math.floor(now / period)
  local elapsed = now - window * period
  local state = redis.call('HMGET', key, 'w', 'c', 'p')
  local stored = tonumber(state[1])
  local current, previous = tonumber(state[2]) or 0, tonumber(state[3]) or 0
  if stored == window - 1 then
    previous, current = current, 0
  elseif stored ~= window then
    previous, current = 0, 0
  end
  local weight = (period - elapsed) / period
  local estimate = previous * weight + current
  local reset = 2 * period - elapsed
  local need = math.max(cost, 1)
  if estimate + need > limit then
    local retry = period - elapsed
    if previous > 0 and current + need <= limit then
      -- Within this window, once the previous window's weight has decayed enough.
      retry = math.max(0, period * (1 - (limit - current - need) / previous) - elapsed)
    elseif current > 0 and need <= limit then
      -- In the next window, weighing this window's count.
      retry = period - elapsed + math.max(0, period * (1 - (limit - need) / current))
    end
    return false, math.max(0, math.floor(limit - estimate)), reset, cost > 0 and retry or 0, nil
  end
  if cost == 0 then
    return true, math.floor(limit - estimate), reset, 0, nil
  end
  local write = function()
    redis.call('HSET', key, 'w', window, 'c', current + cost, 'p', previous)
    redis.call('PEXPIRE', key, ms_ceil(reset))
  end
  return true, math.max(0, math.floor(limit - estimate - cost)), reset, 0, write
end

local function decide_fixed(key, limit, period, cost)
  local window = math.floor(now / period)
  local state = redis.call('HMGET', key, 'w', 'n')
  local count = 0
  if tonumber(state[1]) == window then
    count = tonumber(state[2])
  end
  local reset = (window + 1) * period - now
  local need = math.max(cost, 1)
  if count + need > limit then
    return false, math.max(0, limit - count), reset, cost > 0 and reset or 0, nil
  end
  if cost == 0 then
    return true, limit - count, reset, 0, nil
  end
  local write = function()
    redis.call('HSET', key, 'w', window, 'n', count + cost)
    redis.call('PEXPIRE', key, ms_ceil(reset))
  end
  return true, limit - count - cost, reset, 0, write
end

local dry = ARGV[1] == '1'
local all_allowed = true
local results = {}
local writes = {}
for i = 1, #KEYS do
  local base = 2 + 6 * (i - 1)
  local algorithm = tonumber(ARGV[base])
  local limit = tonumber(ARGV[base + 1])
  local period = tonumber(ARGV[base + 2])
  local burst = tonumber(ARGV[base + 3])
  local cost = tonumber(ARGV[base + 4])
  local shadow = ARGV[base + 5] == '1'
  local allowed, remaining, reset, retry, write
  if algorithm == 1 then
    allowed, remaining, reset, retry, write = decide_gcra(KEYS[i], limit, period, burst, cost)
  elseif algorithm == 2 then
    allowed, remaining, reset, retry, write = decide_token_bucket(KEYS[i], limit, period, burst, cost)
  elseif algorithm == 3 then
    allowed, remaining, reset, retry, write = decide_log(KEYS[i], limit, period, cost)
  elseif algorithm == 4 then
    allowed, remaining, reset, retry, write = decide_counter(KEYS[i], limit, period, cost)
  else
    allowed, remaining, reset, retry, write = decide_fixed(KEYS[i], limit, period, cost)
  end
  if not allowed and not shadow then
    all_allowed = false
  end
  if allowed and write then
    writes[#writes + 1] = write
  end
  results[#results + 1] = allowed and 1 or 0
  results[#results + 1] = remaining
  results[#results + 1] = math.ceil(math.max(0, reset))
  results[#results + 1] = math.ceil(math.max(0, retry))
end
if all_allowed and not dry then
  for _, write in ipairs(writes) do
    write()
  end
end
table.insert(results, 1, all_allowed and 1 or 0)
return results
