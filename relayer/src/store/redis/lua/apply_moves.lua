-- Applies balance moves to one account, all or none.
--
-- KEYS[1]: the account hash "<prefix>{u:<userId>}". Fields "<asset>:a" (available) and
--   "<asset>:r" (reserved), where <asset> is "c" (collateral) or "s:<marketKey>" (shares);
--   values are canonical decimal strings. An asset whose two buckets are zero is removed.
-- ARGV[1]: u64::MAX as a decimal string (the cap of a deposit: available + reserved).
-- ARGV[2]: retention of the operation-id marker in milliseconds.
-- ARGV[3]: operation id, or "" for none. With one, the marker "<KEYS[1]>:op:<id>" (same hash
--   tag) records that the moves were applied; a replay with a set marker changes nothing.
-- ARGV[4..6]: the fence (saga id or "", epoch, lease end; see fence.lua).
-- ARGV[7..]: moves, four values each: asset, from, to, amount; from/to are "a" (available),
--   "r" (reserved) or "e" (external).
-- Returns {"ok", dup, field, value, ...} (the account after, dup "1" when replayed),
-- {"insufficient", moveIndex, bucket, has}, {"overflow", moveIndex} or {"fenced"}; nothing is
-- written unless "ok" with dup "0".
local acct = KEYS[1]
local cap = ARGV[1]
local op = ''
if ARGV[3] ~= '' then op = acct .. ':op:' .. ARGV[3] end

if fence_refused(acct, ARGV[4], ARGV[5], ARGV[6]) then return { 'fenced' } end

if op ~= '' and redis.call('EXISTS', op) == 1 then
  local r = { 'ok', '1' }
  for _, v in ipairs(redis.call('HGETALL', acct)) do r[#r + 1] = v end
  return r
end

local touched, values, order = {}, {}, {}
local function get(field)
  if values[field] == nil then
    values[field] = redis.call('HGET', acct, field) or '0'
    order[#order + 1] = field
  end
  return values[field]
end

local idx = 0
for i = 7, #ARGV, 4 do
  idx = idx + 1
  local asset, from, to, amount = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  touched[asset] = true
  if from ~= 'e' then
    local f = asset .. ':' .. from
    local has = get(f)
    if n_cmp(has, amount) < 0 then
      return { 'insufficient', tostring(idx), from == 'a' and 'available' or 'reserved', has }
    end
    values[f] = n_sub(has, amount)
  end
  if to ~= 'e' then
    local t = asset .. ':' .. to
    values[t] = n_add(get(t), amount)
  end
  if from == 'e' then
    local total = n_add(get(asset .. ':a'), get(asset .. ':r'))
    if n_cmp(total, cap) > 0 then return { 'overflow', tostring(idx) } end
  end
end

for asset, _ in pairs(touched) do
  local a, r = get(asset .. ':a'), get(asset .. ':r')
  if a == '0' and r == '0' then
    redis.call('HDEL', acct, asset .. ':a', asset .. ':r')
  else
    redis.call('HSET', acct, asset .. ':a', a, asset .. ':r', r)
  end
end
if op ~= '' then redis.call('SET', op, '1', 'PX', ARGV[2]) end
fence_mark(acct, ARGV[4], ARGV[5], ARGV[2])

local r = { 'ok', '0' }
for _, v in ipairs(redis.call('HGETALL', acct)) do r[#r + 1] = v end
return r
