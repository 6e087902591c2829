"""The checkpointer's Lua scripts (``store/checkpoint.py`` holds the key layout they work on).

Each script is one atomic step on one thread's keys, all in one Redis Cluster slot.
"""

from __future__ import annotations

from core.redis import Lua

# Shared helpers. Lua's unpack() fails past ~8000 values, hence the 1000-value chunks.
CHUNKED = r"""
local function chunked(cmd, key, list)
  for s = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, s, math.min(s + 999, #list)))
  end
end
"""
LUA_HELPERS = (
    CHUNKED
    + r"""
local function hmget(key, fields)
  if #fields <= 1000 then return redis.call('HMGET', key, unpack(fields)) end
  local out = {}
  for s = 1, #fields, 1000 do
    for _, v in ipairs(redis.call('HMGET', key, unpack(fields, s, math.min(s + 999, #fields)))) do
      out[#out + 1] = v
    end
  end
  return out
end
-- Splits a refs value (channel\0version\1…) into blob fields of namespace prefix `pre`.
local function blob_fields(pre, refs, out)
  local n, pos = #out, 1
  while true do
    local j = string.find(refs, '\1', pos, true)
    n = n + 1
    if not j then out[n] = pre .. string.sub(refs, pos); return out end
    out[n] = pre .. string.sub(refs, pos, j - 1)
    pos = j + 1
  end
end
local function ns_prefix(f) return string.sub(f, 1, string.find(f, '\0', 1, true)) end
"""
)

# entry(f): [field, record, refs, [blob…], [write…]] of checkpoint field `f` of the thread
# (KEYS[1..6]), or nil when it does not exist; latest(ns): the newest checkpoint's entry of
# namespace `ns`, or nil.
ENTRY = (
    LUA_HELPERS
    + r"""
local function entry(f)
  local rec = redis.call('HGET', KEYS[2], f)
  if not rec then return nil end
  local refs = redis.call('HGET', KEYS[3], f) or ''
  local blobs = {}
  if refs ~= '' then
    blobs = hmget(KEYS[4], blob_fields(ns_prefix(f), refs, {}))
  end
  local wf = redis.call('ZRANGEBYLEX', KEYS[5], '[' .. f .. '\0', '(' .. f .. '\1')
  local writes = {}
  if #wf > 0 then writes = hmget(KEYS[6], wf) end
  return {f, rec, refs, blobs, writes}
end
local function latest(ns)
  local last = redis.call('ZREVRANGEBYLEX', KEYS[1], '(' .. ns .. '\1', '[' .. ns .. '\0', 'LIMIT', 0, 1)
  if last[1] then return entry(last[1]) end
  return nil
end
"""
)

# KEYS: the six thread keys.  ARGV: 'latest', ns  |  'ids', field…
# Returns [[field, record, refs, [blob…], [write…]], …] for the checkpoints that exist.
LOAD = Lua(
    ENTRY
    + r"""
local out = {}
if ARGV[1] == 'latest' then
  out[1] = latest(ARGV[2])
else
  for k = 2, #ARGV do
    local e = entry(ARGV[k])
    if e then out[#out + 1] = e end
  end
end
return out
"""
)

