-- Undoes the match of one placement (the rules are those of book.rs, OrderBook::undo).
--
-- KEYS[1]: the market's base key (see book.lua).
-- ARGV: takerOrderId, retentionMs, then the fence (saga id or "", epoch, lease end; see
-- fence.lua). Answers {"fenced"} (changing nothing) when the fence refuses.
-- Returns {"undone", takerJson or "", fillCount, fillJson..., cancelledCount, cancelledJson...,
-- releaseJson...}; the reply is recorded under "<base>:x:<takerOrderId>" so a repeat answers
-- it again and a late match of the placement is refused. Nothing is written when the record or
-- an order cannot be computed with (an error reply names it).
local retention = ARGV[2]
if fence_refused(base, ARGV[3], ARGV[4], ARGV[5]) then return { 'fenced' } end
local xk = base .. ':x:' .. ARGV[1]
local raw = redis.call('GET', xk)
if not raw then
  local r = { 'undone', '', '0', '0' }
  redis.call('SET', xk, cjson.encode(r), 'PX', retention)
  fence_mark(base, ARGV[3], ARGV[4], retention)
  return r
end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' then return corrupt('placement record', 'not JSON') end
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
if n == nil or n < 0 or #rec < 2 + n then return corrupt('placement record', 'fill count') end
local fills = {}
for i = 1, n do
  local decoded, f = pcall(cjson.decode, rec[2 + i])
  if not decoded or type(f) ~= 'table' then return corrupt('placement record', 'fill ' .. i) end
  for _, k in ipairs({ 'amount', 'price', 'collateral', 'refund' }) do
    if not canonical(f[k]) then return corrupt('fill ' .. i, k .. ' is not a decimal') end
  end
  if #f.price > 6 or type(f.maker) ~= 'string' then return corrupt('fill ' .. i, 'price or maker') end
  fills[i] = f
end

-- Checks every revert below can be computed (see book.lua) before the first write: each
-- order gives back at least what its fills took, and the levels it re-enters are readable.
local function check()
  local back = {}
  local function owes(id, f)
    local b = back[id] or { amount = '0', notional = '0', paid = '0' }
    b.amount = n_add(b.amount, f.amount)
    b.notional = n_add(b.notional, n_mul(f.amount, tonumber(f.price)))
    b.paid = n_add(b.paid, f.collateral)
    back[id] = b
  end
  back[ARGV[1]] = { amount = '0', notional = '0', paid = '0' }
  for i = 1, n do
    owes(fills[i].maker, fills[i])
    owes(ARGV[1], fills[i])
  end
  for id, b in pairs(back) do
    local o = load_order(id)
    if o ~= nil then
      local why = invalid_order(o)
      if why then return corrupt('order ' .. id, why) end
      if n_cmp(o.filled, b.amount) < 0 or n_cmp(o.notional, b.notional) < 0
          or n_cmp(o.paid, b.paid) < 0 then
        return corrupt('order ' .. id, 'its fills took more than it holds')
      end
      local why_level = invalid_level(o.side, o.price, nil)
      if why_level then return corrupt('book', why_level) end
      if id == ARGV[1] and is_open(o) then
        why_level = invalid_level(o.side, o.price, remaining(o))
        if why_level then return corrupt('book', why_level) end
      end
    end
  end
  return nil
end
local refused = check()
if refused then return refused end
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
      levels_changed()
      redis.call('HSET', l, m.price, n_add(redis.call('HGET', l, m.price) or '0', f.amount))
      m.status = reopened(m)
    elseif back_in then
      m.status = reopened(m)
      level_add(m)
      redis.call('PERSIST', okey(m.id))
    else
      m.status = 'cancelled'
      -- NB: a buy that this fill completed also gets back its refund (the fill's balance
      -- moves, which would have released it, never ran).
      local amount = f.amount
      if m.side == 'buy' then amount = n_add(f.collateral, f.refund) end
      releases[#releases + 1] = cjson.encode({ tradeId = f.tradeId, orderId = m.id,
        user = m.user, side = m.side, amount = amount })
    end
    save_order(m, retention)
  end
end

local taker_json = ''
local taker = load_order(ARGV[1])
-- NB: a taker that rested after its placement and has left the book since ("left") had the
-- rest of its reservation released then (see UndoOutcome::taker_left).
local rested = false
if type(rec[1]) == 'string' then
  local decoded, matched = pcall(cjson.decode, rec[1])
  rested = decoded and type(matched) == 'table' and is_open(matched)
end
local left = false
if taker ~= nil then
  left = rested and not is_open(taker)
  if is_open(taker) then level_sub(taker, remaining(taker), true) end
  for i = 1, n do revert(taker, fills[i]) end
  taker.status = 'cancelled'
  save_order(taker, retention)
  local answered = cjson.decode(encode_order(taker))
  answered.left = left
  taker_json = cjson.encode(answered)
end

local reply = { 'undone', taker_json, tostring(n) }
for i = 1, n do reply[#reply + 1] = rec[2 + i] end
reply[#reply + 1] = tostring(#rec - 2 - n)
for i = 3 + n, #rec do reply[#reply + 1] = rec[i] end
for _, r in ipairs(releases) do reply[#reply + 1] = r end
redis.call('SET', xk, cjson.encode(reply), 'PX', retention)
fence_mark(base, ARGV[3], ARGV[4], retention)
return reply
