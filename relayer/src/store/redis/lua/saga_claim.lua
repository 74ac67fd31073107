-- Takes a saga over when it is not manual and its lease is ours or has run out; a new owner
-- gets the next epoch.
-- KEYS[1]: the saga's shard hash (see saga_write.lua). ARGV: id, owner, leaseUntilMs, nowMs.
-- Returns {owner, lease, state, record, epoch} after the claim, or {} when not claimable.
local meta = redis.call('HGET', KEYS[1], ARGV[1] .. ':meta')
if not meta then return {} end
local owner, lease, state, epoch = string.match(meta, '^(%S+) (%S+) (%S+) ?(%S*)$')
if owner == nil then return {} end
if epoch == nil or epoch == '' then epoch = '0' end
if state == 'manual' then return {} end
if owner ~= ARGV[2] and tonumber(lease) >= tonumber(ARGV[4]) then return {} end
if owner ~= ARGV[2] then epoch = tostring(tonumber(epoch) + 1) end
redis.call('HSET', KEYS[1], ARGV[1] .. ':meta', ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. state .. ' ' .. epoch)
return { ARGV[2], ARGV[3], state, redis.call('HGET', KEYS[1], ARGV[1] .. ':rec') or '', epoch }
