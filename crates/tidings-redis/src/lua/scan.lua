-- Records of a key range. KEYS[1] the table's hash (its index is KEYS[1]..':keys').
-- ARGV: min, max (ZRANGEBYLEX bounds), reverse (1/0), limit (-1: none)
-- Returns key, value, key, value...
local index = KEYS[1] .. ':keys'
local keys
if ARGV[3] == '1' then
  keys = redis.call('ZREVRANGEBYLEX', index, ARGV[2], ARGV[1], 'LIMIT', 0, ARGV[4])
else
  keys = redis.call('ZRANGEBYLEX', index, ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[4])
end
local out = {}
for i = 1, #keys, 500 do
  local chunk = {unpack(keys, i, math.min(i + 499, #keys))}
  local values = redis.call('HMGET', KEYS[1], unpack(chunk))
  for j, k in ipairs(chunk) do
    if values[j] then
      out[#out + 1] = k
      out[#out + 1] = values[j]
    end
  end
end
return out
