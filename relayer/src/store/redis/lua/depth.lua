-- Aggregated depth, best first, at most ARGV[1] levels per side, with the depth version it
-- was read at (book.lua: "dv" of the meta hash; "0" for a book no script has changed since
-- the version was introduced).
--
-- KEYS[1]: the market's base key (see book.lua).
-- Returns {version, bidCount, price, amount, orders, ..., price, amount, orders, ...} (bids,
-- then asks). One HMGET per side reads every level's amount and order count.
local n = tonumber(ARGV[1])
local reply = { redis.call('HGET', base .. ':meta', 'dv') or '0' }
local function side(s, prices)
  if #prices == 0 then return end
  local fields = {}
  for _, p in ipairs(prices) do
    fields[#fields + 1] = p
    fields[#fields + 1] = p .. ':n'
  end
  local v = redis.call('HMGET', sidekey('l', s), unpack(fields))
  for i, p in ipairs(prices) do
    reply[#reply + 1] = p
    reply[#reply + 1] = v[2 * i - 1] or '0'
    reply[#reply + 1] = v[2 * i] or '0'
  end
end
local bids = redis.call('ZREVRANGE', sidekey('p', 'buy'), 0, n - 1)
local asks = redis.call('ZRANGE', sidekey('p', 'sell'), 0, n - 1)
reply[2] = tostring(#bids)
side('buy', bids)
side('sell', asks)
return reply
