-- Aggregated depth, best first, at most ARGV[1] levels per side.
--
-- KEYS[1]: the market's base key (see book.lua).
-- Returns {bidCount, price, amount, orders, ..., price, amount, orders, ...} (bids, then asks).
local n = tonumber(ARGV[1])
local reply = {}
local function side(s, prices)
  local l = sidekey('l', s)
  for _, p in ipairs(prices) do
    local v = redis.call('HMGET', l, p, p .. ':n')
    reply[#reply + 1] = p
    reply[#reply + 1] = v[1] or '0'
    reply[#reply + 1] = v[2] or '0'
  end
end
local bids = redis.call('ZREVRANGE', sidekey('p', 'buy'), 0, n - 1)
local asks = redis.call('ZRANGE', sidekey('p', 'sell'), 0, n - 1)
reply[1] = tostring(#bids)
side('buy', bids)
side('sell', asks)
return reply
