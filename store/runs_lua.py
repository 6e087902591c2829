"""The Lua scripts behind ``store/runs.py``: each all-or-nothing state change of a
thread and its runs is one script over that thread's keys (plus the queue).

Lua keeps every step atomic on any Redis >= 6.2 (no Redis Functions, which need 7.0).
"""

# KEYS: thread, tenant's threads. ARGV: thread_id, now, metadata, if_exists, tenant.
# Another tenant's thread of the same id is 'thread_exists' whatever if_exists says.
# Returns the thread's record (HGETALL's field/value list): the new one, or the one there.
CREATE_THREAD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  local owner = redis.call('HGET', KEYS[1], 'tenant') or 'default'
  if ARGV[4] == 'do_nothing' and owner == ARGV[5] then return redis.call('HGETALL', KEYS[1]) end
  return redis.error_reply('thread_exists')
end
redis.call('HSET', KEYS[1], 'thread_id', ARGV[1], 'created_at', ARGV[2], 'updated_at', ARGV[2],
  'status', 'idle', 'metadata', ARGV[3], 'tenant', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# Shared by the scripts that end a run: when the run has a webhook, record its delivery in
# the same atomic step as the outcome, so no crash can lose it. The entry is a snapshot of
# the run (it outlives the run record, which a stateless run deletes); runs/webhooks.py
# delivers it. A run without a webhook costs one HGET here and nothing else.
NOTIFY_FN = """
local function notify(webhooks, run_key, status, now, values, end_data)
  local url = redis.call('HGET', run_key, 'webhook')
  if not url then return end
  local r = redis.call('HMGET', run_key, 'run_id', 'thread_id', 'assistant_id', 'created_at',
    'metadata', 'multitask_strategy', 'payload')
  redis.call('XADD', webhooks, '*', 'url', url, 'r', r[1], 't', r[2], 'a', r[3] or '',
    'c', r[4] or now, 'u', now, 'status', status, 'm', r[5] or '{}', 's', r[6] or '',
    'k', r[7] or '{}', 'v', values, 'e', end_data)
  redis.call('HSET', run_key, 'webhook_status', 'pending')
end
"""

# Shared by the scripts that cancel a run: mark it interrupted, move the thread's fence
# away from its owner (whose next checkpoint or side effect then fails, so it stops at
# once without writing), and end its event stream. Given the webhooks stream (and the
# thread, whose last values the delivery carries), the run's webhook is recorded too.
CANCEL_FN = (
    NOTIFY_FN
    + """
local function cancel(run_key, run_id, fence, now, maxlen, ttl, webhooks, thread)
  local st = redis.call('HGET', run_key, 'status')
  if st ~= 'pending' and st ~= 'running' then return false end
  redis.call('HSET', run_key, 'status', 'interrupted', 'updated_at', now, 'cancel_reason', 'cancelled')
  if redis.call('GET', fence) and string.find(redis.call('GET', fence), run_id, 1, true) == 1 then
    redis.call('SET', fence, 'cancelled:' .. run_id)
  end
  local ev = run_key .. ':ev'
  local end_data = '{"status":"interrupted","cancelled":true}'
  redis.call('XADD', ev, 'MAXLEN', '~', maxlen, '*', 'e', '__end__', 'd', end_data)
  redis.call('EXPIRE', ev, ttl)
  if webhooks then
    notify(webhooks, run_key, 'interrupted', now, redis.call('HGET', thread, 'values') or 'null', end_data)
  end
  return true
end
"""
)

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

# Shared by the scripts that roll a run back: stop it like a cancel, mark it, and queue a
# rollback job (field 'k') for a worker, who deletes the run's checkpoints. A rolled-back
# run is deleted, so it sends no webhook.
ROLL_BACK_FN = """
local function roll_back(run_key, run_id, thread_id, fence, queue, now, maxlen, ttl)
  if cancel(run_key, run_id, fence, now, maxlen, ttl) then
    redis.call('HSET', run_key, 'rollback', '1')
    redis.call('XADD', queue, '*', 't', thread_id, 'r', run_id, 'k', 'rollback')
  end
end
"""

# KEYS: thread, thread_runs, pending, run, queue, threads, fence
# ARGV: run_id, thread_id, now, strategy, if_not_exists, is_resume, graph_id, assistant_id,
#       metadata_json, payload_json, run_key_prefix, events_maxlen, events_ttl_s, tenant
# (threads is the tenant's index; another tenant's thread is 'no_thread'; a run id that
# exists already is 'run_exists', so a caller-chosen id makes creation idempotent)
# KEYS[8]: the tenant's recent runs (``<thread>|<run>`` by creation time, trimmed to ARGV[15]).
# KEYS[9]: the webhooks stream; ARGV[16]: the run's webhook URL ('' for none).
# Answering approvals (store/approvals.py): KEYS[10] the tenant's audit stream, KEYS[11] the
# approvals' due set, KEYS[12…] the approvals; ARGV[17…] per approval: decision json,
# audit entry json, approval id. Any of them not pending: 'approval_decided <n>', and
# nothing is written.
CREATE_RUN = (
    CANCEL_FN
    + ROLL_BACK_FN
    + """
local thread, runs, pending, run, queue, threads = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local run_id, thread_id, now = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', run) == 1 then return redis.error_reply('run_exists') end
for i = 12, #KEYS do
  if redis.call('HGET', KEYS[i], 'status') ~= 'pending' then
    return redis.error_reply('approval_decided ' .. ARGV[19 + (i - 12) * 3])
  end
end
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
  cancel(ARGV[11] .. active, active, KEYS[7], now, ARGV[12], ARGV[13], KEYS[9], thread)
  active = false
end
if active and ARGV[4] == 'rollback' then
  -- The active run stops and a worker undoes it; the new run waits in the pending list
  -- until the rollback is done (ROLLBACK_DONE starts it).
  roll_back(ARGV[11] .. active, active, thread_id, KEYS[7], queue, now, ARGV[12], ARGV[13])
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
if ARGV[16] ~= '' then redis.call('HSET', run, 'webhook', ARGV[16]) end
redis.call('ZADD', runs, now, run_id)
redis.call('ZADD', KEYS[8], now, thread_id .. '|' .. run_id)
if redis.call('ZCARD', KEYS[8]) > tonumber(ARGV[15]) then
  redis.call('ZREMRANGEBYRANK', KEYS[8], 0, -tonumber(ARGV[15]) - 1)
end
for i = 12, #KEYS do
  local j = 17 + (i - 12) * 3
  redis.call('HSET', KEYS[i], 'status', 'decided', 'decision', ARGV[j], 'decided_at', now,
    'resume_run', run_id)
  redis.call('RPUSH', KEYS[i] .. ':audit', ARGV[j + 1])
  redis.call('XADD', KEYS[10], '*', 'd', ARGV[j + 1])
  redis.call('ZREM', KEYS[11], ARGV[j + 2])
end
if active then
  redis.call('RPUSH', pending, run_id)
else
  redis.call('HSET', thread, 'active_run', run_id, 'status', 'busy', 'updated_at', now)
  redis.call('XADD', queue, '*', 't', thread_id, 'r', run_id, 'p', ARGV[10])
end
return run_status
"""
)

# KEYS: thread, pending, run, queue, fence, thread_runs, webhooks
# ARGV: run_id, thread_id, now, run_key_prefix, events_maxlen, events_ttl_s, action
# action 'rollback': a pending run is deleted at once; the active run stops and a worker
# undoes it (the thread stays busy until then). Returns 'cancelled' or 'rolling_back'.
# A cancelled run's webhook is recorded; a rolled-back (deleted) run sends none.
CANCEL_RUN = (
    CANCEL_FN
    + PROMOTE_FN
    + ROLL_BACK_FN
    + """
local thread, pending, run, queue, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local run_id, now = ARGV[1], ARGV[3]
if redis.call('LREM', pending, 0, run_id) > 0 then
  if ARGV[7] == 'rollback' then
    cancel(run, run_id, fence, now, ARGV[5], ARGV[6])
    redis.call('DEL', run)
    redis.call('ZREM', KEYS[6], run_id)
  else
    cancel(run, run_id, fence, now, ARGV[5], ARGV[6], KEYS[7], thread)
  end
  return 'cancelled'
end
if redis.call('HGET', thread, 'active_run') ~= run_id then
  if redis.call('EXISTS', run) == 0 then return redis.error_reply('no_run') end
  return redis.error_reply('not_active')
end
if ARGV[7] == 'rollback' then
  if redis.call('HGET', run, 'rollback') then return 'rolling_back' end
  roll_back(run, run_id, ARGV[2], fence, queue, now, ARGV[5], ARGV[6])
  return 'rolling_back'
end
cancel(run, run_id, fence, now, ARGV[5], ARGV[6], KEYS[7], thread)
promote(thread, pending, queue, ARGV[4], ARGV[2], now)
return 'cancelled'
"""
)

# KEYS: thread, pending, run, queue, fence, thread_runs
# ARGV: run_id, thread_id, now, run_key_prefix, thread_status, values_json,
#       interrupts_json, queue_msg_id, group
# The rollback of run_id is done (its checkpoints are gone): delete the run, give the
# thread the state it has now, start its next pending run. Returns 1, or 0 when there was
# nothing to finish (another worker finished it first).
ROLLBACK_DONE = """
local thread, pending, run, queue, fence = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local run_id, now = ARGV[1], ARGV[3]
redis.call('XACK', queue, ARGV[9], ARGV[8])
redis.call('XDEL', queue, ARGV[8])
if redis.call('HGET', thread, 'active_run') ~= run_id or not redis.call('HGET', run, 'rollback') then
  return 0
end
redis.call('DEL', run)
redis.call('ZREM', KEYS[6], run_id)
if redis.call('GET', fence) == 'cancelled:' .. run_id then redis.call('DEL', fence) end
redis.call('HSET', thread, 'values', ARGV[6], 'interrupts', ARGV[7], 'updated_at', now)
local next_run = redis.call('LPOP', pending)
if next_run then
  local payload = redis.call('HGET', ARGV[4] .. next_run, 'payload')
  redis.call('HSET', thread, 'active_run', next_run, 'status', 'busy')
  redis.call('XADD', queue, '*', 't', ARGV[2], 'r', next_run, 'p', payload)
else
  redis.call('HDEL', thread, 'active_run')
  redis.call('HSET', thread, 'status', ARGV[5])
end
return 1
"""

# KEYS: run, fence, events, checkpoint index, checkpoint writes (the saver's keys)
# ARGV: run_id, worker, now, events_maxlen, events_ttl_s, first_event_id
# Returns {epoch, empty}: the new epoch, or 0 when the run already ended (nothing to do),
# and 1 when this is the first claim and the thread has no root checkpoint (else 0).
# The first claim notes the thread's latest root checkpoint and the pending writes it has
# then ('base_cp', 'base_writes'): a rollback removes the writes the run added to it.
CLAIM_RUN = """
local run, fence, events = KEYS[1], KEYS[2], KEYS[3]
local status = redis.call('HGET', run, 'status')
if not status or status == 'success' or status == 'error' or status == 'timeout'
   or status == 'interrupted' then
  return {0, 0}
end
local epoch = redis.call('HINCRBY', run, 'epoch', 1)
local empty = 0
if epoch == 1 then
  local last = redis.call('ZREVRANGEBYLEX', KEYS[4], '(\\1', '[\\0', 'LIMIT', 0, 1)[1]
  if last then
    local writes = redis.call('ZRANGEBYLEX', KEYS[5], '[' .. last .. '\\0', '(' .. last .. '\\1')
    redis.call('HSET', run, 'base_cp', last, 'base_writes', table.concat(writes, '\\n'))
  else
    empty = 1
  end
end
redis.call('SET', fence, ARGV[1] .. ':' .. epoch)
redis.call('HSET', run, 'status', 'running', 'worker', ARGV[2], 'updated_at', ARGV[3])
-- The run's first event, when nothing is there yet, gets id first_event_id (0-1):
-- RunStore.wait_for_end reads after it, so a caller waiting for the end is woken once.
local id = '*'
if redis.call('EXISTS', events) == 0 then id = ARGV[6] end
redis.call('XADD', events, 'MAXLEN', '~', ARGV[4], id, 'e', 'metadata',
  'd', '{"run_id":"' .. ARGV[1] .. '","attempt":' .. epoch .. '}')
redis.call('EXPIRE', events, ARGV[5])
return {epoch, empty}
"""

# KEYS: thread, pending, run, queue, events, fence, webhooks
# ARGV: run_id, now, run_status, thread_status, values_json, interrupts_json, end_data,
#       queue_msg_id, group, run_key_prefix, events_maxlen, events_ttl_s, thread_id, token,
#       trace_json ('' for none: the segment's number and trace ids, for a resume to link to)
# Returns 1, or -1 when the caller no longer owns the run (fenced out: nothing written).
FINISH_RUN = (
    NOTIFY_FN
    + """
local thread, pending, run, queue, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local run_id, now = ARGV[1], ARGV[2]
if redis.call('GET', KEYS[6]) ~= ARGV[14] then return -1 end
redis.call('DEL', KEYS[6])
redis.call('HSET', run, 'status', ARGV[3], 'updated_at', now)
notify(KEYS[7], run, ARGV[3], now, ARGV[5], ARGV[7])
redis.call('XADD', events, 'MAXLEN', '~', ARGV[11], '*', 'e', '__end__', 'd', ARGV[7])
redis.call('EXPIRE', events, ARGV[12])
if ARGV[8] ~= '' then
  redis.call('XACK', queue, ARGV[9], ARGV[8])
  redis.call('XDEL', queue, ARGV[8])
end
if redis.call('HGET', thread, 'active_run') ~= run_id then return 0 end
redis.call('HSET', thread, 'status', ARGV[4], 'values', ARGV[5], 'interrupts', ARGV[6],
  'updated_at', now)
if ARGV[15] ~= '' then redis.call('HSET', thread, 'trace', ARGV[15]) end
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
)

# KEYS: run, thread_runs. ARGV: run_id.
# Deletes an ended run's record and events. Returns 1, or an error: no_run, not_ended.
DELETE_RUN = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return redis.error_reply('no_run') end
if status == 'pending' or status == 'running' or redis.call('HGET', KEYS[1], 'rollback') then
  return redis.error_reply('not_ended')
end
redis.call('DEL', KEYS[1], KEYS[1] .. ':ev')
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
