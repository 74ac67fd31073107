-- Undoes the match of one placement (the rules are those of book.rs, OrderBook::undo).
--
-- KEYS[1]: the market's base key (see book.lua).
-- ARGV: takerOrderId, retentionMs, then the fence (saga id or "", epoch, lease end; see
-- fence.lua). Answers {"fenced"} (changing nothing) when the fence refuses.
-- Returns {"undone", takerJson or "", fillCount, fillJson..., cancelledCount, cancelledJson...,
-- releaseJson...}; the reply is recorded under "<base>:x:<takerOrderId>" so a repeat answers
-- it again and a late match of the placement is refused.
local retention = ARGV[2]
if fence_refused(base, ARGV[3], ARGV[4], ARGV[5]) then return { 'fenced' } end
fence_mark(base, ARGV[3], ARGV[4], retention)
local xk = base .. ':x:' .. ARGV[1]
local raw = redis.call('GET', xk)
if not raw then
  local r = { 'undone', '', '0', '0' }
  redis.call('SET', xk, cjson.encode(r), 'PX', retention)
  return r
end
local rec = cjson.decode(raw)
if rec[1] == 'undone' then return rec end

local function revert(o, f)
  o.filled = n_sub(o.filled, f.amount)
  o.notional = n_sub(o.notional, n_mul(f.amount, f.price))
  o.paid = n_sub(o.paid, f.collateral)
end
local function reopened(o)
  if o.filled == '0' then return 'open' end
  return 'partially_filled'
end

local n = tonumber(rec[2])
local fills = {}
for i = 1, n do fills[i] = cjson.decode(rec[2 + i]) end
local releases = {}
for i = n, 1, -1 do
  local f = fills[i]
  local m = load_order(f.maker)
  if m ~= nil then
    local was_open = is_open(m)
    local back_in = m.status == 'filled' and f.makerDone == '1'
    revert(m, f)
    if was_open then
      local l = sidekey('l', m.side)
      redis.call('HSET', l, m.price, n_add(redis.call('HGET', l, m.price) or '0', f.amount))
      m.status = reopened(m)
    elseif back_in then
      m.status = reopened(m)
      level_add(m)
      redis.call('PERSIST', okey(m.id))
    else
      m.status = 'cancelled'
      local amount = f.amount
      if m.side == 'buy' then amount = f.collateral end
      releases[#releases + 1] = cjson.encode({ tradeId = f.tradeId, orderId = m.id,
        user = m.user, side = m.side, amount = amount })
    end
    save_order(m, retention)
  end
end

local taker_json = ''
local taker = load_order(ARGV[1])
if taker ~= nil then
  if is_open(taker) then level_sub(taker, remaining(taker), true) end
  for i = 1, n do revert(taker, fills[i]) end
  taker.status = 'cancelled'
  save_order(taker, retention)
  taker_json = encode_order(taker)
end

local reply = { 'undone', taker_json, tostring(n) }
for i = 1, n do reply[#reply + 1] = rec[2 + i] end
reply[#reply + 1] = tostring(#rec - 2 - n)
for i = 3 + n, #rec do reply[#reply + 1] = rec[i] end
for _, r in ipairs(releases) do reply[#reply + 1] = r end
redis.call('SET', xk, cjson.encode(reply), 'PX', retention)
return reply
