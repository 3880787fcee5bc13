-- tollgate shared token bucket, state format v1 (the key name carries the version too).
-- KEYS[1]: the bucket hash {tokens, ts}. ARGV[1]: tokens per minute (>= 1).
-- tokens is fractional and may be negative (a debt from settlement); ts is the Redis
-- server's clock in microseconds, so every instance refills by the same clock.
local key = KEYS[1]
local cap = tonumber(ARGV[1])
local per_us = cap / 60000000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  -- Unknown or expired: the key only expires long after it would have been full.
  tokens = cap
elseif now > ts then
  tokens = math.min(cap, tokens + (now - ts) * per_us)
else
  -- The clock went back (e.g. a failover): no refill, and a smaller limit still applies.
  tokens = math.min(cap, tokens)
end

-- Writes the bucket back and returns the microseconds until it is full again.
local function store(t)
  local until_full = math.ceil(math.max(0, cap - t) / per_us)
  -- %.17g and %d keep every digit; tostring would round to 14 significant digits.
  redis.call('HSET', key, 'tokens', string.format('%.17g', t), 'ts', string.format('%d', now))
  -- Idle buckets disappear, but only after twice the time they need to refill completely.
  local ttl_ms = math.max(300000, 2 * math.ceil(until_full / 1000))
  redis.call('PEXPIRE', key, string.format('%d', ttl_ms))
  return until_full
end
