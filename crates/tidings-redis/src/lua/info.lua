-- Counts of a queue, as JSON. KEYS[1] stream.
-- ARGV: queue name, retention max len, retention max age ms
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
with_retention(q, ARGV[2], ARGV[3])
local now = now_ms()
trim_retained(q, now)
redis.call('ZREMRANGEBYSCORE', q.delayed, '-inf', now)
local exists = redis.call('EXISTS', q.stream) == 1
local res = {
  now = now,
  length = exists and redis.call('XLEN', q.stream) or 0,
  retained = redis.call('ZCARD', q.retained),
  dead_letters = redis.call('XLEN', q.dlq),
  expired_total = tonumber(redis.call('HGET', q.meta, 'expired_total') or '0'),
  dead_lettered_total = tonumber(redis.call('HGET', q.meta, 'dead_lettered_total') or '0'),
  config = redis.call('HGET', q.meta, 'tidings') or '',
  created_at = redis.call('HGET', q.meta, 'created_at') or '',
  first = '',
  groups = {},
}
local first = redis.call('XRANGE', q.stream, '-', '+', 'COUNT', 1)
if first[1] then res.first = first[1][1] end
local delayed = redis.call('ZRANGE', q.delayed, 0, -1)
for _, g in ipairs(groups_of(q.stream)) do
  local held = q.stream .. ':held:' .. g.name
  local held_total = redis.call('ZCARD', held)
  local held_later = redis.call('ZCOUNT', held, '(' .. now, '+inf')
  local unread_delayed = 0
  for _, id in ipairs(delayed) do
    if not id_le(id, g.last) then unread_delayed = unread_delayed + 1 end
  end
  local lag = g.lag
  if not lag then
    -- Redis cannot tell the lag after deletions past the group's position.
    lag = #redis.call('XRANGE', q.stream, '(' .. g.last, '+')
  end
  local consumers = {}
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', q.stream, g.name)) do
    local info = {}
    for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
    consumers[#consumers + 1] = {name = info['name'], pending = info['pending'], idle = info['idle']}
  end
  res.groups[#res.groups + 1] = {
    name = g.name,
    ready = math.max(0, lag - unread_delayed) + (held_total - held_later),
    delayed = held_later + unread_delayed,
    pending = math.max(0, g.pending - held_total),
    consumers = consumers,
  }
end
return cjson.encode(res)
