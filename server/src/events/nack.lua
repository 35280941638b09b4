#!lua
-- Events.Nack: give entries back to the group, to be delivered again after a delay.
--
-- May grow memory (a dead letter copies its entry): refused whole while Redis is over
-- maxmemory, where scripts.rs runs it with flags=allow-oom and dead-lettering off instead.
--
-- KEYS[1]  the stream
-- KEYS[2]  its dead-letter stream
-- KEYS[3]  the stream's groups' settings hash
-- ARGV[1]  the group
-- ARGV[2]  the consumer the entries were delivered to
-- ARGV[3]  the delay, in ms
-- ARGV[4]  the ack timeout, in ms, of a group without stored settings
-- ARGV[5]  the delivery limit of a group without stored settings (0: none)
-- ARGV[6]  approximate maximum length of the dead-letter stream
-- ARGV[7]  '1' when the entries never reached the client (it left while they were read): they
--          go back uncounted, as if never delivered, and never to the dead letters
-- ARGV[8]  '1' when entries at their delivery limit move to the dead letters; '0' (Redis is
--          over maxmemory) when they are given back like the others instead, to move at their
--          next delivery
-- ARGV[9]  the settings hash's field for the ack timeout of this group
-- ARGV[10] the settings hash's field for the delivery limit of this group
-- ARGV[11..] entry IDs
--
-- Returns {requeued, dead-lettered}, or {-1, the group's ack timeout in ms} when the delay is
-- longer than that. A requeued entry is given an idle time of the ack timeout minus the delay,
-- so that consumers claim it (as an entry idle past the ack timeout) once the delay is over.
-- Entries not pending for this consumer are left alone (one that went to another consumer
-- after its ack timeout is that consumer's now), and so are entries trimmed from the stream
-- meanwhile (Redis drops them from the pending list). Requeued entries wait under the consumer
-- `~delayed`, which no client can be called: the name is not valid.
local group, consumer = ARGV[1], ARGV[2]
local stored = redis.call('HMGET', KEYS[3], ARGV[9], ARGV[10])
local ack_timeout = tonumber(stored[1]) or tonumber(ARGV[4])
local max_deliveries = tonumber(stored[2]) or tonumber(ARGV[5])
local delay = tonumber(ARGV[3])
if delay > ack_timeout then
  return {-1, ack_timeout}
end
local idle = ack_timeout - delay
local undelivered = ARGV[7] == '1'
local may_dead_letter = ARGV[8] == '1'
local requeued, dead = 0, 0
for i = 11, #ARGV do
  local id = ARGV[i]
  local deliveries, owner = pending_entry(group, id)
  if owner == consumer then
    if may_dead_letter and not undelivered and max_deliveries > 0 and deliveries >= max_deliveries then
      local entry = redis.call('XRANGE', KEYS[1], id, id)
      if #entry == 1 then
        dead_letter(group, id, entry[1][2], deliveries, 'max_deliveries', ARGV[6])
        dead = dead + 1
      else
        -- Trimmed away while pending: nothing is left to deliver.
        redis.call('XACK', KEYS[1], group, id)
      end
    else
      local claim = {'XCLAIM', KEYS[1], group, '~delayed', 0, id, 'IDLE', idle}
      if undelivered then
        claim[#claim + 1] = 'RETRYCOUNT'
        claim[#claim + 1] = math.max(deliveries - 1, 0)
      end
      claim[#claim + 1] = 'JUSTID'
      requeued = requeued + #redis.call(unpack(claim))
    end
  end
end
return {requeued, dead}
