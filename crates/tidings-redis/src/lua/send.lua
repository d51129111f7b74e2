-- Sends a batch. KEYS[1] stream.
-- ARGV: queue name, dedup window ms, count, then per message:
--   data, pl, headers, dedup id, ttl ms, delay ms
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
q.dedup_ms = ARGV[2]
local now = now_ms()
local out = {}
for i = 0, tonumber(ARGV[3]) - 1 do
  local b = 4 + i * 6
  local id, dup = add_message(q, now, ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3],
    tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), '')
  out[#out + 1] = id
  out[#out + 1] = dup
end
return out
