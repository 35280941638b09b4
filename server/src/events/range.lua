#!lua flags=no-writes
-- Events.Read: the next entries of a stream, as many as fit a byte budget, so that no batch
-- read for a reader is larger than one answer may carry.
--
-- KEYS[1]  the stream (or its dead-letter stream)
-- ARGV[1]  where to start: '-' for the first entry, or '(' .. an ID for the entries after it
-- ARGV[2]  most entries to return
-- ARGV[3]  most bytes to return, counting IDs, field names and values and their protobuf
--          framing (rounded up: 16 bytes an entry, 6 a name or value); the first entry is
--          returned whatever its size (no entry is larger than an answer may carry)
-- ARGV[4]  the largest an entry may be, in the same count: each XRANGE asks for no more
--          entries than the bytes left could hold at that size, so Lua never holds much more
--          than the budget
--
-- Returns entries as XRANGE does. Its work is bounded by ARGV[2].
local out = {}
local bytes = 0
local from = ARGV[1]
local left = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local largest = math.max(tonumber(ARGV[4]), 1)
while left > 0 do
  local fit = math.max(1, math.floor((budget - bytes) / largest))
  local chunk = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', math.min(left, 16, fit))
  if #chunk == 0 then
    break
  end
  for _, entry in ipairs(chunk) do
    local size = 16 + #entry[1]
    for _, part in ipairs(entry[2]) do
      size = size + 6 + #part
    end
    if #out > 0 and bytes + size > budget then
      return out
    end
    out[#out + 1] = entry
    bytes = bytes + size
    left = left - 1
  end
  from = '(' .. chunk[#chunk][1]
end
return out
