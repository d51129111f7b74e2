-- Shared by every Tidings script (prepended to each). Key names follow
-- src/keys.rs: every key of a queue starts with its stream key, so one
-- declared key routes the script and the rest stay in its cluster slot.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A stream id's parts (`ms` alone means `ms-0`).
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-?(%d*)$')
  return tonumber(ms) or 0, tonumber(seq) or 0
end

-- a <= b for stream ids
local function id_le(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am < bm or (am == bm and as <= bs)
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- The keys of the queue behind a stream key (without asking whether it exists).
local function queue_keys(stream)
  return {
    stream = stream, meta = stream .. ':metadata', gen = '',
    dlq = stream .. ':dlq', expiry = stream .. ':expiry',
    delayed = stream .. ':delayed', retained = stream .. ':retained',
    keeps = false, max_len = -1, max_age = 0,
  }
end

-- The queue behind a stream key, or nil if it was never created.
local function queue(stream)
  local q = queue_keys(stream)
  local gen = redis.call('HGET', q.meta, 'gen')
  if not gen then
    if redis.call('EXISTS', q.meta) == 0 then return nil end
    gen = ''
  end
  q.gen = gen
  return q
end

local function with_retention(q, max_len, max_age)
  q.max_len = tonumber(max_len)
  q.max_age = tonumber(max_age)
  q.keeps = q.max_len > 0 or q.max_age > 0
  return q
end

local function no_queue(name)
  return redis.error_reply('NOQUEUE ' .. name)
end

-- Consumer groups of a stream that exists: name, last delivered id, pending count, lag.
local function xinfo_groups(stream)
  local out = {}
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    out[#out + 1] = {
      name = info['name'], last = info['last-delivered-id'],
      pending = info['pending'], lag = info['lag'],
    }
  end
  return out
end

-- Consumer groups of a stream (none if it is missing).
local function groups_of(stream)
  if redis.call('EXISTS', stream) == 0 then return {} end
  return xinfo_groups(stream)
end

-- Whether every group except `except` has read and acked `id`.
local function done_elsewhere(stream, id, except, groups)
  for _, g in ipairs(groups) do
    if g.name ~= except then
      if not id_le(id, g.last) then return false end
      if #redis.call('XPENDING', stream, g.name, id, id, 1) > 0 then return false end
    end
  end
  return true
end

-- An entry every group is done with leaves the stream, or is kept for retention.
local function finish(q, id)
  if q.keeps then
    redis.call('ZADD', q.retained, (parse_id(id)), id)
  else
    redis.call('XDEL', q.stream, id)
  end
end

local function xdel_all(stream, ids)
  for i = 1, #ids, 500 do
    redis.call('XDEL', stream, unpack(ids, i, math.min(i + 499, #ids)))
  end
end

local function trim_retained(q, now)
  if not q.keeps then return end
  if q.max_age > 0 then
    local cutoff = '(' .. (now - q.max_age)
    local old = redis.call('ZRANGEBYSCORE', q.retained, '-inf', cutoff)
    if #old > 0 then
      xdel_all(q.stream, old)
      redis.call('ZREMRANGEBYSCORE', q.retained, '-inf', cutoff)
    end
  end
  if q.max_len >= 0 then
    local n = redis.call('ZCARD', q.retained)
    if n > q.max_len then
      local popped = redis.call('ZPOPMIN', q.retained, n - q.max_len)
      local ids = {}
      for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
      xdel_all(q.stream, ids)
    end
  end
end

-- An expired entry leaves the stream and every group.
local function expire_drop(q, id, groups)
  redis.call('ZREM', q.expiry, id)
  redis.call('ZREM', q.delayed, id)
  if redis.call('XDEL', q.stream, id) == 0 then return end
  for _, g in ipairs(groups) do
    redis.call('XACK', q.stream, g.name, id)
    redis.call('ZREM', q.stream .. ':held:' .. g.name, id)
  end
  redis.call('HINCRBY', q.meta, 'expired_total', 1)
end

-- Appends a message; returns its id and 1 if a dedup id made it a duplicate.
local function add_message(q, now, data, pl, headers, dedup, ttl, delay, only)
  local dedup_key
  if dedup ~= '' then
    dedup_key = q.stream .. ':dedup:' .. q.gen .. ':' .. dedup
    local seen = redis.call('GET', dedup_key)
    if seen then return seen, 1 end
  end
  local f = {'data', data, 'pl', pl}
  if headers ~= '' then f[#f + 1] = 'h'; f[#f + 1] = headers end
  if dedup ~= '' then f[#f + 1] = 'dd'; f[#f + 1] = dedup end
  if ttl > 0 then f[#f + 1] = 'x'; f[#f + 1] = tostring(now + ttl) end
  if delay > 0 then f[#f + 1] = 'nb'; f[#f + 1] = tostring(now + delay) end
  if only ~= '' then f[#f + 1] = 'only'; f[#f + 1] = only end
  local id = redis.call('XADD', q.stream, '*', unpack(f))
  if dedup_key then
    redis.call('SET', dedup_key, id, 'PX', q.dedup_ms)
  end
  if ttl > 0 then
    redis.call('ZADD', q.expiry, string.format('%.3f', (now + ttl) / 1000), id)
  end
  if delay > 0 then
    redis.call('ZADD', q.delayed, now + delay, id)
  end
  return id, 0
end

-- Acks ids for a group in a few calls (each redis.call costs about a
-- microsecond, so not three per id). After XACK the group is done with
-- every id it has read: those leave, or are kept for retention, once every
-- other group is done with them too. Returns how many were pending.
-- `groups` (nil: asked for only when something was acked) lists the stream's groups.
local function ack_ids(q, group, ids, groups)
  local acked = 0
  for i = 1, #ids, 500 do
    acked = acked + redis.call('XACK', q.stream, group, unpack(ids, i, math.min(i + 499, #ids)))
  end
  if acked == 0 then return 0 end
  local held = q.stream .. ':held:' .. group
  if redis.call('EXISTS', held) == 1 then
    for i = 1, #ids, 500 do
      redis.call('ZREM', held, unpack(ids, i, math.min(i + 499, #ids)))
    end
  end
  -- Something was pending, so the stream exists.
  groups = groups or xinfo_groups(q.stream)
  -- All were pending, so all were read; otherwise only ids up to the
  -- group's position were (a stale position only delays their removal).
  local all_read = acked == #ids
  local last
  for _, g in ipairs(groups) do
    if g.name == group then last = g.last end
  end
  if not all_read and not last then return acked end
  local others = #groups > 1
  local finished = {}
  for _, id in ipairs(ids) do
    if (all_read or id_le(id, last))
      and (not others or done_elsewhere(q.stream, id, group, groups)) then
      finished[#finished + 1] = id
    end
  end
  if #finished > 0 then
    if q.keeps then
      for i = 1, #finished, 250 do
        local chunk = {}
        for j = i, math.min(i + 249, #finished) do
          chunk[#chunk + 1] = (parse_id(finished[j]))
          chunk[#chunk + 1] = finished[j]
        end
        redis.call('ZADD', q.retained, unpack(chunk))
      end
    else
      xdel_all(q.stream, finished)
    end
  end
  return acked
end

local function ack_one(q, group, id, groups)
  return ack_ids(q, group, {id}, groups)
end


-- The delivery count of `id` in `group`, or nil if it is not pending there.
local function pending_count(q, group, id)
  local p = redis.pcall('XPENDING', q.stream, group, id, id, 1)
  if p.err or #p == 0 then return nil end
  return tonumber(p[1][4]), p[1][2]
end

-- Holds a pending delivery back until a time (see hold.lua for `mode` and
-- `value`). Returns false if it is not pending in the group.
local function hold_one(q, group, id, mode, value, vis, now)
  local count, consumer = pending_count(q, group, id)
  if not count then return false end
  local due = tonumber(value)
  if mode == 'retry' then
    due = now + due
  else
    count = 0
  end
  -- Redis counts idle time from the delivery time: set it so the entry
  -- times out (and is reclaimed) when due, or is held again until then.
  redis.call('XCLAIM', q.stream, group, consumer, 0, id,
    'TIME', now + math.min(due - now, vis) - vis, 'RETRYCOUNT', count, 'JUSTID')
  redis.call('ZADD', q.stream .. ':held:' .. group, due, id)
  return true
end

-- Adds a dead letter whose fields and values are ARGV[first..last].
local function add_dead(q, first, last)
  redis.call('XADD', q.dlq, '*', unpack(ARGV, first, last))
  redis.call('HINCRBY', q.meta, 'dead_lettered_total', 1)
end
