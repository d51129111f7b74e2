-- Deletes a consumer group; what it owed (its pending entries and those
-- after its position) and no other group owes leaves the stream, or is
-- kept for retention, as if the group had acked it. KEYS[1] stream.
-- ARGV: queue name, group, retention max len (-1: none), retention max age ms
-- Returns 1 if the group existed, 0 if not.
if not queue(KEYS[1]) then return no_queue(ARGV[1]) end
local q = with_retention(queue_keys(KEYS[1]), ARGV[3], ARGV[4])
local group = ARGV[2]
local groups = groups_of(q.stream)
local last
local rest = {}
for _, g in ipairs(groups) do
  if g.name == group then last = g.last else rest[#rest + 1] = g end
end
if not last then return 0 end
local owed = {}
local start = '-'
repeat
  local page = redis.call('XPENDING', q.stream, group, start, '+', 500)
  for _, p in ipairs(page) do
    -- (an entry that expired meanwhile may be pending still, and gone)
    if #redis.call('XRANGE', q.stream, p[1], p[1]) > 0 then owed[#owed + 1] = p[1] end
  end
  if #page > 0 then start = '(' .. page[#page][1] end
until #page < 500
start = '(' .. last
repeat
  local page = redis.call('XRANGE', q.stream, start, '+', 'COUNT', 500)
  for _, e in ipairs(page) do owed[#owed + 1] = e[1] end
  if #page > 0 then start = '(' .. page[#page][1] end
until #page < 500
redis.call('XGROUP', 'DESTROY', q.stream, group)
redis.call('DEL', q.stream .. ':held:' .. group)
local finished = {}
for _, id in ipairs(owed) do
  if done_elsewhere(q.stream, id, group, rest) then finished[#finished + 1] = id end
end
for _, id in ipairs(finished) do finish(q, id) end
if q.keeps then trim_retained(q, now_ms()) end
return 1
