-- Writes a saga log entry unless another owner holds it.
-- KEYS[1]: the saga's shard hash "<prefix>{sagas:<n>}": fields "<id>:meta" ("<owner> <leaseUntilMs>
--   <state>") and "<id>:rec" (the record).
-- ARGV: id, owner, leaseUntilMs, state, record. Returns {"1"} when written, {"0"} when the
-- entry belongs to another owner (the lease was lost).
local meta = redis.call('HGET', KEYS[1], ARGV[1] .. ':meta')
if meta and string.match(meta, '^(%S+)') ~= ARGV[2] then return { '0' } end
redis.call('HSET', KEYS[1], ARGV[1] .. ':meta', ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4],
  ARGV[1] .. ':rec', ARGV[5])
return { '1' }
