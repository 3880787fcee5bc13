-- KEYS[1]: the lease pool (see lease_acquire.lua). ARGV[1]: lease id, ARGV[2]: ttl in ms.
-- Returns 1 when renewed, 0 when the lease is gone. A lease still in the set was never
-- counted as free (every acquire purges expired ones first), so extending it is safe.
local key = KEYS[1]
local ttl = tonumber(ARGV[2])
if not redis.call('ZSCORE', key, ARGV[1]) then
  return 0
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', key, 'XX', string.format('%d', now + ttl), ARGV[1])
if redis.call('PTTL', key) < ttl then
  redis.call('PEXPIRE', key, string.format('%d', ttl))
end
return 1
