-- One market's book, shared by the market scripts. Every key derives from KEYS[1], the
-- market's base key "<prefix>{m:<marketKey>}", so all of them sit in its hash slot:
--   <base>:meta       hash: "seq", the next arrival number minus one; "dv", the depth version:
--                     one more each time a script changes the price levels (see depth.lua)
--   <base>:o:<id>     hash: one order (fields below), expiring after retention once finished
--   <base>:q:b, :q:a  sorted sets of resting bids / asks: score -price (bids) or price (asks),
--                     member "<seq, 20 digits>:<id>", so ZRANGE 0 0 is the best price, earliest
--   <base>:p:b, :p:a  sorted sets of the prices that have resting orders (score = member = price)
--   <base>:l:b, :l:a  hashes: "<price>" -> sum of the remaining shares resting at that price,
--                     "<price>:n" -> number of resting orders at that price
--   <base>:i          sorted set of the resting orders by arrival: score = seq, member = id
--   <base>:i:<user>   the same, of one user's resting orders (gone when it has none)
-- "<base>:meta" also holds "ix" = "1" once the arrival index holds every resting order: a book
-- written by a build without the index is indexed (once, from its queues) by the first script
-- that changes its resting orders.
-- Order fields: id (the placement id), cid (the client order id; absent in orders of older
-- builds), user, side ("buy"/"sell"), price, amount, filled, notional, reserved, paid,
-- status ("open", "partially_filled", "filled", "cancelled"), seq, created: all strings.
local base = KEYS[1]

local function okey(id) return base .. ':o:' .. id end
local function sidekey(kind, side) return base .. ':' .. kind .. (side == 'buy' and ':b' or ':a') end

local function load_order(id)
  local flat = redis.call('HGETALL', okey(id))
  if #flat == 0 then return nil end
  local o = {}
  for i = 1, #flat, 2 do o[flat[i]] = flat[i + 1] end
  return o
end

local function save_order(o, retention)
  local k = okey(o.id)
  if o.cid ~= nil and o.cid ~= '' then redis.call('HSET', k, 'cid', o.cid) end
  redis.call('HSET', k, 'id', o.id, 'user', o.user, 'side', o.side, 'price', o.price,
    'amount', o.amount, 'filled', o.filled, 'notional', o.notional, 'reserved', o.reserved,
    'paid', o.paid, 'status', o.status, 'seq', o.seq, 'created', o.created)
  if o.status == 'filled' or o.status == 'cancelled' then
    redis.call('PEXPIRE', k, retention)
  end
end

local function encode_order(o)
  return cjson.encode({ id = o.id, cid = o.cid, user = o.user, side = o.side, price = o.price,
    amount = o.amount, filled = o.filled, notional = o.notional, reserved = o.reserved,
    paid = o.paid, status = o.status, seq = o.seq, created = o.created })
end

local function remaining(o) return n_sub(o.amount, o.filled) end
local function is_open(o) return o.status == 'open' or o.status == 'partially_filled' end
local function queue_member(o) return string.format('%020d', tonumber(o.seq)) .. ':' .. o.id end
local function queue_score(o)
  if o.side == 'buy' then return '-' .. o.price end
  return o.price
end

local function index_key(user)
  if user then return base .. ':i:' .. user end
  return base .. ':i'
end

-- Builds the arrival index from the queues, once per book (see the header).
local function ensure_index()
  if redis.call('HGET', base .. ':meta', 'ix') then return end
  for _, s in ipairs({ 'buy', 'sell' }) do
    for _, m in ipairs(redis.call('ZRANGE', sidekey('q', s), 0, -1)) do
      local id, seq = string.sub(m, 22), tonumber(string.sub(m, 1, 20))
      redis.call('ZADD', index_key(), seq, id)
      local user = redis.call('HGET', okey(id), 'user')
      if user then redis.call('ZADD', index_key(user), seq, id) end
    end
  end
  redis.call('HSET', base .. ':meta', 'ix', '1')
end

-- Marks the price levels changed: the depth version moves on, once per script run, so a
-- depth snapshot taken at the old version is known stale by everyone who reads the version.
local levels_changed_done = false
local function levels_changed()
  if levels_changed_done then return end
  levels_changed_done = true
  redis.call('HINCRBY', base .. ':meta', 'dv', 1)
