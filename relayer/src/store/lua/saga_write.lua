-- Writes a saga log entry unless another owner holds it.
-- KEYS[1]: the saga's hash "<prefix>{s:<sagaId>}" (fields owner, lease, state, record).
-- ARGV: owner, leaseUntilMs, state, record. Returns 1 when written, 0 when the lease is lost.
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return { '0' } end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', ARGV[2], 'state', ARGV[3],
  'record', ARGV[4])
return { '1' }
