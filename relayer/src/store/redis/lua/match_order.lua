-- Matches an incoming order against the book and rests what is left (the rules of book.rs:
-- price-time priority, execution at the maker's price, cumulative per-buy-order rounding,
-- self-trade prevention "cancel resting").
--
-- KEYS[1]: the market's base key (see book.lua).
-- ARGV: orderId (the placement id), userId, side, price, amount, reserved, createdAtMs,
-- retentionMs, clientOrderId, then the fence (saga id or "", epoch, lease end; see fence.lua).
-- Returns {orderJson, fillCount, fillJson..., cancelledJson...}. A fill's "makerDone" is "1"
-- when the maker order finished with it.
-- A placement is recorded under "<base>:x:<orderId>" (the reply, for retention): a repeat
-- answers the recorded reply; an undone placement (see undo_match.lua) answers {"undone"}.
local retention = ARGV[8]
if fence_refused(base, ARGV[10], ARGV[11], ARGV[12]) then return { 'fenced' } end
local recorded = redis.call('GET', base .. ':x:' .. ARGV[1])
if recorded then
  local r = cjson.decode(recorded)
  if r[1] == 'undone' then return { 'undone' } end
  return r
end
if redis.call('EXISTS', okey(ARGV[1])) == 1 then
  return redis.error_reply('order ' .. ARGV[1] .. ' already exists in this market')
end
local seq = redis.call('HINCRBY', base .. ':meta', 'seq', 1) - 1
local o = { id = ARGV[1], cid = ARGV[9], user = ARGV[2], side = ARGV[3], price = ARGV[4], amount = ARGV[5],
  filled = '0', notional = '0', reserved = ARGV[6], paid = '0', status = 'open',
  seq = string.format('%d', seq), created = ARGV[7] }
local limit = tonumber(o.price)
local opposite = o.side == 'buy' and 'sell' or 'buy'
local fills, cancelled = {}, {}

while remaining(o) ~= '0' do
  local top = redis.call('ZRANGE', sidekey('q', opposite), 0, 0)
  if #top == 0 then break end
  local maker_id = string.sub(top[1], 22)
  local maker = load_order(maker_id)
  if maker == nil then
    -- NB: unreachable while every queued id has its order; drop it rather than loop forever.
    redis.call('ZREM', sidekey('q', opposite), top[1])
  else
    local level = tonumber(maker.price)
    local crosses
    if o.side == 'buy' then crosses = level <= limit else crosses = level >= limit end
    if not crosses then break end
    if maker.user == o.user then
      level_sub(maker, remaining(maker), true)
      maker.status = 'cancelled'
      save_order(maker, retention)
      cancelled[#cancelled + 1] = encode_order(maker)
    else
      local amount = n_min(remaining(o), remaining(maker))
      local buy, sell = o, maker
      if o.side == 'sell' then buy, sell = maker, o end
      local notional = n_mul(amount, level)
      local paid_before = buy.paid
      buy.notional = n_add(buy.notional, notional)
      buy.paid = n_ceil_scale(buy.notional)
      local collateral = n_sub(buy.paid, paid_before)
      sell.notional = n_add(sell.notional, notional)
      sell.paid = n_add(sell.paid, collateral)
      for _, x in ipairs({ buy, sell }) do
        x.filled = n_add(x.filled, amount)
        if remaining(x) == '0' then x.status = 'filled' else x.status = 'partially_filled' end
      end
      local refund = '0'
      if remaining(buy) == '0' then refund = n_sub(buy.reserved, buy.paid) end
      local done = remaining(maker) == '0'
      level_sub(maker, amount, done)
      save_order(maker, retention)
      fills[#fills + 1] = cjson.encode({ tradeId = o.id .. '#' .. tostring(#fills),
        maker = maker.id, makerCid = maker.cid, taker = o.id, buyer = buy.user, seller = sell.user,
        buyOrder = buy.id, sellOrder = sell.id, price = maker.price, amount = amount,
        collateral = collateral, refund = refund, makerDone = done and '1' or '0' })
    end
  end
end

if remaining(o) ~= '0' then level_add(o) end
save_order(o, retention)

local reply = { encode_order(o), tostring(#fills) }
for _, f in ipairs(fills) do reply[#reply + 1] = f end
for _, c in ipairs(cancelled) do reply[#reply + 1] = c end
redis.call('SET', base .. ':x:' .. o.id, cjson.encode(reply), 'PX', retention)
fence_mark(base, ARGV[10], ARGV[11], retention)
return reply
