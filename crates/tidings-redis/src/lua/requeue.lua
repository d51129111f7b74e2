-- Moves dead letters back to the queue. KEYS[1] stream.
-- ARGV: queue name, LeanMQ dead-letter group, count, then per entry:
--   dead-letter id, only group ('' for all), number of field values k, k values
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local moved, at = 0, 4
for _ = 1, tonumber(ARGV[3]) do
  local id, only, k = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local f = {unpack(ARGV, at + 3, at + 2 + k)}
  at = at + 3 + k
  if #redis.call('XRANGE', q.dlq, id, id) > 0 then
    if only ~= '' then f[#f + 1] = 'only'; f[#f + 1] = only end
    redis.call('XADD', q.stream, '*', unpack(f))
    redis.call('XDEL', q.dlq, id)
    redis.call('ZREM', q.dlq .. ':expiry', id)
    -- LeanMQ leaves requeued entries pending in its DLQ group; clear them.
    redis.pcall('XACK', q.dlq, ARGV[2], id)
    moved = moved + 1
  end
end
return moved
