-- Events.Nack: give entries back to the group, to be delivered again after a delay.
--
-- KEYS[1]  the stream
-- KEYS[2]  its dead-letter stream
-- ARGV[1]  the group
-- ARGV[2]  the consumer the entries were delivered to
-- ARGV[3]  idle time to give them, in ms: the group's ack timeout minus the delay, so that
--          consumers claim them (as entries idle past the ack timeout) once the delay is over
-- ARGV[4]  the group's delivery limit (0: none)
-- ARGV[5]  approximate maximum length of the dead-letter stream
-- ARGV[6]  '1' when the entries never reached the client (it left while they were read): they
--          go back uncounted, as if never delivered, and never to the dead letters
-- ARGV[7..] entry IDs
--
-- Returns {requeued, dead-lettered}. Entries not pending for this consumer are left alone (one
-- that went to another consumer after its ack timeout is that consumer's now), and so are
-- entries trimmed from the stream meanwhile (Redis drops them from the pending list). Requeued
-- entries wait under the consumer `~delayed`, which no client can be called: the name is not
-- valid.
local group, consumer = ARGV[1], ARGV[2]
local max_deliveries = tonumber(ARGV[4])
local undelivered = ARGV[6] == '1'
local requeued, dead = 0, 0
for i = 7, #ARGV do
  local id = ARGV[i]
  local deliveries, owner = pending_entry(group, id)
  if owner == consumer then
    if not undelivered and max_deliveries > 0 and deliveries >= max_deliveries then
      local entry = redis.call('XRANGE', KEYS[1], id, id)
      if #entry == 1 then
        dead_letter(group, id, entry[1][2], deliveries, 'max_deliveries', ARGV[5])
        dead = dead + 1
      else
        -- Trimmed away while pending: nothing is left to deliver.
        redis.call('XACK', KEYS[1], group, id)
      end
    else
      local claim = {'XCLAIM', KEYS[1], group, '~delayed', 0, id, 'IDLE', ARGV[3]}
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
