-- Runs before a native XREADGROUP in the same pipeline: checks the queue,
-- creates the group if asked, and applies expiry. Message bodies never pass
-- through Lua (converting them costs more than reading them).
-- KEYS[1] stream. ARGV: queue name, group, create the group (1/0),
--   expired messages go to the dead letters (1/0)
-- Returns {server time ms, ids to dead-letter as expired, ms until a held
--   message of the group is due (-1: none)}
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local group = ARGV[2]
if ARGV[3] == '1' then
  redis.pcall('XGROUP', 'CREATE', q.stream, group, '0', 'MKSTREAM')
end
local now = now_ms()
local dead = {}
local expired = redis.call('ZRANGEBYSCORE', q.expiry, '-inf', now / 1000, 'LIMIT', 0, 100)
if #expired > 0 then
  if ARGV[4] == '1' then
    dead = expired
  else
    local groups = groups_of(q.stream)
    for _, id in ipairs(expired) do expire_drop(q, id, groups) end
  end
end
local due_in = -1
local first = redis.call('ZRANGE', q.stream .. ':held:' .. group, 0, 0, 'WITHSCORES')
if first[2] then due_in = math.max(0, tonumber(first[2]) - now) end
return {now, dead, due_in}
