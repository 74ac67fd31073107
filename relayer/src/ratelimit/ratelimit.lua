-- Checks and counts one request against every tier in one atomic step (see window.rs for the
-- algorithm; this is the same arithmetic). All KEYS share one hash tag, so the script touches a
-- single Redis Cluster slot.
--
-- KEYS[i]: the counters of tier i, a hash of bucket index -> count.
-- ARGV[3i-2], ARGV[3i-1], ARGV[3i]: window ms, limit, buckets of tier i.
-- Returns, per tier: { allowed (0/1), count, retry_after_ms, reset_ms }, and last the server
-- time in ms.
--
-- NB: numbers stay far below 2^53 (time in ms, counts), so Lua doubles are exact here.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local tiers = {}
local admitted = true

for i = 1, n do
  local window = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  local nb = tonumber(ARGV[3 * i])
  local width = math.max(1, math.ceil(window / nb))
  local current = math.floor(now / width)
  local oldest = current - nb
  local raw = redis.call('HGETALL', KEYS[i])
  local buckets = {}
  local count = 0
  for j = 1, #raw, 2 do
    local idx = tonumber(raw[j])
    if idx < oldest then
      redis.call('HDEL', KEYS[i], raw[j])
    else
      local c = tonumber(raw[j + 1])
      buckets[#buckets + 1] = { idx, c }
      count = count + c
    end
  end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  if count >= limit then
    admitted = false
  end
  tiers[i] = { window = window, limit = limit, nb = nb, width = width, current = current,
               buckets = buckets, count = count }
end

local out = {}
for i = 1, n do
  local tier = tiers[i]
  if admitted then
    -- A new bucket sets the key's lifetime to when that bucket stops counting; requests that
    -- land in an existing bucket leave nothing that counts longer, so they skip the PEXPIRE.
    if redis.call('HINCRBY', KEYS[i], tier.current, 1) == 1 then
      redis.call('PEXPIRE', KEYS[i], (tier.nb + 1) * tier.width)
    end
    local last = tier.buckets[#tier.buckets]
    if last and last[1] == tier.current then
      last[2] = last[2] + 1
    else
      tier.buckets[#tier.buckets + 1] = { tier.current, 1 }
    end
    tier.count = tier.count + 1
  end
  local function leaves(idx)
    return math.max(0, (idx + tier.nb + 1) * tier.width - now)
  end
  local retry = 0
  if tier.count >= tier.limit then
    local left = tier.count
    for _, b in ipairs(tier.buckets) do
      left = left - b[2]
      retry = leaves(b[1])
      if left < tier.limit then
        break
      end
    end
  end
  local reset = 0
  if #tier.buckets > 0 then
    reset = leaves(tier.buckets[#tier.buckets][1])
  end
  local allowed = 0
  if admitted or tier.count < tier.limit then
    allowed = 1
  end
  out[i] = { allowed, tier.count, retry, reset }
end
out[n + 1] = now
return out
