-- Acks ids for a group. KEYS[1] stream.
-- ARGV: queue name, group, retention max len (-1: none), retention max age ms, ids...
-- An id that was pending proves the queue is there: it is looked for only
-- when nothing was (each call costs several microseconds on this path).
local q = with_retention(queue_keys(KEYS[1]), ARGV[3], ARGV[4])
local acked = ack_ids(q, ARGV[2], {unpack(ARGV, 5)})
if acked == 0 then
  if not queue(KEYS[1]) then return no_queue(ARGV[1]) end
  return 0
end
if q.keeps then trim_retained(q, now_ms()) end
return acked
