-- Applies a transaction: everything or nothing.
-- KEYS: the queues' streams, then the tables' hashes.
-- ARGV: number of queues nq, then per queue: name, dedup window ms, retention
--   max len, max age; then the operations, each a code and its arguments:
--   S qi data pl headers dedup ttl delay | A qi group id | P ti key value absent(1/0) | D ti key
--   | X ti key present(1/0) value   (a record must hold value, or be absent, beforehand)
--   (qi and ti index KEYS; ti counts from nq + 1).
-- Errors: NOQUEUE name | NOTPENDING op# | EXISTS op# | CHANGED op#
local nq = tonumber(ARGV[1])
local qs = {}
local at = 2
for i = 1, nq do
  local q = queue(KEYS[i])
  if not q then return no_queue(ARGV[at]) end
  q.dedup_ms = ARGV[at + 1]
  with_retention(q, ARGV[at + 2], ARGV[at + 3])
  qs[i] = q
  at = at + 4
end
local first_op = at
local sizes = {S = 8, A = 4, P = 5, D = 3, X = 5}

-- Check everything first: a script cannot roll back what it wrote.
local present = {}
local n = 0
while at <= #ARGV do
  local op = ARGV[at]
  n = n + 1
  if op == 'A' then
    local q = qs[tonumber(ARGV[at + 1])]
    local p = redis.pcall('XPENDING', q.stream, ARGV[at + 2], ARGV[at + 3], ARGV[at + 3], 1)
    if p.err or #p == 0 then return redis.error_reply('NOTPENDING ' .. n) end
  elseif op == 'X' then
    local stored = redis.call('HGET', KEYS[tonumber(ARGV[at + 1])], ARGV[at + 2])
    local ok
    if ARGV[at + 3] == '1' then ok = stored == ARGV[at + 4] else ok = not stored end
    if not ok then return redis.error_reply('CHANGED ' .. n) end
  elseif op == 'P' or op == 'D' then
    local hash, key = KEYS[tonumber(ARGV[at + 1])], ARGV[at + 2]
    local slot = hash .. '\0' .. key
    if op == 'P' and ARGV[at + 4] == '1' then
      local exists = present[slot]
      if exists == nil then exists = redis.call('HEXISTS', hash, key) == 1 end
      if exists then return redis.error_reply('EXISTS ' .. n) end
    end
    present[slot] = op == 'P'
  end
  at = at + sizes[op]
end

local now = now_ms()
local out = {}
local groups = {}
at = first_op
while at <= #ARGV do
  local op = ARGV[at]
  if op == 'S' then
    local q = qs[tonumber(ARGV[at + 1])]
    local id, dup = add_message(q, now, ARGV[at + 2], ARGV[at + 3], ARGV[at + 4],
      ARGV[at + 5], tonumber(ARGV[at + 6]), tonumber(ARGV[at + 7]), '')
    out[#out + 1] = id
    out[#out + 1] = dup
  elseif op == 'A' then
    local qi = tonumber(ARGV[at + 1])
    local q = qs[qi]
    groups[qi] = groups[qi] or groups_of(q.stream)
    ack_one(q, ARGV[at + 2], ARGV[at + 3], groups[qi])
  elseif op == 'P' then
    local hash, key = KEYS[tonumber(ARGV[at + 1])], ARGV[at + 2]
    redis.call('HSET', hash, key, ARGV[at + 3])
    redis.call('ZADD', hash .. ':keys', 0, key)
  elseif op == 'D' then
    local hash, key = KEYS[tonumber(ARGV[at + 1])], ARGV[at + 2]
    redis.call('HDEL', hash, key)
    redis.call('ZREM', hash .. ':keys', key)
  end
  at = at + sizes[op]
end
for _, q in ipairs(qs) do trim_retained(q, now) end
return out
