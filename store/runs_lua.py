"""The Lua scripts behind ``store/runs.py``: each all-or-nothing state change of a
thread and its runs is one script over that thread's keys (plus the queue).

Lua keeps every step atomic on any Redis >= 6.2 (no Redis Functions, which need 7.0).
"""

# KEYS: thread, tenant's threads. ARGV: thread_id, now, metadata, if_exists, tenant.
# Another tenant's thread of the same id is 'thread_exists' whatever if_exists says.
CREATE_THREAD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local owner = redis.call('HGET', KEYS[1], 'tenant') or 'default'
  if ARGV[4] == 'do_nothing' and owner == ARGV[5] then return 0 end
  return redis.error_reply('thread_exists')
end
redis.call('HSET', KEYS[1], 'thread_id', ARGV[1], 'created_at', ARGV[2], 'updated_at', ARGV[2],
  'status', 'idle', 'metadata', ARGV[3], 'tenant', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# Shared by the scripts that cancel a run: mark it interrupted, move the thread's fence
# away from its owner (whose next checkpoint or side effect then fails, so it stops at
# once without writing), and end its event stream.
CANCEL_FN = """
local function cancel(run_key, run_id, fence, now, maxlen, ttl)
  local st = redis.call('HGET', run_key, 'status')
  if st ~= 'pending' and st ~= 'running' then return false end
  redis.call('HSET', run_key, 'status', 'interrupted', 'updated_at', now, 'cancel_reason', 'cancelled')
  if redis.call('GET', fence) and string.find(redis.call('GET', fence), run_id, 1, true) == 1 then
    redis.call('SET', fence, 'cancelled:' .. run_id)
  end
  local ev = run_key .. ':ev'
  redis.call('XADD', ev, 'MAXLEN', '~', maxlen, '*', 'e', '__end__',
    'd', '{"status":"interrupted","cancelled":true}')
  redis.call('EXPIRE', ev, ttl)
  return true
end
"""

PROMOTE_FN = """
local function promote(thread, pending, queue, run_prefix, thread_id, now)
  local next_run = redis.call('LPOP', pending)
  if next_run then
    local payload = redis.call('HGET', run_prefix .. next_run, 'payload')
    redis.call('HSET', thread, 'active_run', next_run, 'status', 'busy', 'updated_at', now)
    redis.call('XADD', queue, '*', 't', thread_id, 'r', next_run, 'p', payload)
  else
    redis.call('HDEL', thread, 'active_run')
    redis.call('HSET', thread, 'status', 'idle', 'updated_at', now)
  end
end
"""

# KEYS: thread, thread_runs, pending, run, queue, threads, fence
# ARGV: run_id, thread_id, now, strategy, if_not_exists, is_resume, graph_id, assistant_id,
#       metadata_json, payload_json, run_key_prefix, events_maxlen, events_ttl_s, tenant
# (threads is the tenant's index; another tenant's thread is 'no_thread'; a run id that
# exists already is 'run_exists', so a caller-chosen id makes creation idempotent)
CREATE_RUN = (
    CANCEL_FN
    + """
local thread, runs, pending, run, queue, threads = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local run_id, thread_id, now = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', run) == 1 then return redis.error_reply('run_exists') end
if redis.call('EXISTS', thread) == 0 then
  if ARGV[5] ~= 'create' then return redis.error_reply('no_thread') end
  redis.call('HSET', thread, 'thread_id', thread_id, 'created_at', now, 'updated_at', now,
    'status', 'idle', 'metadata', '{}', 'tenant', ARGV[14])
  redis.call('ZADD', threads, now, thread_id)
elseif (redis.call('HGET', thread, 'tenant') or 'default') ~= ARGV[14] then
  return redis.error_reply('no_thread')
end
local state = redis.call('HMGET', thread, 'active_run', 'status')
local active, status = state[1], state[2]
if active and ARGV[4] == 'reject' then return redis.error_reply('busy') end
if active and ARGV[4] == 'interrupt' then
  -- The new run preempts the active one, which stops where it is (its state is kept).
  cancel(ARGV[11] .. active, active, KEYS[7], now, ARGV[12], ARGV[13])
  active = false
end
if ARGV[6] == '1' and not active and status ~= 'interrupted' then
  return redis.error_reply('nothing_to_resume')
end
redis.call('HSETNX', thread, 'graph_id', ARGV[7])
redis.call('HSETNX', thread, 'assistant_id', ARGV[8])
local run_status = 'pending'
redis.call('HSET', run, 'run_id', run_id, 'thread_id', thread_id, 'assistant_id', ARGV[8],
  'graph_id', ARGV[7], 'created_at', now, 'updated_at', now, 'status', run_status,
  'metadata', ARGV[9], 'multitask_strategy', ARGV[4], 'payload', ARGV[10], 'tenant', ARGV[14])
redis.call('ZADD', runs, now, run_id)
if active then
  redis.call('RPUSH', pending, run_id)
else
  redis.call('HSET', thread, 'active_run', run_id, 'status', 'busy', 'updated_at', now)
  redis.call('XADD', queue, '*', 't', thread_id, 'r', run_id, 'p', ARGV[10])
end
return run_status
"""
)

# KEYS: thread, pending, run, queue, fence
# ARGV: run_id, thread_id, now, run_key_prefix, events_maxlen, events_ttl_s
CANCEL_RUN = (
    CANCEL_FN
    + PROMOTE_FN
    + """
local thread, pending, run, queue, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local run_id, now = ARGV[1], ARGV[3]
if redis.call('LREM', pending, 0, run_id) > 0 then
  cancel(run, run_id, fence, now, ARGV[5], ARGV[6])
  return 'cancelled'
end
if redis.call('HGET', thread, 'active_run') ~= run_id then
  if redis.call('EXISTS', run) == 0 then return redis.error_reply('no_run') end
  return redis.error_reply('not_active')
end
cancel(run, run_id, fence, now, ARGV[5], ARGV[6])
promote(thread, pending, queue, ARGV[4], ARGV[2], now)
return 'cancelled'
"""
)

# KEYS: run, fence, events
# ARGV: run_id, worker, now, events_maxlen, events_ttl_s
# Returns the new epoch, or 0 when the run already ended (nothing to do).
CLAIM_RUN = """
local run, fence, events = KEYS[1], KEYS[2], KEYS[3]
local status = redis.call('HGET', run, 'status')
if not status or status == 'success' or status == 'error' or status == 'timeout'
   or status == 'interrupted' then
  return 0
end
local epoch = redis.call('HINCRBY', run, 'epoch', 1)
redis.call('SET', fence, ARGV[1] .. ':' .. epoch)
redis.call('HSET', run, 'status', 'running', 'worker', ARGV[2], 'updated_at', ARGV[3])
redis.call('XADD', events, 'MAXLEN', '~', ARGV[4], '*', 'e', 'metadata',
  'd', '{"run_id":"' .. ARGV[1] .. '","attempt":' .. epoch .. '}')
redis.call('EXPIRE', events, ARGV[5])
return epoch
"""

# KEYS: thread, pending, run, queue, events, fence
# ARGV: run_id, now, run_status, thread_status, values_json, interrupts_json, end_data,
#       queue_msg_id, group, run_key_prefix, events_maxlen, events_ttl_s, thread_id, token
# Returns 1, or -1 when the caller no longer owns the run (fenced out: nothing written).
FINISH_RUN = """
local thread, pending, run, queue, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local run_id, now = ARGV[1], ARGV[2]
if redis.call('GET', KEYS[6]) ~= ARGV[14] then return -1 end
redis.call('DEL', KEYS[6])
redis.call('HSET', run, 'status', ARGV[3], 'updated_at', now)
redis.call('XADD', events, 'MAXLEN', '~', ARGV[11], '*', 'e', '__end__', 'd', ARGV[7])
redis.call('EXPIRE', events, ARGV[12])
if ARGV[8] ~= '' then
  redis.call('XACK', queue, ARGV[9], ARGV[8])
  redis.call('XDEL', queue, ARGV[8])
end
if redis.call('HGET', thread, 'active_run') ~= run_id then return 0 end
redis.call('HSET', thread, 'status', ARGV[4], 'values', ARGV[5], 'interrupts', ARGV[6],
  'updated_at', now)
local next_run = redis.call('LPOP', pending)
if next_run then
  local payload = redis.call('HGET', ARGV[10] .. next_run, 'payload')
  redis.call('HSET', thread, 'active_run', next_run, 'status', 'busy')
  redis.call('XADD', queue, '*', 't', ARGV[13], 'r', next_run, 'p', payload)
else
  redis.call('HDEL', thread, 'active_run')
end
return 1
"""
