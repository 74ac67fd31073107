-- Claims a user's order id for a placement, or returns who has it.
--
-- KEYS[1]: the claim hash "<prefix>{c:<userId>:<orderId>}": "claim" (JSON of the claim without
--   its outcome) and, once placement ended, "result" (JSON of the placement record) or "failed"
--   (JSON of the failure).
-- KEYS[2]: where an older build kept the claim of the same order id, "<prefix>{c:<orderId>}"
--   (not scoped to its user): a claim there of the same user holds the id too. NB: the one
--   script with a second slot; it runs on a single Redis node (Redis Cluster would refuse it),
--   so on a cluster (which never held such claims) KEYS[2] is left out.
-- ARGV[1]: the claim's JSON; ARGV[2]: its placement id; ARGV[3]: its user id; ARGV[4..6]: the
--   fence (see fence.lua), checked before the claim is written.
-- Returns {"claimed"} (also when the same placement claimed it before),
-- {"existing", claimJson, resultJson or "", failedJson or ""} or {"fenced"}.
local c = redis.call('HMGET', KEYS[1], 'claim', 'result', 'failed')
if c[1] then
  local ok, held = pcall(cjson.decode, c[1])
  if ok and type(held) == 'table' and held.placementId == ARGV[2] then return { 'claimed' } end
  return { 'existing', c[1], c[2] or '', c[3] or '' }
end
local legacy = {}
if KEYS[2] then legacy = redis.call('HMGET', KEYS[2], 'claim', 'result') end
if legacy[1] then
  local ok, held = pcall(cjson.decode, legacy[1])
  if ok and type(held) == 'table' and held.userId == ARGV[3] then
    return { 'existing', legacy[1], legacy[2] or '', '' }
  end
end
if fence_refused(KEYS[1], ARGV[4], ARGV[5], ARGV[6]) then return { 'fenced' } end
redis.call('HSET', KEYS[1], 'claim', ARGV[1])
return { 'claimed' }
