"""Thread administration: search, count, metadata changes, delete, copy, and recording a
state that was changed outside a run. Same keys as ``store/runs.py`` (``store/layout.py``).

Every write is one Lua script over the thread's keys (plus the ``threads`` index), and
each refuses a thread with an active run, so a run never loses its thread, or its state,
half-way. Checkpoints carry the same ``{thread_id}`` hash tag, so deleting a thread takes
its checkpoint keys (named by the caller, who owns the checkpointer) in the same script.

Changing a thread's state outside a run takes the thread's fence (``P fence:{t}``, the
token every checkpoint write of the thread's owner must present) for the time of the
change: a run that starts meanwhile takes the fence back when it is claimed, so the
change's checkpoint write fails instead of forking the run's history (``FencedOut``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aredis

from core import jsonutil
from core.errors import Conflict, NotFound, TransientError
from core.ids import new_id, now_ms
from core.redis import awaited
from store.assistants import contains
from store.layout import DEFAULT_TENANT, Layout
from store.runs import thread_record

_BATCH = 500
"""Thread records read per round trip when searching."""

_CAS_ATTEMPTS = 20

ThreadSortBy = Literal["thread_id", "status", "created_at", "updated_at", "state_updated_at"]

# KEYS: thread, runs, pending, threads, then any other keys of the thread (checkpoints).
# ARGV: thread_id, run key prefix. Returns the number of runs deleted.
_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('no_thread') end
local active = redis.call('HGET', KEYS[1], 'active_run')
if active then return redis.error_reply('busy ' .. active) end
local runs = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, run in ipairs(runs) do
  redis.call('DEL', ARGV[2] .. run, ARGV[2] .. run .. ':ev')
end
for i = 1, #KEYS do
  if i ~= 4 then redis.call('DEL', KEYS[i]) end
end
redis.call('ZREM', KEYS[4], ARGV[1])
return #runs
"""

# KEYS: thread. ARGV: metadata as read, new metadata, now.
# Returns 1 written, 0 changed since read (retry), -1 no such thread.
_PATCH = """
local current = redis.call('HGET', KEYS[1], 'metadata')
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'metadata', ARGV[2], 'updated_at', ARGV[3])
return 1
"""

# KEYS: new thread, threads. ARGV: thread_id, now, metadata, status, values, interrupts,
# graph_id, assistant_id ('' = absent), tenant.
_CREATE_COPY = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('thread_exists') end
redis.call('HSET', KEYS[1], 'thread_id', ARGV[1], 'created_at', ARGV[2], 'updated_at', ARGV[2],
  'status', ARGV[4], 'metadata', ARGV[3], 'tenant', ARGV[9])
local optional = {values = ARGV[5], interrupts = ARGV[6], graph_id = ARGV[7], assistant_id = ARGV[8]}
for field, value in pairs(optional) do
  if value ~= '' then redis.call('HSET', KEYS[1], field, value) end
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS: thread, fence. ARGV: token.
# Returns 1 taken, 0 a run is active, -1 no such thread.
_TAKE_FENCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[1], 'active_run') == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""

# KEYS: fence. ARGV: token. Drops the fence if it still holds the token.
_RELEASE_FENCE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: thread, fence. ARGV: now, status, values, interrupts, graph_id, token.
# Returns 1 written (and the fence released), 0 the fence moved on (a run took the thread:
# it records its own outcome), -1 no such thread.
_RECORD_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('GET', KEYS[2]) ~= ARGV[6] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'values', ARGV[3], 'interrupts', ARGV[4],
  'updated_at', ARGV[1])
redis.call('HSETNX', KEYS[1], 'graph_id', ARGV[5])
redis.call('DEL', KEYS[2])
return 1
"""


@dataclass(frozen=True)
class ThreadFilter:
    """What ``POST /threads/search`` and ``/threads/count`` select on."""

    ids: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    values: Mapping[str, Any] | None = None
    status: str | None = None
    tenant: str = DEFAULT_TENANT
    """Only this tenant's threads, always."""

    @property
    def everything(self) -> bool:
        """Whether this filter selects every thread."""
        return self.ids is None and not self.metadata and not self.values and self.status is None

    def matches(self, record: Mapping[str, Any]) -> bool:
        if record["tenant"] != self.tenant:
            return False
        if self.status is not None and record["status"] != self.status:
            return False
        if self.metadata and not contains(record["metadata"], self.metadata):
            return False
        return not self.values or contains(record["values"], self.values)


