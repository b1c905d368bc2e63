-- forget.lua: drop a deadline-index entry whose record no longer exists.
--
-- KEYS[1] record hash            ({tag}:rec:<env>:<user>:<device>)
-- KEYS[2] deadline index zset    ({tag}:deadlines)
-- ARGV[1] deadline member (<env>:<user>:<device>)
-- Returns 1 if the entry was removed, 0 if the record exists (then apply.lua owns the entry).
-- Example: EVALSHA <sha> 2 p:{3}:rec:e:u:d p:{3}:deadlines e:u:d
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
return redis.call('ZREM', KEYS[2], ARGV[1])
