-- Open orders of a market, optionally of one user, in arrival order.
--
-- KEYS[1]: the market's base key (see book.lua).
-- ARGV[1]: userId, or "" for every user.
-- Returns {orderJson, ...}.
local found = {}
for _, s in ipairs({ 'buy', 'sell' }) do
  for _, m in ipairs(redis.call('ZRANGE', sidekey('q', s), 0, -1)) do
    local o = load_order(string.sub(m, 22))
    if o ~= nil and (ARGV[1] == '' or o.user == ARGV[1]) then
      found[#found + 1] = { seq = string.sub(m, 1, 20), json = encode_order(o) }
    end
  end
end
table.sort(found, function(a, b) return a.seq < b.seq end)
local reply = {}
for _, f in ipairs(found) do reply[#reply + 1] = f.json end
return reply
