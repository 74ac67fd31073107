-- Writes a saga log entry: a new one (ARGV[6] "1": only if there is none, at epoch 1) or an
-- existing one held by the writer (same owner and epoch).
-- KEYS[1]: the saga's shard hash "<prefix>{sagas:<n>}": fields "<id>:meta" ("<owner>
--   <leaseUntilMs> <state> <epoch>"; entries of older builds have no epoch: 0) and "<id>:rec"
--   (the record).
-- ARGV: id, owner, leaseUntilMs, state, record, create ("1"/"0"), epoch. Returns {"1"} when
-- written, {"0"} when refused (another owner or epoch holds it, or it is gone).
local meta = redis.call('HGET', KEYS[1], ARGV[1] .. ':meta')
local epoch = ARGV[7]
if ARGV[6] == '1' then
  if meta then return { '0' } end
  epoch = '1'
else
  if not meta then return { '0' } end
  local owner, _, _, held = string.match(meta, '^(%S+) (%S+) (%S+) ?(%S*)$')
  if held == nil or held == '' then held = '0' end
  if owner ~= ARGV[2] or held ~= ARGV[7] then return { '0' } end
end
redis.call('HSET', KEYS[1], ARGV[1] .. ':meta', ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. epoch,
  ARGV[1] .. ':rec', ARGV[5])
return { '1' }
