-- Deletes every message of a queue; its groups stay, emptied. KEYS[1] stream.
-- ARGV: queue name
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local n = 0
if redis.call('EXISTS', q.stream) == 1 then
  n = redis.call('XLEN', q.stream)
  local groups = groups_of(q.stream)
  -- Recreating a group is the only way to empty its pending list at once.
  for _, g in ipairs(groups) do
    redis.call('XGROUP', 'DESTROY', q.stream, g.name)
    redis.call('DEL', q.stream .. ':held:' .. g.name)
  end
  redis.call('XTRIM', q.stream, 'MAXLEN', 0)
  for _, g in ipairs(groups) do
    redis.call('XGROUP', 'CREATE', q.stream, g.name, '$')
  end
end
redis.call('DEL', q.expiry, q.delayed, q.retained)
return n
