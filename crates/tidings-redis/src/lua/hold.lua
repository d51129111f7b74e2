-- Gives a delivery back to be retried after a delay. KEYS[1] stream.
-- ARGV: queue name, group, id, delay ms, visibility ms. Returns 1, or 0 if not pending.
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local group, id = ARGV[2], ARGV[3]
local delay, vis = tonumber(ARGV[4]), tonumber(ARGV[5])
local p = redis.pcall('XPENDING', q.stream, group, id, id, 1)
if p.err or #p == 0 then return 0 end
local now = now_ms()
-- Redis counts idle time from the delivery time: set it so the entry times
-- out (and is reclaimed) when the delay has passed, or re-held until then.
redis.call('XCLAIM', q.stream, group, p[1][2], 0, id,
  'TIME', now + math.min(delay, vis) - vis, 'RETRYCOUNT', p[1][4], 'JUSTID')
redis.call('ZADD', q.stream .. ':held:' .. group, now + delay, id)
return 1
