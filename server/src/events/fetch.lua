-- Events.Consume: the next entries for one consumer of a group, within its in-flight bound.
--
-- KEYS[1]  the stream
-- KEYS[2]  its dead-letter stream
-- ARGV[1]  the group
-- ARGV[2]  the consumer
-- ARGV[3]  most entries the consumer may have delivered and unacknowledged
-- ARGV[4]  history cursor: the last of the consumer's own pending entries (those it had when it
--          started) delivered again so far, '0-0' at the start; '' once all were
-- ARGV[5]  XAUTOCLAIM cursor ('0-0' at the start)
-- ARGV[6]  the group's ack timeout, in ms
-- ARGV[7]  the group's delivery limit (0: none)
-- ARGV[8]  approximate maximum length of the dead-letter stream
--
-- Returns {history cursor, XAUTOCLAIM cursor, trimmed, dead-lettered, free slots, deliveries},
-- each delivery being {id, {field, value, ...}, times delivered}. Order of preference: the
-- consumer's own pending entries, then entries idle longer than the ack timeout (from any
-- consumer, or given back by a Nack), then new entries. An entry delivered more often than
-- the limit moves to the dead-letter stream; one trimmed from the stream while pending is
-- acknowledged and counted as trimmed.
local group, consumer = ARGV[1], ARGV[2]
local max_in_flight = tonumber(ARGV[3])
local history, claim_cursor = ARGV[4], ARGV[5]
local max_deliveries = tonumber(ARGV[7])

-- While own pending entries are being delivered again, only those up to the cursor are in the
-- client's hands; after that, every pending entry of the consumer is.
local delivered_up_to = history ~= '' and history or '+'
local in_flight = #redis.call('XPENDING', KEYS[1], group, '-', delivered_up_to, max_in_flight, consumer)
local slots = max_in_flight - in_flight
local out, trimmed, dead = {}, 0, 0
if slots <= 0 then
  return {history, claim_cursor, 0, 0, 0, out}
end

-- Entries re-read or claimed (their delivery count was just incremented).
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
      end
    end
  end
end

if history ~= '' then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', slots, 'STREAMS', KEYS[1], history)
  local entries = read and read[1] and read[1][2] or {}
  if #entries > 0 then
    redeliver(entries)
    return {entries[#entries][1], claim_cursor, trimmed, dead, slots - #out, out}
  end
  history = ''
end

local claimed = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[6], claim_cursor, 'COUNT', slots)
claim_cursor = claimed[1]
redeliver(claimed[2])
trimmed = trimmed + #(claimed[3] or {})
slots = slots - #out
if slots > 0 then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', slots, 'STREAMS', KEYS[1], '>')
  if read then
    for _, entry in ipairs(read[1][2]) do
      out[#out + 1] = {entry[1], entry[2], 1}
    end
    slots = slots - #read[1][2]
  end
end
return {'', claim_cursor, trimmed, dead, slots, out}
