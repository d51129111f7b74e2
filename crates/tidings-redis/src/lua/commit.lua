-- Applies a transaction: everything or nothing.
-- KEYS: the queues' streams, then the tables' hashes.
-- ARGV: number of queues nq, then per queue: name, dedup window ms, retention
--   max len, max age; then the operations, each a code and its arguments:
--   S qi data pl headers dedup ttl delay | A qi group id | P ti key value absent(1/0) | D ti key
--   | X ti key present(1/0) value   (a record must hold value, or be absent, beforehand)
--   | I ti key delta   (add delta to the integer a record holds, absent: 0)
--   | N qi group id mode value vis count nf fields...   (a nack: mode 'retry' with
--     value the delay ms, or 'dead' with the expected delivery count and the
--     dead letter's nf fields and values)
--   (qi and ti index KEYS; ti counts from nq + 1).
-- Errors: NOQUEUE name | NOTPENDING op# | EXISTS op# | CHANGED op# | NOTINTEGER op#
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
local sizes = {S = 8, A = 4, P = 5, D = 3, X = 5, I = 4}
-- The length of the operation at `at` (a nack's depends on its fields).
local function size(at)
  local op = ARGV[at]
  if op == 'N' then return 9 + tonumber(ARGV[at + 8]) end
  return sizes[op]
end

-- Check everything first: a script cannot roll back what it wrote.
local present = {}
-- Records known to hold an integer (checked, or just added to).
local counted = {}
local n = 0
while at <= #ARGV do
  local op = ARGV[at]
  n = n + 1
  if op == 'A' then
    local q = qs[tonumber(ARGV[at + 1])]
    local p = redis.pcall('XPENDING', q.stream, ARGV[at + 2], ARGV[at + 3], ARGV[at + 3], 1)
    if p.err or #p == 0 then return redis.error_reply('NOTPENDING ' .. n) end
  elseif op == 'N' then
    local q = qs[tonumber(ARGV[at + 1])]
    local count = pending_count(q, ARGV[at + 2], ARGV[at + 3])
    -- A dead letter was built from the delivery read: it must still be that one.
    if not count or (ARGV[at + 4] == 'dead' and count ~= tonumber(ARGV[at + 7])) then
      return redis.error_reply('NOTPENDING ' .. n)
    end
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
    if op == 'P' then counted[slot] = nil end
  elseif op == 'I' then
    -- HINCRBY would fail half way through the writes: check the value now.
    local hash, key = KEYS[tonumber(ARGV[at + 1])], ARGV[at + 2]
    local slot = hash .. '\0' .. key
    if not counted[slot] then
      local stored = redis.call('HGET', hash, key)
      if stored and not string.match(stored, '^%s*-?%d+%s*$') then
        return redis.error_reply('NOTINTEGER ' .. n)
      end
      counted[slot] = true
    end
    present[slot] = true
  end
  at = at + size(at)
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
  elseif op == 'N' then
    local qi = tonumber(ARGV[at + 1])
    local q, group, id = qs[qi], ARGV[at + 2], ARGV[at + 3]
    if ARGV[at + 4] == 'dead' then
      -- Unless an earlier operation of this transaction acked it.
      if pending_count(q, group, id) then
        add_dead(q, at + 9, at + 8 + tonumber(ARGV[at + 8]))
        groups[qi] = groups[qi] or groups_of(q.stream)
        ack_one(q, group, id, groups[qi])
      end
    else
      hold_one(q, group, id, 'retry', ARGV[at + 5], tonumber(ARGV[at + 6]), now)
    end
  elseif op == 'P' then
    local hash, key = KEYS[tonumber(ARGV[at + 1])], ARGV[at + 2]
    redis.call('HSET', hash, key, ARGV[at + 3])
    redis.call('ZADD', hash .. ':keys', 0, key)
  elseif op == 'D' then
    local hash, key = KEYS[tonumber(ARGV[at + 1])], ARGV[at + 2]
    redis.call('HDEL', hash, key)
    redis.call('ZREM', hash .. ':keys', key)
  elseif op == 'I' then
    local hash, key = KEYS[tonumber(ARGV[at + 1])], ARGV[at + 2]
    redis.call('HINCRBY', hash, key, ARGV[at + 3])
    redis.call('ZADD', hash .. ':keys', 0, key)
  end
  at = at + size(at)
end
for _, q in ipairs(qs) do trim_retained(q, now) end
return out
