-- Cancels an open order of one user.
--
-- KEYS[1]: the market's base key (see book.lua).
-- ARGV: orderId (placement id), userId, retentionMs, then the fence (saga id or "", epoch,
-- lease end; see fence.lua), then "1" to cancel again. The cancellation is recorded on the
-- order ("cx", with what it leaves to release); cancelling again (the recovery of an
-- interrupted cancellation) answers an order so cancelled as cancelled again, with that release
-- (still due once; not recomputed, as an undo may have changed the order since).
-- Returns {"ok", orderJson, release}, {"not_found"}, {"not_open", status} or {"fenced"}; an error reply
-- (nothing written) when the order or its level cannot be computed with.
if fence_refused(base, ARGV[4], ARGV[5], ARGV[6]) then return { 'fenced' } end
local o = load_order(ARGV[1])
if o == nil or o.user ~= ARGV[2] then return { 'not_found' } end
if ARGV[7] == '1' and o.status == 'cancelled' and canonical(o.cx) then
  return { 'ok', encode_order(o), o.cx }
end
if not is_open(o) then return { 'not_open', o.status } end
local why = invalid_order(o) or invalid_level(o.side, o.price, remaining(o))
if why then return corrupt('order ' .. ARGV[1], why) end
-- What the cancellation leaves to release: the order's unpaid collateral (buy) or unfilled
-- shares (sell), as Order::still_reserved; kept on the order ("cx") for a repeat.
local release = remaining(o)
if o.side == 'buy' then
  if n_cmp(o.reserved, o.paid) < 0 then return corrupt('order ' .. ARGV[1], 'paid exceeds reserved') end
  release = n_sub(o.reserved, o.paid)
end
level_sub(o, remaining(o), true)
o.status = 'cancelled'
save_order(o, ARGV[3])
redis.call('HSET', okey(o.id), 'cx', release)
fence_mark(base, ARGV[4], ARGV[5], ARGV[3])
return { 'ok', encode_order(o), release }
