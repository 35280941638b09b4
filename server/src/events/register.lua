#!lua
-- Events.Append and CreateGroup, for a stream not (or no longer) counted: count it in its
-- namespace's stream index, unless the namespace is at its cap on streams.
--
-- Grows memory (an index entry): refused whole while Redis is over maxmemory.
--
-- KEYS[1]  the namespace's stream index: sorted set, stream name -> time (Redis ms) after
--          which the stream has surely expired unless registered again
-- ARGV[1]  the stream's name
-- ARGV[2]  the namespace's cap on streams
-- ARGV[3]  how long the registration holds, in ms: the stream's idle TTL plus twice the life
--          of its registration mark (once for the mark; once more as a margin for the time
--          between this call and the append that sets the mark, which shortens the mark's life
--          by that time as the caller measures it). Without its mark, the stream registers
--          again before it can be written to, so it cannot outlive the hold unregistered.
--
-- Returns 1 when the stream is counted, 0 when the namespace is at its cap.
--
-- The index is an over-count, never an under-count: an entry stays until its stream has
-- surely expired, so a live stream is always counted. Entries of expired streams are dropped
-- here, so the index holds at most the cap, and it expires itself with its last entry. The
-- hold is measured on this node's clock from now, after the stream's node set its mark: the
-- two clocks never need to agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now))
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
local hold = tonumber(ARGV[3])
-- GT: a replica configured with a shorter idle TTL never shortens another's registration.
redis.call('ZADD', KEYS[1], 'GT', string.format('%.0f', now + hold), ARGV[1])
if redis.call('PTTL', KEYS[1]) < hold then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
