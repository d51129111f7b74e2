-- Holds a delivery back until a time: a nack with a retry delay, or a
-- delayed send read before it is due. KEYS[1] stream.
-- ARGV: queue name, group, id, mode ('retry': ARGV[4] is a delay and the
--   delivery count is kept; 'delayed': ARGV[4] is the due time in ms and
--   the count goes back to 0), ARGV[4], visibility ms.
-- Returns 1, or 0 if the message is not pending in the group.
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local group, id, mode = ARGV[2], ARGV[3], ARGV[4]
local vis = tonumber(ARGV[6])
local p = redis.pcall('XPENDING', q.stream, group, id, id, 1)
if p.err or #p == 0 then return 0 end
local now = now_ms()
local due, count = tonumber(ARGV[5]), p[1][4]
if mode == 'retry' then
  due = now + due
else
  count = 0
end
-- Redis counts idle time from the delivery time: set it so the entry times
-- out (and is reclaimed) when due, or is held again until then.
redis.call('XCLAIM', q.stream, group, p[1][2], 0, id,
  'TIME', now + math.min(due - now, vis) - vis, 'RETRYCOUNT', count, 'JUSTID')
redis.call('ZADD', q.stream .. ':held:' .. group, due, id)
return 1
