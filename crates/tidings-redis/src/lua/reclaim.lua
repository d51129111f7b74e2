-- Finds deliveries of a group that timed out (idle longer than the
-- visibility timeout) and claims them for a consumer, counting the delivery;
-- re-holds held ones not yet due; lists those out of deliveries.
-- KEYS[1] stream. ARGV: queue name, group, consumer, count, visibility ms,
--   max deliveries
-- Returns {claimed {id, deliveries}, to dead-letter {id, reason, deliveries}}
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local group, consumer = ARGV[2], ARGV[3]
local count, vis, maxd = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local held = q.stream .. ':held:' .. group
local now = now_ms()
local pending = redis.pcall('XPENDING', q.stream, group, 'IDLE', vis, '-', '+', count)
if pending.err then return redis.error_reply('NOGROUP ' .. group) end
local claimed, dead = {}, {}
for _, p in ipairs(pending) do
  local id, owner, n = p[1], p[2], tonumber(p[4])
  local due = tonumber(redis.call('ZSCORE', held, id))
  if due and due > now then
    redis.call('XCLAIM', q.stream, group, owner, 0, id,
      'TIME', now + math.min(due - now, vis) - vis, 'RETRYCOUNT', n, 'JUSTID')
  elseif n >= maxd then
    dead[#dead + 1] = {id, 'not acknowledged after ' .. n .. ' deliveries (visibility timeout ' .. vis .. ' ms)', n}
  else
    local got = redis.call('XCLAIM', q.stream, group, consumer, 0, id,
      'RETRYCOUNT', n + 1, 'JUSTID')
    if due then redis.call('ZREM', held, id) end
    if #got == 0 then
      redis.call('XACK', q.stream, group, id)
    else
      claimed[#claimed + 1] = {id, n + 1}
    end
  end
end
return {claimed, dead}
