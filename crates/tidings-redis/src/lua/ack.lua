-- Acks ids for a group. KEYS[1] stream.
-- ARGV: queue name, group, retention max len (-1: none), retention max age ms, ids...
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
with_retention(q, ARGV[3], ARGV[4])
local groups = groups_of(q.stream)
local acked = 0
for i = 5, #ARGV do
  acked = acked + ack_one(q, ARGV[2], ARGV[i], groups)
end
if acked > 0 then trim_retained(q, now_ms()) end
return acked
