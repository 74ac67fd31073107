-- One page of the open orders of a market, optionally of one user, in arrival order.
--
-- KEYS[1]: the market's base key (see book.lua).
-- ARGV[1]: userId, or "" for every user; ARGV[2]: only orders that arrived after this seq
-- (the previous page's next), or "" from the first; ARGV[3]: at most this many orders.
-- Returns {next, orderJson, ...}: next is the seq to continue after, "" when no more follow.
-- Reads limit + 1 entries of the arrival index (book.lua) and one hash per order answered: the
-- cost is the page's. NB: a book no write script has indexed yet (written by a build without
-- the index) is read from its queues instead, once per listing, until its next write.
local limit = tonumber(ARGV[3])
if limit == nil or limit < 1 then return redis.error_reply('open_orders: limit') end
local min = '-inf'
if ARGV[2] ~= '' then
  if not string.match(ARGV[2], '^%d+$') then return redis.error_reply('open_orders: after') end
  min = '(' .. ARGV[2]
end
local user = nil
if ARGV[1] ~= '' then user = ARGV[1] end

-- entries: { id, seq, id, seq, ... } in arrival order, at most limit + 1 of them.
local entries
if redis.call('HGET', base .. ':meta', 'ix') then
  entries = redis.call('ZRANGEBYSCORE', index_key(user), min, '+inf', 'WITHSCORES', 'LIMIT', 0, limit + 1)
else
  local after, found = tonumber(ARGV[2]) or -1, {}
  for _, s in ipairs({ 'buy', 'sell' }) do
    for _, m in ipairs(redis.call('ZRANGE', sidekey('q', s), 0, -1)) do
      local id, seq = string.sub(m, 22), tonumber(string.sub(m, 1, 20))
      if seq > after and (user == nil or redis.call('HGET', okey(id), 'user') == user) then
        found[#found + 1] = { id = id, seq = seq }
      end
    end
  end
  table.sort(found, function(a, b) return a.seq < b.seq end)
  entries = {}
  for i = 1, math.min(#found, limit + 1) do
    entries[#entries + 1] = found[i].id
    entries[#entries + 1] = tostring(found[i].seq)
  end
end

local n = #entries / 2
local reply = { '' }
for i = 1, math.min(n, limit) do
  local o = load_order(entries[2 * i - 1])
  -- NB: an entry a build without the index left behind (a rollback) may name a closed order.
  if o ~= nil and is_open(o) then reply[#reply + 1] = encode_order(o) end
end
if n > limit then reply[1] = string.format('%d', tonumber(entries[2 * limit])) end
return reply
