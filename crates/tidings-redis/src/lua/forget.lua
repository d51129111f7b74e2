-- Removes a consumer from a group if it holds no entry (Redis would drop
-- the entries it holds with it). KEYS[1] stream.
-- ARGV: queue name, group, consumer
-- Returns 1 if it was removed, 0 if not (unknown, or holding entries).
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local consumers = redis.pcall('XINFO', 'CONSUMERS', q.stream, ARGV[2])
if consumers.err then return 0 end
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] == ARGV[3] then
    if tonumber(info['pending']) > 0 then return 0 end
    redis.call('XGROUP', 'DELCONSUMER', q.stream, ARGV[2], ARGV[3])
    return 1
  end
end
return 0
