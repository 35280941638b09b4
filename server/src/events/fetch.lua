-- Events.Consume: the next entries for one consumer of a group, within its in-flight bound.
--
-- KEYS[1]  the stream
-- KEYS[2]  its dead-letter stream
-- ARGV[1]  the group
-- ARGV[2]  the consumer
-- ARGV[3]  most entries the consumer may have delivered and unacknowledged
-- ARGV[4]  history cursor: the last of the consumer's own pending entries (those it had when it
--          started) delivered again so far, '0-0' at the start; '' once all were
-- ARGV[5]  XAUTOCLAIM cursor ('0-0' when no scan is under way)
-- ARGV[6]  the group's ack timeout, in ms
-- ARGV[7]  the group's delivery limit (0: none)
-- ARGV[8]  approximate maximum length of the dead-letter stream
-- ARGV[9]  most entries to deliver in this call
-- ARGV[10] bytes (field names and values) after which this call takes no more entries
-- ARGV[11] '1' when a scan for entries idle past the ack timeout is due (or under way)
--
-- Returns {history cursor, XAUTOCLAIM cursor, trimmed, dead-lettered, slots still free after
-- this call, deliveries}, each delivery being {id, {field, value, ...}, times delivered}.
--
-- Order of preference: the consumer's own pending entries (until all were delivered again);
-- then, when a scan is due, entries idle longer than the ack timeout (from any consumer, or
-- given back by a Nack); new entries only once that scan has gone round the whole pending
-- list. An entry delivered more often than the limit moves to the dead-letter stream; one
-- trimmed from the stream while pending is acknowledged and counted as trimmed. Reads go in
-- small chunks so that the byte budget bounds the reply.
local group, consumer = ARGV[1], ARGV[2]
local max_in_flight = tonumber(ARGV[3])
local history, claim_cursor = ARGV[4], ARGV[5]
local ack_timeout = ARGV[6]
local max_deliveries = tonumber(ARGV[7])
local budget = tonumber(ARGV[10])
local CHUNK = 16
-- XAUTOCLAIM calls per fetch: each examines at most 10 × its COUNT pending entries.
local CLAIM_CALLS = 8

local out, trimmed, dead, bytes = {}, 0, 0, 0

-- While own pending entries are being delivered again, only those up to the cursor are in the
-- client's hands; after that, every pending entry of the consumer is.
local in_flight
if history ~= '' then
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
      if max_deliveries > 0 and deliveries > max_deliveries then
        dead_letter(group, id, fields, deliveries - 1, 'max_deliveries', ARGV[8])
        dead = dead + 1
      else
        out[#out + 1] = {id, fields, deliveries}
        for i = 1, #fields do
          bytes = bytes + #fields[i]
        end
      end
    end
  end
end

if free <= 0 then
  -- At the bound: only this consumer's own entries idle past the ack timeout (an ack that was
  -- lost) come back, so that a consumer never stalls on entries it will not ack.
  local expired = redis.call('XPENDING', KEYS[1], group, 'IDLE', ack_timeout, '-', '+', CHUNK, consumer)
  if #expired > 0 then
    local ids = {}
    for i, entry in ipairs(expired) do
      ids[i] = entry[1]
    end
    redeliver(redis.call('XCLAIM', KEYS[1], group, consumer, ack_timeout, unpack(ids)))
  end
  return {history, claim_cursor, trimmed, dead, 0, out}
end
local slots = math.min(free, tonumber(ARGV[9]))
local function room()
  return #out < slots and bytes < budget
end

if history ~= '' then
  while room() do
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', math.min(slots - #out, CHUNK),
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
    return {history, claim_cursor, trimmed, dead, free - #out, out}
  end
end

if ARGV[11] == '1' then
  local calls = 0
  while room() and calls < CLAIM_CALLS do
    calls = calls + 1
    local claimed = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ack_timeout, claim_cursor,
      'COUNT', math.min(slots - #out, CHUNK))
    claim_cursor = claimed[1]
    redeliver(claimed[2])
    trimmed = trimmed + #(claimed[3] or {})
    if claim_cursor == '0-0' then
      break
    end
  end
end

if claim_cursor == '0-0' then
  while room() do
    local want = math.min(slots - #out, CHUNK)
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want, 'STREAMS', KEYS[1], '>')
    if not read then
      break
    end
    local entries = read[1][2]
    for _, entry in ipairs(entries) do
      out[#out + 1] = {entry[1], entry[2], 1}
      for i = 1, #entry[2] do
        bytes = bytes + #entry[2][i]
      end
    end
    if #entries < want then
      break
    end
  end
end
return {history, claim_cursor, trimmed, dead, free - #out, out}
