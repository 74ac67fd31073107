-- Records a placement's answer on its claim (if the claim still exists).
--
-- KEYS[1]: the claim hash (see claim.lua).
-- ARGV[1]: the placement record's JSON; ARGV[2]: "1" when the order is already finished (filled
--   or cancelled), then the claim expires after ARGV[3] milliseconds like its order.
-- Returns {"1"} when recorded, {"0"} when there was no claim.
if redis.call('EXISTS', KEYS[1]) == 0 then return { '0' } end
redis.call('HSET', KEYS[1], 'result', ARGV[1])
if ARGV[2] == '1' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return { '1' }
