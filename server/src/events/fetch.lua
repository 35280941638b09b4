#!lua
-- Events.Consume: the next entries for one consumer of a group, within its in-flight bound.
--
-- Grows memory (pending entries, dead letters, the lease): refused whole while Redis is over
-- maxmemory.
--
-- KEYS[1]  the stream
-- KEYS[2]  its dead-letter stream
-- KEYS[3]  the group's "expired entries were just looked for" mark
-- KEYS[4]  the consumer's lease
-- KEYS[5]  the group's scan cursor: the last pending entry examined by the look for expired
--          entries that is still going on (absent: the next look starts at the beginning)
-- ARGV[1]  the group
-- ARGV[2]  the consumer
-- ARGV[3]  most entries the consumer may have delivered and unacknowledged
-- ARGV[4]  history cursor: the last of the consumer's own pending entries (those it had when it
--          started) delivered again so far, '0-0' at the start; '' once all were
-- ARGV[5]  '1' when it is time to look for entries idle past the ack timeout
-- ARGV[6]  the group's ack timeout, in ms
-- ARGV[7]  the group's delivery limit (0: none)
-- ARGV[8]  approximate maximum length of the dead-letter stream
-- ARGV[9]  most entries to deliver in this call (the caller keeps it to a constant)
-- ARGV[10] bytes (field names and values) after which this call takes no more entries
-- ARGV[11] how long, in ms, a complete look spares the group's other consumers from looking
-- ARGV[12] this Consume's lease token
-- ARGV[13] how long the lease lasts, in ms
-- ARGV[14] most pending entries one look examines
-- ARGV[15] most of the consumer's own entries counted while they are delivered again
-- ARGV[16] how long, in ms, the scan cursor lives without a look
--
-- Returns {'taken'} when a newer Consume has taken the consumer's name; else {history cursor,
-- trimmed, dead-lettered, slots still free after this call, look, deliveries, new}, each
-- delivery being {id, {field, value, ...}, times delivered}; `new` is how many new entries the
-- caller may read now (XREADGROUP ... '>'), 0 while the consumer's own history is unfinished
-- or this call is out of room; `look` is 0 when this call did not look
-- for entries idle past the ack timeout, 1 when its look reached the end of the pending list
-- (a pass is complete), 2 when it ran out of room (more may be waiting: look again at once),
-- 3 when it examined its share of the pending list and left the rest to the next look.
--
-- Order of preference: the consumer's own pending entries (until all were delivered again);
-- then, when it is time to look, entries idle longer than the ack timeout (from any consumer,
-- or given back by a Nack), unless another consumer of the group has just found them all;
-- then new entries, which the caller reads. An entry delivered more often than the limit
-- moves to the dead-letter stream; one trimmed from the stream while pending is acknowledged,
-- or dropped from the pending list by Redis, and counted as trimmed. Reads go in small chunks
-- so that the byte budget bounds the reply.
--
-- Bounded work. Redis runs one script at a time for every namespace, so nothing here grows
-- with what the group holds: one call delivers at most ARGV[9] entries; a look examines at
-- most ARGV[14] pending entries, from the group's cursor on (a pass over a long pending list
-- is spread over many looks, by every consumer of the group, instead of one scan of all of
-- it: XPENDING IDLE and XAUTOCLAIM examine entries that are not idle too, without a bound, or
-- at several times the cost of a listing); counting the consumer's own entries lists at most
-- ARGV[15] of them (or reads the group's summary, one line per consumer).
local group, consumer = ARGV[1], ARGV[2]
local max_in_flight = tonumber(ARGV[3])
local history = ARGV[4]
local ack_timeout = ARGV[6]
local max_deliveries = tonumber(ARGV[7])
local budget = tonumber(ARGV[10])
local CHUNK = 16

local out, trimmed, dead, bytes = {}, 0, 0, 0

-- One Consume per consumer name, the newest: renew this one's lease, unless a newer one has
-- taken the name over.
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[12] then
  return {'taken'}
end
redis.call('SET', KEYS[4], ARGV[12], 'PX', ARGV[13])

-- While own pending entries are being delivered again, only those up to the cursor are in the
-- client's hands; after that, every pending entry of the consumer is.
local in_flight
if history ~= '' then
  -- Counting lists the entries up to the cursor, so while they are delivered again the bound
  -- is held to ARGV[15] (listing thousands of entries would cost milliseconds per call).
  max_in_flight = math.min(max_in_flight, tonumber(ARGV[15]))
  in_flight = #redis.call('XPENDING', KEYS[1], group, '-', history, max_in_flight, consumer)
elseif max_in_flight <= 128 then
  in_flight = #redis.call('XPENDING', KEYS[1], group, '-', '+', max_in_flight, consumer)
else
  -- The summary's per-consumer counts cost less than listing thousands of entries.
  in_flight = 0
  local summary = redis.call('XPENDING', KEYS[1], group)
  for _, pair in ipairs(summary[4] or {}) do
    if pair[1] == consumer then
      in_flight = tonumber(pair[2])
    end
  end
end
local free = max_in_flight - in_flight

-- Adds entries re-read or claimed (their delivery count was just incremented) to the
-- deliveries, unless they were delivered too often or trimmed away.
local function redeliver(entries)
  for _, entry in ipairs(entries) do
    local id, fields = entry[1], entry[2]
    if not fields then
      redis.call('XACK', KEYS[1], group, id)
      trimmed = trimmed + 1
    else
      local deliveries = pending_entry(group, id)
      -- A dead letter is a copy of the entry: it counts against this call's bytes like a
      -- delivery does, so the work of one call stays bounded either way.
      for i = 1, #fields do
        bytes = bytes + #fields[i]
      end
      if max_deliveries > 0 and deliveries > max_deliveries then
        dead_letter(group, id, fields, deliveries - 1, 'max_deliveries', ARGV[8])
        dead = dead + 1
      else
        out[#out + 1] = {id, fields, deliveries}
      end
    end
  end
end

-- Claims `ids` (idle past the ack timeout) for this consumer and delivers them; XCLAIM drops
-- entries trimmed from the stream from the pending list without returning them.
local function claim(ids)
  local claimed = redis.call('XCLAIM', KEYS[1], group, consumer, ack_timeout, unpack(ids))
  trimmed = trimmed + #ids - #claimed
  redeliver(claimed)
end

-- This consumer's pending entries idle past the ack timeout, up to `last`, at most `count`.
-- It examines the consumer's entries up to `last`: those in flight (the caller's bound).
local function expired_ids(last, count)
  local expired = redis.call('XPENDING', KEYS[1], group, 'IDLE', ack_timeout, '-', last, count, consumer)
  local ids = {}
  for i, entry in ipairs(expired) do
    ids[i] = entry[1]
  end
  return ids
end

if free <= 0 then
  -- At the bound: only this consumer's own entries (those counted as in flight) idle past the
  -- ack timeout (an ack that was lost) come back, so that a consumer never stalls on entries
  -- it will not ack.
  local ids = expired_ids(history ~= '' and history or '+', CHUNK)
  if #ids > 0 then
    claim(ids)
  end
  return {history, trimmed, dead, 0, 0, out, 0}
end
local slots = math.min(free, tonumber(ARGV[9]))
-- Entries moved to the dead letters count too: each is work done by this call.
local function room()
  return #out + dead < slots and bytes < budget
end

if history ~= '' then
  while room() do
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', math.min(slots - #out - dead, CHUNK),
      'STREAMS', KEYS[1], history)
    local entries = read and read[1] and read[1][2] or {}
    if #entries == 0 then
      history = ''
      break
    end
    redeliver(entries)
    history = entries[#entries][1]
  end
  if history ~= '' then
    return {history, trimmed, dead, free - #out, 0, out, 0}
  end
end

local looked = 0
if ARGV[5] == '1' then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    -- Another consumer of the group found them all a moment ago.
    looked = 1
  else
    -- Lists the pending entries after the group's cursor, a step at a time, and claims those
    -- idle past the ack timeout (the listing says how idle each is), until this call is out of
    -- room, the end of the list, or this look's share of it. The cursor stays where the look
    -- stopped, for the next look of any consumer of the group.
    local timeout = tonumber(ack_timeout)
    local cursor = redis.call('GET', KEYS[5])
    local share = tonumber(ARGV[14])
    local examined = 0
    looked = 3
    while true do
      if not room() then
        looked = 2
        break
      end
      if examined >= share then
        break
      end
      local step = math.min(share - examined, 256)
      local pending = redis.call('XPENDING', KEYS[1], group, cursor and ('(' .. cursor) or '-', '+', step)
      -- At most a chunk claimed at once, so that the entries XCLAIM returns stay within what
      -- room() allows (it is checked between steps).
      local want = math.min(slots - #out - dead, CHUNK)
      local ids, full = {}, false
      for _, entry in ipairs(pending) do
        if #ids >= want then
          full = true
          break
        end
        examined = examined + 1
        cursor = entry[1]
        if entry[3] >= timeout then
          ids[#ids + 1] = entry[1]
        end
      end
      if #ids > 0 then
        claim(ids)
      end
      if not full and #pending < step then
        -- The end of the list: a pass is complete, unless this call ran out of room on its
        -- last entries (then the next look, at once, starts a new pass).
        cursor = nil
        if room() then
          looked = 1
          redis.call('SET', KEYS[3], '1', 'PX', ARGV[11])
        else
          looked = 2
        end
        break
      end
    end
    if cursor then
      redis.call('SET', KEYS[5], cursor, 'PX', ARGV[16])
    else
      redis.call('DEL', KEYS[5])
    end
  end
end

-- New entries are read by the caller with a plain XREADGROUP right after this call: in Lua
-- every entry would be converted into tables and back, which costs Redis more than the read.
local new = 0
if room() then
  new = slots - #out - dead
end
return {history, trimmed, dead, free - #out, looked, out, new}
