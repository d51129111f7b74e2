-- Deletes dead letters. KEYS[1] stream. ARGV: queue name, 'all' or 'ids', ids...
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
if ARGV[2] == 'all' then
  local n = redis.call('XLEN', q.dlq)
  if n > 0 then redis.call('XTRIM', q.dlq, 'MAXLEN', 0) end
  redis.call('DEL', q.dlq .. ':expiry')
  return n
end
local n = 0
for i = 3, #ARGV do
  n = n + redis.call('XDEL', q.dlq, ARGV[i])
  redis.call('ZREM', q.dlq .. ':expiry', ARGV[i])
end
return n
