-- apply.lua: apply one transition atomically (record, deadline index, outbox, dedup).
--
-- KEYS[1] record hash            ({tag}:rec:<env>:<user>:<device>)
-- KEYS[2] dedup marker           ({tag}:seen:<input id>)
-- KEYS[3] deadline index zset    ({tag}:deadlines)
-- KEYS[4] outbox zset            ({tag}:outbox)
-- KEYS[5] outbox events hash     ({tag}:outbox:events)
-- ARGV[1] expected version: `ver` of the record the decision was made on, "" for no record
-- ARGV[2] new version (the event id)
-- ARGV[3] new record JSON
-- ARGV[4] record expiry, Unix ms (PEXPIREAT)
-- ARGV[5] deadline member (<env>:<user>:<device>)
-- ARGV[6] deadline score, Unix ms, or "" to remove the device from the index
-- ARGV[7] event JSON
-- ARGV[8] outbox visibility, Unix ms (when another worker may re-publish it)
-- ARGV[9] dedup marker lifetime in ms, "0" for none (expiries have no input id)
-- Returns 1 applied, 0 conflict (the record changed since it was read), -1 duplicate.
-- Example: EVALSHA <sha> 5 k1 k2 k3 k4 k5 "" <event-id> '{"r":..}' 1700000000000 e:u:d 1699990000000 '{"id":..}' 1699900005000 604800000
--
-- Validate first, write last: nothing is written unless every check passed.
if ARGV[9] ~= '0' and redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local version = redis.call('HGET', KEYS[1], 'ver')
if (version or '') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'ver', ARGV[2], 'json', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
if ARGV[6] == '' then
  redis.call('ZREM', KEYS[3], ARGV[5])
else
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
end
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[2])
redis.call('HSET', KEYS[5], ARGV[2], ARGV[7])
if ARGV[9] ~= '0' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[9])
end
return 1
