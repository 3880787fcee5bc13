-- ARGV[2]: tokens wanted (the caller caps it at the bucket size).
-- Returns {1, remaining, us_until_full} when taken, {0, remaining, us_until_n_available} when not.
local n = math.min(tonumber(ARGV[2]), cap)
if tokens >= n then
  tokens = tokens - n
  local until_full = store(tokens)
  return {1, math.floor(math.max(0, tokens)), until_full}
end
store(tokens)
return {0, math.floor(math.max(0, tokens)), math.ceil((n - tokens) / per_us)}
