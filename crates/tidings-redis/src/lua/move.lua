-- Moves messages to the dead-letter stream, each atomically with its ack.
-- KEYS[1] stream. ARGV: queue name, mode ('pending' or 'expired'), group,
--   retention max len, max age, the number of messages n, then per message:
--   id, expected delivery count (pending mode), the number of fields, and
--   the dead-letter entry's fields and values.
-- Returns how many moved: a message no longer where it was read (acked,
-- redelivered, gone) is skipped.
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
with_retention(q, ARGV[4], ARGV[5])
local mode, group = ARGV[2], ARGV[3]
local groups
local moved = 0
local at = 7
for _ = 1, tonumber(ARGV[6]) do
  local id, count, nf = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local first = at + 3
  at = first + nf
  local here
  if mode == 'pending' then
    here = pending_count(q, group, id) == count
  elseif not redis.call('ZSCORE', q.expiry, id) then
    here = false
  elseif #redis.call('XRANGE', q.stream, id, id) == 0 then
    redis.call('ZREM', q.expiry, id)
    here = false
  else
    here = true
  end
  if here then
    add_dead(q, first, at - 1)
    groups = groups or groups_of(q.stream)
    if mode == 'pending' then
      ack_one(q, group, id, groups)
    else
      expire_drop(q, id, groups)
    end
    moved = moved + 1
  end
end
return moved
