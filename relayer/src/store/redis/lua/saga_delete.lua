-- Removes a saga's entry if the caller holds it.
-- KEYS[1]: the saga's shard hash (see saga_write.lua). ARGV: id, owner.
local meta = redis.call('HGET', KEYS[1], ARGV[1] .. ':meta')
if meta and string.match(meta, '^(%S+)') == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1] .. ':meta', ARGV[1] .. ':rec')
  return { '1' }
end
return { '0' }
