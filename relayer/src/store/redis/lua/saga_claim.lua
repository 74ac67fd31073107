-- Takes a saga over when it is not manual and its lease is ours or has run out.
-- KEYS[1]: the saga's shard hash (see saga_write.lua). ARGV: id, owner, leaseUntilMs, nowMs.
-- Returns {owner, lease, state, record} after the claim, or {} when not claimable.
local meta = redis.call('HGET', KEYS[1], ARGV[1] .. ':meta')
if not meta then return {} end
local owner, lease, state = string.match(meta, '^(%S+) (%S+) (%S+)$')
if state == 'manual' then return {} end
if owner ~= ARGV[2] and tonumber(lease) >= tonumber(ARGV[4]) then return {} end
redis.call('HSET', KEYS[1], ARGV[1] .. ':meta', ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. state)
return { ARGV[2], ARGV[3], state, redis.call('HGET', KEYS[1], ARGV[1] .. ':rec') or '' }
