-- Acks ids for a group. KEYS[1] stream.
-- ARGV: queue name, group, retention max len (-1: none), retention max age ms, ids...
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
with_retention(q, ARGV[3], ARGV[4])
local ids = {unpack(ARGV, 5)}
local acked = ack_ids(q, ARGV[2], ids, groups_of(q.stream))
if acked > 0 and q.keeps then trim_retained(q, now_ms()) end
return acked
