-- Saga fencing (see `store::Fence`), shared by the scripts that change saga-owned state. A
-- fenced write carries the saga's id, its owner's lease epoch and the lease's end (ms since the
-- Unix epoch, by the relayer's clock). It is refused when the lease has ended by this server's
-- clock, or when a newer epoch of the same saga already wrote to this slot (recorded under
-- "<slot key>:f:<sagaId>", same hash tag, kept for the retention, from epoch 2 on). An empty saga id: no fence.
-- Call fence_refused before the script's first write, fence_mark after its writes.
local function fence_refused(slot, saga, epoch, lease_until)
  if saga == '' then return false end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now > tonumber(lease_until) then return true end
  local seen = redis.call('GET', slot .. ':f:' .. saga)
  return seen ~= false and tonumber(seen) > tonumber(epoch)
end

-- NB: epoch 1 (the saga's first owner) is not marked: no older epoch exists to refuse.
local function fence_mark(slot, saga, epoch, retention)
  if saga == '' or epoch == '1' then return end
  local k = slot .. ':f:' .. saga
  if redis.call('GET', k) ~= epoch then redis.call('SET', k, epoch, 'PX', retention) end
end

