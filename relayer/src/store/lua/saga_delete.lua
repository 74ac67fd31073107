-- Removes a saga's entry if the caller holds it. KEYS[1]: the saga's hash. ARGV: owner.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return { '1' }
end
return { '0' }
