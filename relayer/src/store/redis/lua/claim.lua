-- Claims a user's order id for a placement, or returns who has it.
--
-- KEYS[1]: the claim hash "<prefix>{c:<userId>:<orderId>}": "claim" (JSON of the claim without
--   its outcome) and, once placement ended, "result" (JSON of the placement record) or "failed"
--   (JSON of the failure).
-- ARGV[1]: the claim's JSON; ARGV[2]: its placement id.
-- Returns {"claimed"} (also when the same placement claimed it before) or
-- {"existing", claimJson, resultJson or "", failedJson or ""}.
local c = redis.call('HMGET', KEYS[1], 'claim', 'result', 'failed')
if c[1] then
  local ok, held = pcall(cjson.decode, c[1])
  if ok and type(held) == 'table' and held.placementId == ARGV[2] then return { 'claimed' } end
  return { 'existing', c[1], c[2] or '', c[3] or '' }
end
redis.call('HSET', KEYS[1], 'claim', ARGV[1])
return { 'claimed' }
