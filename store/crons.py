"""Crons (scheduled runs) on plain Redis: their records, each tenant's index and the one
due set every scheduler reads.

| key                            | type | holds                                                 |
| ------------------------------ | ---- | ----------------------------------------------------- |
| ``P cron:{crons}:<cron>``      | hash | cron record: tenant, assistant, thread, schedule,     |
|                                |      | timezone, end_time, enabled, run payload, metadata,   |
|                                |      | rev, and ``firing``: the lease of a fire in progress  |
| ``P crons:{crons}:due``        | zset | enabled crons by next fire time (ms), the schedulers' |
|                                |      | work list; a cron's score is its ``next_run_date``    |
| ``P crons:{crons}:t:<tenant>`` | zset | the tenant's cron ids by creation time (search, count)|

All cron keys share the hash tag ``{crons}``, so one Lua script may touch a record, the
due set and an index together on Redis Cluster too (crons are few; one slot holds them).

Firing a cron is three steps, each atomic (``api/scheduler.py`` drives them; the Lua is in
``store/crons_lua.py``):
``claim`` takes a short lease on one due entry (so live schedulers never work on the
same fire), the caller creates the run with an id derived from the cron and the fire
time (creating it twice is refused), and ``advance`` moves the due entry to the next
fire time only if it still holds the claimed score (compare-and-set). A scheduler that
dies between the steps leaves a lease that expires; whoever takes it over repeats the
same fire, whose run already exists, and advances.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aredis

from core import jsonutil
from core.errors import TransientError
from core.ids import now_ms
from core.redis import awaited
from store import crons_lua as lua
from store.assistants import contains
from store.keys import check_prefix

CronSortBy = Literal[
    "cron_id", "assistant_id", "thread_id", "created_at", "updated_at", "next_run_date", "end_time"
]

_CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class CronFilter:
    """What ``POST /runs/crons/search`` and ``/count`` select on (always one tenant's)."""

    tenant: str
    assistant_id: str | None = None
    """An assistant id or a graph id."""
    thread_id: str | None = None
    enabled: bool | None = None
    metadata: Mapping[str, Any] | None = None

    def matches(self, cron: Mapping[str, Any]) -> bool:
        if self.assistant_id is not None and self.assistant_id not in (
            cron["assistant_id"],
            cron["graph_id"],
        ):
            return False
        if self.thread_id is not None and cron["thread_id"] != self.thread_id:
            return False
        if self.enabled is not None and cron["enabled"] != self.enabled:
            return False
        return not self.metadata or contains(cron["metadata"], self.metadata)


@dataclass(frozen=True)
class Poll:
    """One look at the due set: Redis's clock, what is due, and the earliest entry."""

    now: int
    due: list[tuple[str, int]]
    earliest: int | None


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (dict, list)):
        return jsonutil.dumps(value).decode()
    return str(value)


def _optional_int(raw: dict[bytes, bytes], name: bytes) -> int | None:
    value = raw.get(name)
    return int(value) if value else None


def _optional_text(raw: dict[bytes, bytes], name: bytes) -> str | None:
    value = raw.get(name)
    return value.decode() if value else None


def cron_record(raw: dict[bytes, bytes], next_run: Any) -> dict[str, Any]:
    """A stored cron as a dict (``next_run`` is its due score, None when it will not fire)."""
    return {
        "cron_id": raw[b"cron_id"].decode(),
        "tenant": raw[b"tenant"].decode(),
        "assistant_id": raw[b"assistant_id"].decode(),
        "graph_id": raw[b"graph_id"].decode(),
        "thread_id": _optional_text(raw, b"thread_id"),
        "schedule": raw[b"schedule"].decode(),
        "timezone": _optional_text(raw, b"timezone"),
        "end_time": _optional_int(raw, b"end_time"),
        "enabled": raw[b"enabled"] == b"1",
        "on_run_completed": _optional_text(raw, b"on_run_completed"),
        "payload": jsonutil.loads(raw[b"payload"]),
        "metadata": jsonutil.loads(raw[b"metadata"]),
        "user_id": _optional_text(raw, b"user_id"),
        "created_at": int(raw[b"created_at"]),
        "updated_at": int(raw[b"updated_at"]),
        "rev": raw[b"rev"].decode(),
        "next_run": int(float(next_run)) if next_run is not None else None,
    }


def _sort_key(sort_by: CronSortBy) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    field = "next_run" if sort_by == "next_run_date" else sort_by
    blank = "" if field in ("cron_id", "assistant_id", "thread_id") else 0

    def key(cron: Mapping[str, Any]) -> tuple[Any, ...]:
        # None (no thread, no end, no next fire) sorts after every value, ascending; ties
        # keep creation order, so paging through equal keys is stable.
        value = cron[field]
        return (value is None, blank if value is None else value, cron["created_at"], cron["cron_id"])

    return key


Change = Callable[[dict[str, Any]], tuple[Mapping[str, Any], int | Literal["keep"] | None]]
"""What ``CronStore.update`` applies: the record as read → ``(fields to set, due)``."""


