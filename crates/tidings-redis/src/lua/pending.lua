-- Deliveries of a group handed out and neither acked nor given back
-- (entries held for a retry are given back), oldest first. KEYS[1] stream.
-- ARGV: queue name, group, most to list, visibility ms
-- Returns {{id, consumer, deliveries, ms until its visibility timeout ends}, ...}
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local group, limit, vis = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local held = q.stream .. ':held:' .. group
local out = {}
local start = '-'
while #out < limit do
  local page = redis.pcall('XPENDING', q.stream, group, start, '+', 100)
  -- No stream yet, or no such group: nothing pending.
  if page.err or #page == 0 then break end
  for _, p in ipairs(page) do
    if not redis.call('ZSCORE', held, p[1]) then
      -- Redis counts idle time from the delivery: the timeout ends `vis` after it.
      out[#out + 1] = {p[1], p[2], p[4], math.max(0, vis - p[3])}
      if #out >= limit then break end
    end
  end
  if #page < 100 then break end
  start = '(' .. page[#page][1]
end
return out
