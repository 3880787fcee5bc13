-- tollgate shared budgets, format v1: one decision for every budget a request has.
-- Per account i (a key's or a project's budget in one window), KEYS[2i-1] is a hash
-- {spent, reserved} in nano-dollars and KEYS[2i] a sorted set of the reservations in flight
-- ("id:amount", scored by expiry on the server's clock in ms).
-- ARGV[1]: cost, ARGV[2]: reservation id "id:cost", ARGV[3]: reservation ttl in ms,
-- ARGV[4]: idle ttl in ms; then per account ARGV[3+2i]: limit, ARGV[4+2i]: its spend as the
-- database has it, or '' when not read yet.
-- Amounts are whole numbers below 2^53 (exact in Lua's doubles); they reach Redis as the
-- callers' strings or through %.0f, never through tostring, which rounds to 14 digits.
-- Returns {1} when reserved in every account, {0, i, committed} when account i has no room
-- (nothing reserved anywhere), {2, i, ...} when the accounts listed are not in Redis yet.
local n = #KEYS / 2
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local missing = {2}
for i = 1, n do
  local account, flight = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('EXISTS', account) == 0 then
    local known = ARGV[4 + 2 * i]
    if known == '' then
      table.insert(missing, i)
    else
      -- A new generation: reservations of an older one (before a flush) no longer count.
      redis.call('DEL', flight)
      redis.call('HSET', account, 'spent', known, 'reserved', '0')
    end
  end
end
if #missing > 1 then
  return missing
end

local cost = tonumber(ARGV[1])
for i = 1, n do
  local account, flight = KEYS[2 * i - 1], KEYS[2 * i]
  local reserved = tonumber(redis.call('HGET', account, 'reserved')) or 0
  -- Reservations of requests whose instance died stop counting once they expire.
  local expired = redis.call('ZRANGEBYSCORE', flight, '-inf', string.format('%d', now))
  if #expired > 0 then
    for _, member in ipairs(expired) do
      reserved = reserved - (tonumber(string.match(member, ':(%d+)$')) or 0)
    end
    reserved = math.max(0, reserved)
    redis.call('ZREMRANGEBYSCORE', flight, '-inf', string.format('%d', now))
    redis.call('HSET', account, 'reserved', string.format('%.0f', reserved))
  end
  local committed = (tonumber(redis.call('HGET', account, 'spent')) or 0) + reserved
  if committed + cost > tonumber(ARGV[3 + 2 * i]) then
    return {0, i, committed}
  end
end

local expiry = string.format('%d', now + tonumber(ARGV[3]))
for i = 1, n do
  local account, flight = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBY', account, 'reserved', ARGV[1])
  redis.call('ZADD', flight, expiry, ARGV[2])
  redis.call('PEXPIRE', account, ARGV[4])
  redis.call('PEXPIRE', flight, ARGV[4])
end
return {1}
