-- Deletes a queue and everything of it. KEYS[1] stream. ARGV: queue name
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
for _, g in ipairs(groups_of(q.stream)) do
  redis.call('DEL', q.stream .. ':held:' .. g.name)
end
redis.call('DEL', q.stream, q.dlq, q.meta, q.dlq .. ':metadata', q.expiry,
  q.dlq .. ':expiry', q.delayed, q.retained)
-- Processes that knew the queue read it as deleted, not lost (keys.rs: tombstone).
redis.call('SET', q.stream .. ':deleted', '1', 'EX', 86400)
return 1
