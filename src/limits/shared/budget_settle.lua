-- tollgate shared budgets, format v1 (see budget_reserve.lua): a reservation ends.
-- KEYS as for a reservation. ARGV[1]: reservation id, ARGV[2]: amount reserved,
-- ARGV[3]: actual cost, ARGV[4]: idle ttl in ms.
-- The reservation is given back only if it still counts (it did not expire, Redis did not
-- lose it); the cost is added wherever the account exists. An account that is gone is filled
-- from the database when next used, and the database has this request's usage row.
for i = 1, #KEYS / 2 do
  local account, flight = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('EXISTS', account) == 1 then
    -- ('-0' is not an integer to Redis.)
    if redis.call('ZREM', flight, ARGV[1]) == 1 and ARGV[2] ~= '0' then
      redis.call('HINCRBY', account, 'reserved', '-' .. ARGV[2])
    end
    redis.call('HINCRBY', account, 'spent', ARGV[3])
    redis.call('PEXPIRE', account, ARGV[4])
    redis.call('PEXPIRE', flight, ARGV[4])
  end
end
return 1
