"""The Lua scripts behind ``store/crons.py``: each is one atomic step over the cron keys,
which share the hash tag ``{crons}`` (so they run unchanged on Redis Cluster).

Lua keeps every step atomic on any Redis >= 6.2 (no Redis Functions, which need 7.0).
"""

# KEYS: cron, tenant index, due. ARGV: cron_id, created_at, next fire ('' = none), then
# the record's field/value pairs.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('cron_exists') end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1]) end
return 1
"""

# KEYS: cron, due. ARGV: cron_id, tenant, rev as read, due ('keep' | 'remove' | score),
# then field/value pairs. Returns 1 written, 0 changed since read (retry), -1 no such cron.
UPDATE = """
if (redis.call('HGET', KEYS[1], 'tenant') or '') ~= ARGV[2] then return -1 end
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[3] then return 0 end
redis.call('HINCRBY', KEYS[1], 'rev', 1)
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
if ARGV[4] == 'remove' then
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif ARGV[4] ~= 'keep' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
return 1
"""

# KEYS: cron, due, tenant index. ARGV: cron_id, tenant ('' = whoever owns it).
DELETE = """
local owner = redis.call('HGET', KEYS[1], 'tenant')
if not owner or (ARGV[2] ~= '' and owner ~= ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: tenant index, due. ARGV: cron key prefix. Returns the number of crons deleted.
DELETE_TENANT = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('DEL', KEYS[1])
return #ids
"""

# KEYS: due. ARGV: limit. The clock is Redis's, so schedulers on hosts whose clocks
# disagree still agree on what is due. Returns {now_ms, {id, score, …}, earliest score}.
POLL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[1])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {now, due, first[2] or false}
"""

# KEYS: cron, due. ARGV: cron_id, due score, fire time, owner, now, lease_ms.
# The lease is the record's 'firing' field: "<due> <fire time> <owner> <until>".
# Returns the fire time to use (an expired lease's, when taking one over), or nil when the
# entry moved on, the cron is gone, or someone else's lease on it is live.
CLAIM = """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return false end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return false
end
local fire_at = ARGV[3]
local lease = redis.call('HGET', KEYS[1], 'firing')
if lease then
  local due, at, _, until_ms = string.match(lease, '^(%S+) (%S+) (%S+) (%S+)$')
  if due and tonumber(due) == tonumber(ARGV[2]) then
    if tonumber(until_ms) > tonumber(ARGV[5]) then return false end
    fire_at = at
  end
end
redis.call('HSET', KEYS[1], 'firing',
  ARGV[2] .. ' ' .. fire_at .. ' ' .. ARGV[4] .. ' ' .. (tonumber(ARGV[5]) + tonumber(ARGV[6])))
return fire_at
"""

# KEYS: cron, due. ARGV: cron_id, due score, next fire ('' = none: the cron has ended).
# Returns 1 advanced, 0 the entry had already moved on (changed or advanced meanwhile).
ADVANCE = """
local lease = redis.call('HGET', KEYS[1], 'firing')
if lease and tonumber(string.match(lease, '^(%S+)')) == tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[1], 'firing')
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
"""

# KEYS: cron, due. ARGV: cron_id, now. Stops the cron's fires, keeping its record.
DISABLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'enabled', '0', 'updated_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('HDEL', KEYS[1], 'firing')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
