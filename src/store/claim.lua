-- claim.lua: lease the outbox events that are due for (re)publication.
--
-- KEYS[1] outbox zset            ({tag}:outbox)
-- KEYS[2] outbox events hash     ({tag}:outbox:events)
-- ARGV[1] now, Unix ms
-- ARGV[2] lease, ms: a claimed event is hidden from other claims this long
-- ARGV[3] most events to claim
-- Returns a flat list: event id, event JSON, event id, event JSON, ...
-- Example: EVALSHA <sha> 2 p:{3}:outbox p:{3}:outbox:events 1700000000000 5000 100
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
local visible_again = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(due) do
  local event = redis.call('HGET', KEYS[2], id)
  if event then
    redis.call('ZADD', KEYS[1], visible_again, id)
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = event
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return claimed
