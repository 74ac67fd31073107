-- Exact arithmetic on non-negative integers of any size, kept as decimal strings.
--
-- Redis Lua numbers are doubles (exact only up to 2^53), but balances reach u64::MAX and an
-- order's notional (price x amount) reaches ~1.8e25, so every quantity crosses this boundary as
-- a decimal string in canonical form (no sign, no leading zeros) and is computed on base-10^6
-- limbs here. A limb times a price (< 10^6) stays below 10^12: exact in a double.
local BASE = 1000000

local function n_parse(s)
  local t = {}
  local i = #s
  while i >= 1 do
    local j = i - 5
    if j < 1 then j = 1 end
    t[#t + 1] = tonumber(string.sub(s, j, i))
    i = j - 1
  end
  while #t > 1 and t[#t] == 0 do t[#t] = nil end
  if #t == 0 then t[1] = 0 end
  return t
end

local function n_str(t)
  while #t > 1 and t[#t] == 0 do t[#t] = nil end
  local parts = { string.format('%d', t[#t]) }
  for k = #t - 1, 1, -1 do parts[#parts + 1] = string.format('%06d', t[k]) end
  return table.concat(parts)
end

-- -1, 0 or 1 as a < b, a == b, a > b (canonical strings compare by length, then text).
local function n_cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function n_add(a, b)
  local x, y = n_parse(a), n_parse(b)
  local r, carry = {}, 0
  for k = 1, math.max(#x, #y) do
    local s = (x[k] or 0) + (y[k] or 0) + carry
    if s >= BASE then
      r[k] = s - BASE
      carry = 1
    else
      r[k] = s
      carry = 0
    end
  end
  if carry > 0 then r[#r + 1] = carry end
  return n_str(r)
end

-- a - b; raises an error when b > a (callers check first: this is an invariant breach).
local function n_sub(a, b)
  if n_cmp(a, b) < 0 then error('n_sub: negative result ' .. a .. ' - ' .. b) end
  local x, y = n_parse(a), n_parse(b)
  local r, borrow = {}, 0
  for k = 1, #x do
    local d = x[k] - (y[k] or 0) - borrow
    if d < 0 then
      r[k] = d + BASE
      borrow = 1
    else
      r[k] = d
      borrow = 0
    end
  end
  return n_str(r)
end

-- a x k for an integer 0 <= k < 10^6.
local function n_mul(a, k)
  local x = n_parse(a)
  local r, carry = {}, 0
  for i = 1, #x do
    local p = x[i] * k + carry
    r[i] = p % BASE
    carry = (p - r[i]) / BASE
  end
  while carry > 0 do
    local limb = carry % BASE
    r[#r + 1] = limb
    carry = (carry - limb) / BASE
  end
  return n_str(r)
end

-- ceil(a / 10^6): drop the lowest limb, round up when it was not zero.
local function n_ceil_scale(a)
  local x = n_parse(a)
  local low = x[1]
  if #x == 1 then return low > 0 and '1' or '0' end
  table.remove(x, 1)
  local q = n_str(x)
  if low > 0 then q = n_add(q, '1') end
  return q
end

local function n_min(a, b)
  if n_cmp(a, b) <= 0 then return a end
  return b
end

