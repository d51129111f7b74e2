-- Moves a message to the dead-letter stream, atomically with its ack.
-- KEYS[1] stream. ARGV: queue name, mode ('pending' or 'expired'), group, id,
--   expected delivery count (pending mode), retention max len, max age,
--   then the dead-letter entry's fields and values.
-- Returns the dead-letter id, or false if the message is no longer there.
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
with_retention(q, ARGV[6], ARGV[7])
local mode, group, id = ARGV[2], ARGV[3], ARGV[4]
if mode == 'pending' then
  local p = redis.pcall('XPENDING', q.stream, group, id, id, 1)
  if p.err or #p == 0 or tonumber(p[1][4]) ~= tonumber(ARGV[5]) then return false end
else
  if not redis.call('ZSCORE', q.expiry, id) then return false end
  if #redis.call('XRANGE', q.stream, id, id) == 0 then
    redis.call('ZREM', q.expiry, id)
    return false
  end
end
local dlq_id = redis.call('XADD', q.dlq, '*', unpack(ARGV, 8))
redis.call('HINCRBY', q.meta, 'dead_lettered_total', 1)
if mode == 'pending' then
  ack_one(q, group, id, groups_of(q.stream))
else
  expire_drop(q, id, groups_of(q.stream))
end
return dlq_id
