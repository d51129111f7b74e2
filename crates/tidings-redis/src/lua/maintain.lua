-- Applies time to a queue nobody reads: drops expired messages (or names
-- them, to be dead-lettered) and trims what retention keeps, a bounded step
-- per run. KEYS[1] stream. ARGV: queue name, expired messages go to the dead
-- letters (1/0), retention max len, max age, step.
-- Returns {messages dropped or trimmed, ids to dead-letter as expired}.
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
with_retention(q, ARGV[3], ARGV[4])
local now = now_ms()
local removed = 0
local dead = {}
local expired = redis.call('ZRANGEBYSCORE', q.expiry, '-inf', now / 1000, 'LIMIT', 0,
  tonumber(ARGV[5]))
if #expired > 0 then
  if ARGV[2] == '1' then
    dead = expired
  else
    local groups = groups_of(q.stream)
    for _, id in ipairs(expired) do expire_drop(q, id, groups) end
    removed = #expired
  end
end
if q.keeps then
  local kept = redis.call('ZCARD', q.retained)
  trim_retained(q, now)
  removed = removed + kept - redis.call('ZCARD', q.retained)
end
return {removed, dead}