@dataclass(frozen=True)
class StateChange:
    """A state change in progress: who holds the thread's fence (see the module doc)."""

    thread_id: str
    fence_key: str
    token: str

    @property
    def fence(self) -> list[str]:
        """The value of ``configurable[FENCE_CONFIG_KEY]`` for the change's writes."""
        return [self.fence_key, self.token]


@dataclass(frozen=True)
class RawThread:
    """A thread's own fields as stored (metadata without graph/assistant merged in)."""

    metadata: bytes
    graph_id: str | None
    assistant_id: str | None


class ThreadAdmin:
    """Thread administration on one Redis."""

    def __init__(self, client: aredis.Redis, *, prefix: str = "il:") -> None:
        self.client = client
        self.keys = Layout(prefix)
        self._delete = client.register_script(_DELETE)
        self._patch = client.register_script(_PATCH)
        self._create_copy = client.register_script(_CREATE_COPY)
        self._record_state = client.register_script(_RECORD_STATE)
        self._take_fence = client.register_script(_TAKE_FENCE)
        self._release_fence = client.register_script(_RELEASE_FENCE)

    async def _records(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        for thread_id in ids:
            pipe.hgetall(self.keys.thread(thread_id))
        return [thread_record(raw) for raw in await pipe.execute() if raw]

    async def _matching(self, where: ThreadFilter) -> list[dict[str, Any]]:
        if where.ids is not None:
            ids = list(dict.fromkeys(where.ids))
        else:
            members: Any = await self.client.zrange(self.keys.threads(where.tenant), 0, -1)
            ids = [m.decode() for m in members]
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), _BATCH):
            found.extend(r for r in await self._records(ids[start : start + _BATCH]) if where.matches(r))
        return found

    async def search(
        self,
        where: ThreadFilter,
        *,
        limit: int,
        offset: int,
        sort_by: ThreadSortBy = "created_at",
        sort_order: Literal["asc", "desc"] = "desc",
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the matching threads, and how many match in all."""
        if where.everything and sort_by == "created_at":
            # Unfiltered, in index order: read just the page (same order as the sort below).
            last = offset + limit - 1
            read = self.client.zrevrange if sort_order == "desc" else self.client.zrange
            index = self.keys.threads(where.tenant)
            members: Any = await read(index, offset, last)
            page = await self._records(m.decode() for m in members)
            return page, int(await self.client.zcard(index))
        found = await self._matching(where)
        field = "updated_at" if sort_by == "state_updated_at" else sort_by
        # Ties keep creation order, so paging through equal keys is stable.
        found.sort(key=lambda r: (r[field], r["created_at"], r["thread_id"]), reverse=sort_order == "desc")
        return found[offset : offset + limit], len(found)

    async def busy_threads(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's threads with an active run."""
        return [
            r for r in await self._matching(ThreadFilter(status="busy", tenant=tenant)) if r["active_run"]
        ]

    async def count(self, where: ThreadFilter) -> int:
        if where.everything:
            return int(await self.client.zcard(self.keys.threads(where.tenant)))
        return len(await self._matching(where))

    async def raw(self, thread_id: str) -> RawThread | None:
        metadata, graph_id, assistant_id = await awaited(
            self.client.hmget(self.keys.thread(thread_id), ["metadata", "graph_id", "assistant_id"])
        )
        if metadata is None:
            return None
        return RawThread(
            metadata,
            graph_id.decode() if graph_id else None,
            assistant_id.decode() if assistant_id else None,
        )

    async def merge_metadata(self, thread_id: str, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into the thread's own (keys given win)."""
        for _ in range(_CAS_ATTEMPTS):
            raw = await self.raw(thread_id)
            if raw is None:
                raise NotFound(f"thread {thread_id} not found")
            merged = {**jsonutil.loads(raw.metadata), **metadata}
            written = await self._patch(
                keys=[self.keys.thread(thread_id)], args=[raw.metadata, jsonutil.dumps(merged), now_ms()]
            )
            if written == 1:
                return
            if written == -1:
                raise NotFound(f"thread {thread_id} not found")
        raise TransientError(f"thread {thread_id} metadata is being changed concurrently; retry")

    async def delete(
        self, thread_id: str, other_keys: Sequence[bytes | str] = (), *, tenant: str = DEFAULT_TENANT
    ) -> int:
        """Delete the thread, its runs, their event streams, its fence (a cancelled run
        still stopping stays fenced out) and ``other_keys`` (its checkpoint keys) at once.
        Returns the number of runs deleted.

        Raises:
            NotFound: no such thread.
            Conflict: a run is active on it; nothing is deleted.
        """
        k = self.keys
        try:
            deleted = await self._delete(
                keys=[
                    k.thread(thread_id), k.thread_runs(thread_id), k.thread_pending(thread_id),
                    k.threads(tenant), k.fence(thread_id), *other_keys,
                ],
                args=[thread_id, k.run_prefix(thread_id)],
            )  # fmt: skip
        except aredis.ResponseError as e:
            code, _, detail = str(e).strip().partition(" ")
            if code == "no_thread":
                raise NotFound(f"thread {thread_id} not found") from None
            if code == "busy":
                raise Conflict(
                    f"thread {thread_id} has an active run ({detail}); wait for it or cancel it, then delete"
                ) from None
            raise
        return int(deleted)

    async def create_copy(
        self,
        source: RawThread,
        thread_id: str,
        *,
        status: str,
        values: Any,
        interrupts: Mapping[str, Any],
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """Write a new thread record carrying ``source``'s metadata, graph and assistant."""
        try:
            await self._create_copy(
                keys=[self.keys.thread(thread_id), self.keys.threads(tenant)],
                args=[
                    thread_id, now_ms(), source.metadata, status,
                    jsonutil.dumps(values) if values is not None else "",
                    jsonutil.dumps(dict(interrupts)), source.graph_id or "", source.assistant_id or "",
                    tenant,
                ],
            )  # fmt: skip
        except aredis.ResponseError as e:
            if str(e).strip() == "thread_exists":
                raise Conflict(f"thread {thread_id} already exists") from None
            raise

    @contextlib.asynccontextmanager
    async def state_change(self, thread_id: str) -> AsyncIterator[StateChange]:
        """Own the thread for a state change made outside a run: yields the fence to put
        in the checkpoint writes' config, released on exit whatever happens.

        Raises:
            NotFound: no such thread.
            Conflict: a run is active on it.
        """
        change = StateChange(thread_id, self.keys.fence(thread_id), f"state:{new_id()}")
        taken = await self._take_fence(
            keys=[self.keys.thread(thread_id), change.fence_key], args=[change.token]
        )
        if taken == -1:
            raise NotFound(f"thread {thread_id} not found")
        if taken == 0:
            raise Conflict(f"thread {thread_id} has an active run; update its state after the run ends")
        try:
            yield change
        finally:
            await self._release_fence(keys=[change.fence_key], args=[change.token])

    async def record_state(
        self,
        change: StateChange,
        *,
        graph_id: str,
        status: str,
        values: Any,
        interrupts: Mapping[str, Any],
    ) -> bool:
        """Record the state a change wrote on the thread record. False when a run took
        the thread meanwhile: its outcome will be recorded instead."""
        written = await self._record_state(
            keys=[self.keys.thread(change.thread_id), change.fence_key],
            args=[
                now_ms(), status, jsonutil.dumps(values), jsonutil.dumps(dict(interrupts)), graph_id,
                change.token,
            ],
        )  # fmt: skip
        if written == -1:
            raise NotFound(f"thread {change.thread_id} not found")
        return bool(written == 1)
