-- Claims an order id for a placement, or returns who has it.
--
-- KEYS[1]: the claim hash "<prefix>{c:<orderId>}": "claim" (JSON of the claim without its
--   result) and, once placement finished, "result" (JSON of the placement record).
-- ARGV[1]: the claim's JSON.
-- Returns {"claimed"} or {"existing", claimJson, resultJson or ""}.
local c = redis.call('HMGET', KEYS[1], 'claim', 'result')
if c[1] then return { 'existing', c[1], c[2] or '' } end
redis.call('HSET', KEYS[1], 'claim', ARGV[1])
return { 'claimed' }
