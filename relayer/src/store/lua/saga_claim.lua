-- Takes a saga over when it is not manual and its lease is ours or has run out.
-- KEYS[1]: the saga's hash. ARGV: owner, leaseUntilMs, nowMs.
-- Returns {owner, lease, state, record} after the claim, or {} when not claimable.
local f = redis.call('HMGET', KEYS[1], 'owner', 'lease', 'state', 'record')
if not f[1] or f[3] == 'manual' then return {} end
if f[1] ~= ARGV[1] and tonumber(f[2]) >= tonumber(ARGV[3]) then return {} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', ARGV[2])
return { ARGV[1], ARGV[2], f[3], f[4] }
