-- ARGV[2]: tokens reserved by an earlier take, ARGV[3]: tokens actually used.
-- take never takes more than the bucket size, so neither does the reservation given back.
local reserved = math.min(tonumber(ARGV[2]), cap)
local actual = tonumber(ARGV[3])
-- Unused tokens return (never past full); an overrun goes below zero, a debt paid first.
store(math.min(cap, tokens + reserved - actual))
return 1
