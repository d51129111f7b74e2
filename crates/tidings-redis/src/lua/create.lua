-- Creates a queue: LeanMQ's metadata hashes plus Tidings' settings.
-- KEYS[1] stream. ARGV: settings JSON, created_at, main group, DLQ group, generation
-- Returns 1 if created, 0 if it existed with the same settings.
local meta = KEYS[1] .. ':metadata'
local dlq = KEYS[1] .. ':dlq'
local existing = redis.call('HGET', meta, 'tidings')
if existing then
  if existing == ARGV[1] then return 0 end
  return redis.error_reply('CONFLICT the queue exists with other settings')
end
redis.call('HSETNX', meta, 'created_at', ARGV[2])
redis.call('HSETNX', meta, 'dlq', dlq)
redis.call('HSETNX', meta, 'consumer_group', ARGV[3])
redis.call('HSETNX', meta, 'gen', ARGV[5])
redis.call('HSET', meta, 'tidings', ARGV[1])
redis.call('DEL', KEYS[1] .. ':deleted')
-- The stream exists from the start, so plain sends can use XADD NOMKSTREAM
-- (and fail, instead of creating a stream, for a queue that does not exist).
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'tidings-init', '$', 'MKSTREAM')
  redis.call('XGROUP', 'DESTROY', KEYS[1], 'tidings-init')
end
local dlq_meta = dlq .. ':metadata'
redis.call('HSETNX', dlq_meta, 'created_at', ARGV[2])
redis.call('HSETNX', dlq_meta, 'main_queue', KEYS[1])
redis.call('HSETNX', dlq_meta, 'consumer_group', ARGV[4])
redis.call('HSETNX', dlq_meta, 'is_dlq', 'true')
-- LeanMQ's DLQ group, from the start of the stream: a Python client that
-- attaches later still sees every dead letter.
redis.pcall('XGROUP', 'CREATE', dlq, ARGV[4], '0', 'MKSTREAM')
return 1
