-- Drops messages found expired when read. KEYS[1] stream. ARGV: queue name, ids...
local q = queue(KEYS[1])
if not q then return no_queue(ARGV[1]) end
local groups = groups_of(q.stream)
for i = 2, #ARGV do expire_drop(q, ARGV[i], groups) end
return #ARGV - 1