class CronStore:
    """Cron records, their tenant indexes and the due set, on one Redis."""

    def __init__(self, client: aredis.Redis, *, prefix: str = "il:") -> None:
        self.client = client
        self.prefix = check_prefix(prefix)
        self.due_key = f"{prefix}crons:{{crons}}:due"
        self._create = client.register_script(lua.CREATE)
        self._update = client.register_script(lua.UPDATE)
        self._delete = client.register_script(lua.DELETE)
        self._delete_tenant = client.register_script(lua.DELETE_TENANT)
        self._poll = client.register_script(lua.POLL)
        self._claim = client.register_script(lua.CLAIM)
        self._advance = client.register_script(lua.ADVANCE)
        self._disable = client.register_script(lua.DISABLE)

    def key(self, cron_id: str) -> str:
        return f"{self.prefix}cron:{{crons}}:{cron_id}"

    def index(self, tenant: str) -> str:
        return f"{self.prefix}crons:{{crons}}:t:{tenant}"

    # records

    async def create(self, record: Mapping[str, Any], next_run: int | None) -> None:
        """Write a new cron (``record`` holds ``cron_id``, ``tenant``, ``created_at`` …) and,
        with ``next_run``, put it in the due set, at once."""
        pairs = [item for name, value in record.items() for item in (name, _field(value))]
        await self._create(
            keys=[self.key(record["cron_id"]), self.index(record["tenant"]), self.due_key],
            args=[record["cron_id"], record["created_at"], _field(next_run), *pairs, "rev", "1"],
        )

    async def get(self, cron_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The cron, or None when there is none (or, given ``tenant``, it is another's)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key(cron_id))
        pipe.zscore(self.due_key, cron_id)
        raw, score = await pipe.execute()
        if not raw or (tenant is not None and raw[b"tenant"].decode() != tenant):
            return None
        return cron_record(raw, score)

    async def update(self, cron_id: str, tenant: str, change: Change) -> dict[str, Any] | None:
        """Apply ``change(record) -> (fields, due)`` atomically against the record as read
        (retried when it changed meanwhile); ``due`` is the new next fire time, ``None``
        to stop firing, or ``"keep"``. Returns the updated cron, or None when the tenant
        has no such cron."""
        for _ in range(_CAS_ATTEMPTS):
            current = await self.get(cron_id, tenant)
            if current is None:
                return None
            fields, due = change(current)
            pairs = [item for name, value in fields.items() for item in (name, _field(value))]
            written = await self._update(
                keys=[self.key(cron_id), self.due_key],
                args=[cron_id, tenant, current["rev"], "remove" if due is None else str(due), *pairs],
            )
            if written == -1:
                return None
            if written == 1:
                return await self.get(cron_id, tenant)
        raise TransientError(f"cron {cron_id} is being changed concurrently; retry")

    async def delete(self, cron_id: str, tenant: str | None) -> bool:
        """Delete the cron (given ``tenant``: only if it is that tenant's); its future fires
        stop at once. Returns whether there was one."""
        owner = tenant
        if owner is None:
            raw = await awaited(self.client.hget(self.key(cron_id), "tenant"))
            if raw is None:
                return False
            owner = raw.decode()
        deleted = await self._delete(
            keys=[self.key(cron_id), self.due_key, self.index(owner)], args=[cron_id, tenant or ""]
        )
        return bool(deleted)

    async def delete_tenant(self, tenant: str) -> int:
        """Delete every cron of ``tenant`` at once (for whatever deletes a tenant)."""
        return int(await self._delete_tenant(keys=[self.index(tenant), self.due_key], args=[self.key("")]))

    async def disable(self, cron_id: str) -> bool:
        """Stop the cron's fires and mark it disabled (the scheduler does this when a cron
        can no longer run); PATCH ``enabled=true`` starts it again."""
        return bool(await self._disable(keys=[self.key(cron_id), self.due_key], args=[cron_id, now_ms()]))

    async def _records(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for cron_id in ids:
            pipe.hgetall(self.key(cron_id))
        pipe.zmscore(self.due_key, list(ids))
        *raws, scores = await pipe.execute()
        return [cron_record(raw, score) for raw, score in zip(raws, scores, strict=True) if raw]

    async def _matching(self, where: CronFilter) -> list[dict[str, Any]]:
        members: Any = await self.client.zrange(self.index(where.tenant), 0, -1)
        found = await self._records([m.decode() for m in members])
        return [c for c in found if c["tenant"] == where.tenant and where.matches(c)]

    async def search(
        self,
        where: CronFilter,
        *,
        limit: int,
        offset: int,
        sort_by: CronSortBy = "created_at",
        sort_order: Literal["asc", "desc"] = "desc",
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the matching crons, and how many match in all."""
        found = await self._matching(where)
        found.sort(key=_sort_key(sort_by), reverse=sort_order == "desc")
        return found[offset : offset + limit], len(found)

    async def count(self, where: CronFilter) -> int:
        if (
            where.assistant_id is None
            and where.thread_id is None
            and where.enabled is None
            and not where.metadata
        ):
            return int(await self.client.zcard(self.index(where.tenant)))
        return len(await self._matching(where))

    # scheduling

    async def poll(self, limit: int) -> Poll:
        now, due, earliest = await self._poll(keys=[self.due_key], args=[limit])
        pairs = [(due[i].decode(), int(float(due[i + 1]))) for i in range(0, len(due), 2)]
        return Poll(int(now), pairs, int(float(earliest)) if earliest is not None else None)

    async def claim(
        self, cron_id: str, due: int, fire_at: int, *, owner: str, now: int, lease_ms: int
    ) -> int | None:
        """Take the fire of ``cron_id`` due at ``due``: returns the fire time to use (that
        of an expired lease taken over, else ``fire_at``), or None when it is not ours."""
        got = await self._claim(
            keys=[self.key(cron_id), self.due_key], args=[cron_id, due, fire_at, owner, now, lease_ms]
        )
        return int(got) if got is not None else None

    async def advance(self, cron_id: str, due: int, next_run: int | None) -> bool:
        """Move the cron from ``due`` to ``next_run`` (None: it has ended), only if it is
        still due at ``due``; drop the lease on that fire either way."""
        moved = await self._advance(
            keys=[self.key(cron_id), self.due_key], args=[cron_id, due, _field(next_run)]
        )
        return bool(moved)
