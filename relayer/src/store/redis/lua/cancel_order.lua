-- Cancels an open order of one user.
--
-- KEYS[1]: the market's base key (see book.lua).
-- ARGV: orderId, userId, retentionMs.
-- Returns {"ok", orderJson}, {"not_found"} or {"not_open", status}.
local o = load_order(ARGV[1])
if o == nil or o.user ~= ARGV[2] then return { 'not_found' } end
if not is_open(o) then return { 'not_open', o.status } end
level_sub(o, remaining(o), true)
o.status = 'cancelled'
save_order(o, ARGV[3])
return { 'ok', encode_order(o) }
