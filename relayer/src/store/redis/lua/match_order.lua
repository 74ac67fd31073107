-- Matches an incoming order against the book and rests what is left (the rules of book.rs:
-- price-time priority, execution at the maker's price, cumulative per-buy-order rounding,
-- self-trade prevention "cancel resting").
--
-- KEYS[1]: the market's base key (see book.lua).
-- ARGV: orderId (the placement id), userId, side, price, amount, reserved, createdAtMs,
-- retentionMs, clientOrderId, then the fence (saga id or "", epoch, lease end; see fence.lua),
-- then the most fills and the most self-trade cancellations this placement makes (book.rs's
-- MAX_FILLS_PER_ORDER and MAX_SELF_TRADE_CANCELS_PER_ORDER): when either is reached matching
-- stops and the remainder rests, so the script's work is bounded whatever the book holds.
-- Returns {orderJson, fillCount, fillJson..., cancelledJson...}. A fill's "makerDone" is "1"
-- when the maker order finished with it.
-- Nothing is written when an argument or the book's data cannot be computed with (an error
-- reply names it).
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
local opposite = ARGV[3] == 'buy' and 'sell' or 'buy'
local function crosses(maker_price)
  if ARGV[3] == 'buy' then return tonumber(maker_price) <= tonumber(ARGV[4]) end
  return tonumber(maker_price) >= tonumber(ARGV[4])
end

-- The caps (validated by check() before they bound anything that writes).
local max_fills, max_removed = tonumber(ARGV[13]) or 0, tonumber(ARGV[14]) or 0

-- Checks everything the match below computes with (see book.lua), walking the opposite queue
-- the way the match will consume it, before the first write.
local function check()
  for i, what in pairs({ [4] = 'price', [5] = 'amount', [6] = 'reserved', [7] = 'createdAtMs', [8] = 'retentionMs',
      [13] = 'maxFills', [14] = 'maxSelfTradeCancels' }) do
    if not canonical(ARGV[i]) then return corrupt('argument', what .. ' is not a decimal') end
  end
  if ARGV[3] ~= 'buy' and ARGV[3] ~= 'sell' then return corrupt('argument', 'side') end
  if #ARGV[4] > 6 or ARGV[4] == '0' or ARGV[5] == '0' then return corrupt('argument', 'price or amount') end
  if ARGV[3] == 'buy' and n_cmp(ARGV[6], n_ceil_scale(n_mul(ARGV[5], tonumber(ARGV[4])))) < 0 then
    return corrupt('argument', 'reserved is below the collateral of the amount')
  end
  local seq = redis.call('HGET', base .. ':meta', 'seq')
  if seq and not string.match(seq, '^%d+$') then return corrupt('book', 'seq is not a count') end
  local left, need, i, nfills, nremoved = ARGV[5], {}, 0, 0, 0
  while left ~= '0' and nfills < max_fills and nremoved < max_removed do
    local top = redis.call('ZRANGE', sidekey('q', opposite), i, i)
    if #top == 0 then break end
    i = i + 1
    local maker = load_order(string.sub(top[1], 22))
    if maker == nil then
      nremoved = nremoved + 1
    else
      local why = invalid_order(maker)
      if why then return corrupt('order ' .. tostring(maker.id), why) end
      if not crosses(maker.price) then break end
      local take = remaining(maker)
      if maker.user ~= ARGV[2] then
        take = n_min(left, take)
        left = n_sub(left, take)
        nfills = nfills + 1
      else
        nremoved = nremoved + 1
      end
      need[maker.price] = n_add(need[maker.price] or '0', take)
    end
  end
  for price, n in pairs(need) do
    local why = invalid_level(opposite, price, n)
    if why then return corrupt('book', why) end
  end
  local why = invalid_level(ARGV[3], ARGV[4], nil)
  if why then return corrupt('book', why) end
  return nil
end
local refused = check()
if refused then return refused end

local seq = redis.call('HINCRBY', base .. ':meta', 'seq', 1) - 1
local o = { id = ARGV[1], cid = ARGV[9], user = ARGV[2], side = ARGV[3], price = ARGV[4], amount = ARGV[5],
  filled = '0', notional = '0', reserved = ARGV[6], paid = '0', status = 'open',
  seq = string.format('%d', seq), created = ARGV[7] }
local fills, cancelled, removed = {}, {}, 0

while remaining(o) ~= '0' and #fills < max_fills and removed < max_removed do
  local top = redis.call('ZRANGE', sidekey('q', opposite), 0, 0)
  if #top == 0 then break end
  local maker_id = string.sub(top[1], 22)
  local maker = load_order(maker_id)
  if maker == nil then
    -- NB: unreachable while every queued id has its order; drop it rather than loop forever
    -- (counted with the self-trade cancellations, so it is bounded too).
    redis.call('ZREM', sidekey('q', opposite), top[1])
    redis.call('ZREM', index_key(), maker_id)
    removed = removed + 1
  else
    local level = tonumber(maker.price)
    if not crosses(maker.price) then break end
    if maker.user == o.user then
      removed = removed + 1
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
      -- NB: after an undone fill a buy may have paid more than ceil(notional) (see book.rs):
      -- that stays paid, and this fill costs only what exceeds it.
      local due = n_ceil_scale(buy.notional)
      local collateral = '0'
      if n_cmp(due, paid_before) > 0 then
        collateral = n_sub(due, paid_before)
        buy.paid = due
      end
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
