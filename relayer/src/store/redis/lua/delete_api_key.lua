-- Revokes an API key.
--
-- KEYS[1]: the API-key hash "<prefix>{apikeys}": "h:<sha256>" -> record JSON,
--   "i:<keyId>" -> sha256.
-- ARGV[1]: the key id. Returns {"1"} when a key was revoked, {"0"} when none had that id.
local h = redis.call('HGET', KEYS[1], 'i:' .. ARGV[1])
if not h then return { '0' } end
redis.call('HDEL', KEYS[1], 'i:' .. ARGV[1], 'h:' .. h)
return { '1' }
