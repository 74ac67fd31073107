-- Records how a placement ended on its claim, if that placement holds the claim.
--
-- KEYS[1]: the claim hash (see claim.lua).
-- ARGV[1]: "result" (placed) or "failed"; ARGV[2]: the record's JSON; ARGV[3]: "1" when the
--   order is finished (filled, cancelled or failed), then the claim expires after ARGV[4]
--   milliseconds like its order; ARGV[5]: the placement id (or, for a claim of an older build
--   without one, the order id); ARGV[6..8]: the fence (see fence.lua).
-- Returns {"1"} when recorded, {"0"} when the claim is gone or held by another placement,
-- {"fenced"} when the fence refuses (nothing written).
if fence_refused(KEYS[1], ARGV[6], ARGV[7], ARGV[8]) then return { 'fenced' } end
local raw = redis.call('HGET', KEYS[1], 'claim')
if not raw then
  -- NB: marked all the same, so that a stale owner cannot claim the id afterwards.
  fence_mark(KEYS[1], ARGV[6], ARGV[7], ARGV[4])
  return { '0' }
end
local ok, held = pcall(cjson.decode, raw)
if not ok or type(held) ~= 'table' then return { '0' } end
local placement = held.placementId
if placement == nil or placement == '' then placement = ARGV[5] end
if placement ~= ARGV[5] then return { '0' } end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
fence_mark(KEYS[1], ARGV[6], ARGV[7], ARGV[4])
return { '1' }
