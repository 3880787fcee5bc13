-- tollgate shared concurrency leases, format v1.
-- KEYS[1]: sorted set of lease ids scored by expiry (server clock, ms).
-- ARGV[1]: most live leases, ARGV[2]: new lease id, ARGV[3]: ttl in ms.
-- Returns 1 when the lease was granted, 0 when the pool is full.
local key = KEYS[1]
local max = tonumber(ARGV[1])
local ttl = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- Leases of crashed holders stop counting once their expiry passes.
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now))
if redis.call('ZCARD', key) >= max then
  return 0
end
redis.call('ZADD', key, string.format('%d', now + ttl), ARGV[2])
-- The set outlives its longest lease; never shorten it for a lease with a shorter ttl.
if redis.call('PTTL', key) < ttl then
  redis.call('PEXPIRE', key, string.format('%d', ttl))
end
return 1