end

-- A new order rests at its price.
local function level_add(o)
  ensure_index()
  levels_changed()
  redis.call('ZADD', index_key(), o.seq, o.id)
  redis.call('ZADD', index_key(o.user), o.seq, o.id)
  local l, p, amount = sidekey('l', o.side), o.price, remaining(o)
  local cur = redis.call('HGET', l, p)
  if cur then
    redis.call('HSET', l, p, n_add(cur, amount))
    redis.call('HINCRBY', l, p .. ':n', 1)
  else
    redis.call('HSET', l, p, amount, p .. ':n', 1)
    redis.call('ZADD', sidekey('p', o.side), p, p)
  end
  redis.call('ZADD', sidekey('q', o.side), queue_score(o), queue_member(o))
end

-- `amount` shares of a resting order leave its level; `leaves` when the order itself does.
local function level_sub(o, amount, leaves)
  levels_changed()
  local l, p = sidekey('l', o.side), o.price
  local left = n_sub(redis.call('HGET', l, p) or '0', amount)
  if leaves then
    ensure_index()
    redis.call('ZREM', index_key(), o.id)
    redis.call('ZREM', index_key(o.user), o.id)
    redis.call('ZREM', sidekey('q', o.side), queue_member(o))
    if redis.call('HINCRBY', l, p .. ':n', -1) <= 0 then
      redis.call('HDEL', l, p, p .. ':n')
      redis.call('ZREM', sidekey('p', o.side), p)
      return
    end
  end
  redis.call('HSET', l, p, left)
end


-- Validation before a script's first write: Redis does not roll a script back, so a script
-- that failed midway (on data it cannot compute with) would leave the writes it made so far.
-- The book scripts check everything they will compute with first and answer an error reply
-- naming what is wrong, having written nothing.
local function canonical(v)
  return type(v) == 'string' and (v == '0' or string.match(v, '^[1-9]%d*$') ~= nil)
end

local function corrupt(what, why) return redis.error_reply('corrupt ' .. what .. ': ' .. why) end

-- Why order `o` (as loaded) cannot be computed with, or nil.
local function invalid_order(o)
  for _, f in ipairs({ 'id', 'user' }) do
    if type(o[f]) ~= 'string' or o[f] == '' then return 'field ' .. f .. ' is missing' end
  end
  if o.side ~= 'buy' and o.side ~= 'sell' then return 'side is ' .. tostring(o.side) end
  if not (o.status == 'open' or o.status == 'partially_filled' or o.status == 'filled'
      or o.status == 'cancelled') then
    return 'status is ' .. tostring(o.status)
  end
  for _, f in ipairs({ 'price', 'amount', 'filled', 'notional', 'reserved', 'paid', 'seq', 'created' }) do
    if not canonical(o[f]) then return 'field ' .. f .. ' is not a decimal: ' .. tostring(o[f]) end
  end
  if #o.price > 6 or o.price == '0' then return 'price out of range: ' .. o.price end
  if n_cmp(o.filled, o.amount) > 0 then return 'filled exceeds amount' end
  if o.side == 'buy' then
    -- NB: a buy trades at its price or better, so its notional is at most filled x price.
    if n_cmp(o.notional, n_mul(o.filled, tonumber(o.price))) > 0 then
      return 'notional exceeds filled x price'
    end
    if n_cmp(o.reserved, n_ceil_scale(n_mul(o.amount, tonumber(o.price)))) < 0 then
      return 'reserved is below the collateral of its amount'
    end
    -- NB: paid may exceed ceil(notional) after an undone fill (what was paid stays paid).
    if n_cmp(o.paid, o.reserved) > 0 then return 'paid exceeds reserved' end
  end
  return nil
end

-- Why the level of `side` at `price` cannot lose `need` shares (or take more), or nil.
local function invalid_level(side, price, need)
  local v = redis.call('HMGET', sidekey('l', side), price, price .. ':n')
  if v[1] and not canonical(v[1]) then return 'level ' .. price .. ' is not a decimal' end
  if v[2] and not string.match(v[2], '^%d+$') then return 'level ' .. price .. ' count is not a count' end
  if need and n_cmp(v[1] or '0', need) < 0 then
    return 'level ' .. price .. ' holds less than its resting orders'
  end
  return nil
end
