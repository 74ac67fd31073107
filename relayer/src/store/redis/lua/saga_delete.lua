-- Removes a saga's entry if the caller holds it (same owner and epoch).
-- KEYS[1]: the saga's shard hash (see saga_write.lua). ARGV: id, owner, epoch.
local meta = redis.call('HGET', KEYS[1], ARGV[1] .. ':meta')
if not meta then return { '0' } end
local owner, _, _, epoch = string.match(meta, '^(%S+) (%S+) (%S+) ?(%S*)$')
if epoch == nil or epoch == '' then epoch = '0' end
if owner == ARGV[2] and epoch == ARGV[3] then
  redis.call('HDEL', KEYS[1], ARGV[1] .. ':meta', ARGV[1] .. ':rec')
  return { '1' }
end
return { '0' }
