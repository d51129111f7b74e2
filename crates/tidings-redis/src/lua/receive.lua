-- Takes messages for a consumer. KEYS[1] stream.
-- ARGV: queue name, group, consumer, count, visibility ms, max deliveries,
--   reclaim (1: look for timed-out deliveries), expiry to dead letters (1/0),
--   create the group (1/0)
-- Returns {deliveries {id, count, fields}, to dead-letter {id, reason, count},
--   last stream id (to block on), ms until a held message is due (-1: none)}
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local group, consumer = ARGV[2], ARGV[3]
local count, vis, maxd = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local expire_to_dlq = ARGV[8] == '1'
local held = q.stream .. ':held:' .. group
local now = now_ms()
if ARGV[9] == '1' then
  redis.pcall('XGROUP', 'CREATE', q.stream, group, '0', 'MKSTREAM')
end

local groups
local function all_groups()
  if not groups then groups = groups_of(q.stream) end
  return groups
end

local out, dead = {}, {}
local function expired(id)
  if expire_to_dlq then
    dead[#dead + 1] = {id, 'expired', 0}
  else
    expire_drop(q, id, all_groups())
  end
end

for _, id in ipairs(redis.call('ZRANGEBYSCORE', q.expiry, '-inf', now / 1000, 'LIMIT', 0, 100)) do
  expired(id)
end

local function hold(id, owner, due, n)
  redis.call('XCLAIM', q.stream, group, owner, 0, id,
    'TIME', now + math.min(due - now, vis) - vis, 'RETRYCOUNT', n, 'JUSTID')
  redis.call('ZADD', held, due, id)
end

local function accept(id, fields, n)
  local x = field(fields, 'x')
  if x and tonumber(x) <= now then return expired(id) end
  local only = field(fields, 'only')
  if only and only ~= group then
    ack_one(q, group, id, all_groups())
    return
  end
  local nb = field(fields, 'nb')
  if nb and tonumber(nb) > now then return hold(id, consumer, tonumber(nb), n - 1) end
  out[#out + 1] = {id, n, fields}
end

if ARGV[7] == '1' then
  local pending = redis.pcall('XPENDING', q.stream, group, 'IDLE', vis, '-', '+', count)
  if pending.err then return redis.error_reply('NOGROUP') end
  for _, p in ipairs(pending) do
    local id, owner, n = p[1], p[2], tonumber(p[4])
    local due = tonumber(redis.call('ZSCORE', held, id))
    if due and due > now then
      hold(id, owner, due, n)
    elseif n >= maxd then
      dead[#dead + 1] = {id, 'not acknowledged after ' .. n .. ' deliveries (visibility timeout ' .. vis .. ' ms)', n}
    else
      local claimed = redis.call('XCLAIM', q.stream, group, consumer, 0, id)
      if due then redis.call('ZREM', held, id) end
      if #claimed == 0 then
        redis.call('XACK', q.stream, group, id)
      else
        accept(id, claimed[1][2], n + 1)
      end
    end
  end
end

local next_due = 0
for _ = 1, 10 do
  local want = count - #out
  if want <= 0 then break end
  local r = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want,
    'STREAMS', q.stream, '>')
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'NOGROUP', 1, true) then return redis.error_reply('NOGROUP') end
    return r
  end
  if not r then break end
  local entries = r[1][2]
  for _, e in ipairs(entries) do accept(e[1], e[2], 1) end
  if #entries < want then break end
  next_due = now
end

local first = redis.call('ZRANGE', held, 0, 0, 'WITHSCORES')
if first[2] and (next_due == 0 or tonumber(first[2]) < next_due) then
  next_due = tonumber(first[2])
end
local last = redis.call('XREVRANGE', q.stream, '+', '-', 'COUNT', 1)
local last_id = '0-0'
if last[1] then last_id = last[1][1] end
local due_in = -1
if next_due > 0 then due_in = math.max(0, next_due - now) end
return {out, dead, last_id, due_in}