# KEYS: the six thread keys.  ARGV: 'latest'  |  'runs', run_id…
# Deletes the chosen checkpoints, their writes, and every blob no remaining checkpoint
# refers to. Reads first, writes after: a Lua error must not leave half a deletion.
DROP = Lua(
    LUA_HELPERS
    + r"""
local drop = {}
if ARGV[1] == 'latest' then
  local members = redis.call('ZRANGE', KEYS[1], 0, -1)
  for k = 1, #members - 1 do
    if ns_prefix(members[k]) == ns_prefix(members[k + 1]) then drop[#drop + 1] = members[k] end
  end
else
  local runs = {}
  for k = 2, #ARGV do runs[ARGV[k]] = true end
  local recs = redis.call('HGETALL', KEYS[2])
  for k = 1, #recs, 2 do
    local rec = recs[k + 1]
    local a = string.find(rec, '\0', 1, true)
    local b = string.find(rec, '\0', a + 1, true)
    if runs[string.sub(rec, a + 1, b - 1)] then drop[#drop + 1] = recs[k] end
  end
end
if #drop == 0 then return 0 end
local writes = {}
for _, f in ipairs(drop) do
  for _, w in ipairs(redis.call('ZRANGEBYLEX', KEYS[5], '[' .. f .. '\0', '(' .. f .. '\1')) do
    writes[#writes + 1] = w
  end
end
local live, refs = {}, redis.call('HGETALL', KEYS[3])
local dropped = {}
for _, f in ipairs(drop) do dropped[f] = true end
for k = 1, #refs, 2 do
  if refs[k + 1] ~= '' and not dropped[refs[k]] then
    for _, bf in ipairs(blob_fields(ns_prefix(refs[k]), refs[k + 1], {})) do live[bf] = true end
  end
end
local dead = {}
for _, bf in ipairs(redis.call('HKEYS', KEYS[4])) do
  if not live[bf] then dead[#dead + 1] = bf end
end
chunked('ZREM', KEYS[1], drop)
chunked('HDEL', KEYS[2], drop)
chunked('HDEL', KEYS[3], drop)
chunked('HDEL', KEYS[4], dead)
chunked('ZREM', KEYS[5], writes)
chunked('HDEL', KEYS[6], writes)
return #drop
"""
)

# Stores (field, value, overwrite "1"/"0") write triples ARGV[first..last] in the writes
# hash `writes`, and appends each new field to `added` (score, member pairs for the
# writes index): a regular write never replaces one that is there (HSETNX), a special one
# (error, interrupt…) does.
WRITE_TRIPLES = r"""
local function put_writes(writes, first, last, added)
  for k = first, last, 3 do
    local new
    if ARGV[k + 2] == '1' then
      new = redis.call('HSET', writes, ARGV[k], ARGV[k + 1])
    else
      new = redis.call('HSETNX', writes, ARGV[k], ARGV[k + 1])
    end
    if new == 1 then
      added[#added + 1] = 0
      added[#added + 1] = ARGV[k]
    end
  end
end
"""

# KEYS: the six thread keys [, fence]
# ARGV: fence value, then ops, in the order they were made:
#   'w', n, n (field, value, overwrite "1"/"0") write triples: a task's writes;
#   'c', n, field, record, refs, n blob field/value pairs: a checkpoint;
#   'l', ns (last, at most once): after writing, read the newest checkpoint of namespace ns.
# One atomic step, fenced as a whole: writes and the checkpoints after them can neither be
# reordered (langgraph#8039) nor half-written. The checkpoints' fields are gathered into one
# command per key (a field given twice keeps its last value, as separate commands would).
# Returns 0 when fenced out (nothing written), else 1, or with 'l' {1[, entry]}: what LOAD
# 'latest' would return right after the writes, without a second round trip.
WRITE = Lua(
    ENTRY
    + WRITE_TRIPLES
    + r"""
if KEYS[7] and redis.call('GET', KEYS[7]) ~= ARGV[1] then return 0 end
local index, records, refs, blobs, added = {}, {}, {}, {}, {}
local read_ns
local k = 2
while k <= #ARGV do
  if ARGV[k] == 'l' then
    read_ns = ARGV[k + 1]
    break
  end
  local n = tonumber(ARGV[k + 1])
  if ARGV[k] == 'w' then
    put_writes(KEYS[6], k + 2, k + 1 + 3 * n, added)
    k = k + 2 + 3 * n
  else
    local f = ARGV[k + 2]
    index[#index + 1] = 0
    index[#index + 1] = f
    records[#records + 1] = f
    records[#records + 1] = ARGV[k + 3]
    refs[#refs + 1] = f
    refs[#refs + 1] = ARGV[k + 4]
    for s = k + 5, k + 4 + 2 * n do blobs[#blobs + 1] = ARGV[s] end
    k = k + 5 + 2 * n
  end
end
chunked('ZADD', KEYS[1], index)
chunked('HSET', KEYS[2], records)
chunked('HSET', KEYS[3], refs)
chunked('HSET', KEYS[4], blobs)
chunked('ZADD', KEYS[5], added)
if read_ns then return {1, latest(read_ns)} end
return 1
"""
)
