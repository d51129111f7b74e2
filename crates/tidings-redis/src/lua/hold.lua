-- Holds deliveries back until a time: a nack with a retry delay, or a
-- delayed send read before it is due. KEYS[1] stream.
-- ARGV: queue name, group, mode ('retry': ARGV[4] is a delay and the
--   delivery count is kept; 'delayed': ARGV[4] is the due time in ms and
--   the count goes back to 0), ARGV[4], visibility ms, then the ids
--   (ARGV[6] on).
-- Returns how many were held: ids not pending in the group are skipped.
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local now = now_ms()
local held = 0
for i = 6, #ARGV do
  if hold_one(q, ARGV[2], ARGV[i], ARGV[3], ARGV[4], tonumber(ARGV[5]), now) then
    held = held + 1
  end
end
return held
