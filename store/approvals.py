"""Approvals: the human approval steps a run waits on, their deadlines and audit trail.

An approval is made by the worker when a run pauses on an approval interrupt (its id is
derived from the thread and the interrupt id: a copied thread has the same interrupt ids,
but approvals of its own), and decided when a run that answers it is created: that write and the
run's creation are one Lua script (``CREATE_RUN`` in ``store/runs_lua.py``), so an
approval is answered exactly once, and a 2xx means the run that carries the answer exists.

| key                         | type   | holds                                                    |
| --------------------------- | ------ | -------------------------------------------------------- |
| ``P appr:{t}:<id>``         | hash   | ``doc`` (JSON: the request, who may decide, deadline…),  |
|                             |        | ``status`` (pending, decided), ``decision`` (JSON),      |
|                             |        | ``decided_at``, ``resume_run``, ``assignee``             |
| ``P appr:{t}:<id>:audit``   | list   | the approval's audit entries (JSON), append-only         |
| ``P appr:{t}``              | set    | the thread's approval ids (deleted with the thread)      |
| ``P approvals:<tenant>``    | zset   | the tenant's approval ids by request time (ms)           |
| ``P approvals:where``       | hash   | approval id → thread id                                  |
| ``P approvals:due``         | zset   | pending approvals' ids by deadline (ms)                  |
| ``P audit:<tenant>``        | stream | every audit entry of the tenant, in order (export)       |
| ``P approvals:remind``      | zset   | pending approvals' ids by reminder time (ms)             |

With a notification URL (``INTERLOCK_APPROVALS_WEBHOOK_URL``), ``approval.requested``,
``approval.reminder`` (three quarters into the deadline) and ``approval.escalated`` go
out as webhooks: each is written to the webhooks stream in the same Lua step as the change
it announces, and delivered, signed and retried like run webhooks (``runs/webhooks.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aredis

from core import jsonutil
from core.ids import now_ms
from core.redis import awaited
from store.keys import check_prefix

# Shared: announce an approval event on the webhooks stream ('' url: nothing).
_NOTIFY_FN = """
local function notify(stream, url, delivery_id, thread_id, body)
  if url ~= '' then
    redis.call('XADD', stream, '*', 'url', url, 'id', delivery_id, 't', thread_id, 'body', body)
  end
end
"""

# KEYS: approval, audit list, tenant index, where, due, tenant audit stream, thread's set,
#       webhooks stream, reminders.
# ARGV: id, thread_id, doc, requested_at, deadline ('' none), audit entry, assignee,
#       notify url ('' none), delivery id, notification body, remind at ('' none).
# Returns 1 when made, 0 when it existed (the step was re-executed after a take-over).
_RECORD = (
    _NOTIFY_FN
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SADD', KEYS[7], ARGV[1])
notify(KEYS[8], ARGV[8], ARGV[9], ARGV[2], ARGV[10])
if ARGV[11] ~= '' then redis.call('ZADD', KEYS[9], ARGV[11], ARGV[1]) end
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'status', 'pending', 'assignee', ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1]) end
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('XADD', KEYS[6], '*', 'd', ARGV[6])
return 1
"""
)

# KEYS: approval, due, tenant audit stream, webhooks stream. ARGV: id, expected deadline,
# new assignee, new deadline ('' none), audit entry, notify url, delivery id, body, thread.
# Escalates a pending approval whose deadline is the expected one (so two schedulers
# escalate it once). Returns 1 escalated, 0 not.
_ESCALATE = (
    _NOTIFY_FN
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'assignee', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'escalations', 1)
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) else redis.call('ZREM', KEYS[2], ARGV[1]) end
redis.call('RPUSH', KEYS[1] .. ':audit', ARGV[5])
redis.call('XADD', KEYS[3], '*', 'd', ARGV[5])
notify(KEYS[4], ARGV[6], ARGV[7], ARGV[9], ARGV[8])
return 1
"""
)

# KEYS: reminders, approval, webhooks stream. ARGV: id, notify url, delivery id, body, thread.
# Sends the reminder once (whoever removes it from the set) and only while still pending.
_REMIND = (
    _NOTIFY_FN
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[2], 'status') ~= 'pending' then return 0 end
notify(KEYS[3], ARGV[2], ARGV[3], ARGV[5], ARGV[4])
return 1
"""
)

REMIND_AT = 0.75
"""The reminder goes out when this share of the deadline has passed."""


APPROVAL_IDS = uuid.UUID("6f0c5a8e-29a4-4c51-9a52-3f1d0f3e7a10")


def approval_id(thread_id: str, interrupt_id: str) -> str:
    """The id of the approval of ``interrupt_id`` on ``thread_id``."""
    return uuid.uuid5(APPROVAL_IDS, f"{thread_id}:{interrupt_id}").hex


@dataclass(frozen=True)
class Answering:
    """An approval answered by a run being created: what ``CREATE_RUN`` writes."""

    key: str
    approval_id: str
    decision: dict[str, Any]
    audit: dict[str, Any]


class ApprovalStore:
    def __init__(self, client: aredis.Redis, *, prefix: str = "il:", notify_url: str | None = None) -> None:
        self.client = client
        self.prefix = check_prefix(prefix)
        self.notify_url = notify_url or ""
        self.where_key = f"{prefix}approvals:where"
        self.due_key = f"{prefix}approvals:due"
        self.remind_key = f"{prefix}approvals:remind"
        self.webhooks_key = f"{prefix}webhooks"
        self._record = client.register_script(_RECORD)
        self._escalate = client.register_script(_ESCALATE)
        self._remind = client.register_script(_REMIND)

    def key(self, thread_id: str, approval_id: str) -> str:
        return f"{self.prefix}appr:{{{thread_id}}}:{approval_id}"

    def thread_set(self, thread_id: str) -> str:
        return f"{self.prefix}appr:{{{thread_id}}}"

    async def thread_keys(self, thread_id: str) -> list[str]:
        """The keys of the thread's approvals (deleted with the thread, atomically)."""
        ids: Any = await self.client.smembers(self.thread_set(thread_id))
        keys = [self.thread_set(thread_id)]
        for raw in ids:
            key = self.key(thread_id, raw.decode())
            keys += [key, key + ":audit"]
        return keys

    async def forget(self, thread_id: str, tenant: str, approval_ids: Sequence[str]) -> None:
        """Drop deleted approvals from the indexes (the tenant's audit stream keeps them)."""
        if approval_ids:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(self.index_key(tenant), *approval_ids)
            pipe.hdel(self.where_key, *approval_ids)
            pipe.zrem(self.due_key, *approval_ids)
            pipe.zrem(self.remind_key, *approval_ids)
            await pipe.execute()

    async def get_in(self, thread_id: str, approval_id: str) -> dict[str, Any] | None:
        found = await self._many([(thread_id, approval_id)])
        return found[0] if found else None

    def index_key(self, tenant: str) -> str:
        return f"{self.prefix}approvals:{tenant}"

    def audit_key(self, tenant: str) -> str:
        return f"{self.prefix}audit:{tenant}"

    async def record(self, docs: Sequence[dict[str, Any]]) -> int:
        """Make the approvals a paused run waits on (idempotent). Returns how many are new."""
        if not docs:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for doc in docs:
            entry = audit_entry(doc, "requested", actor=f"run:{doc['run_id']}", request=doc["request"])
            deadline = doc.get("deadline_at")
            remind_at = (
                int(doc["requested_at"] + (deadline - doc["requested_at"]) * REMIND_AT)
                if deadline is not None
                else None
            )
            await self._record(
                keys=[
                    self.key(doc["thread_id"], doc["id"]), self.key(doc["thread_id"], doc["id"]) + ":audit",
                    self.index_key(doc["tenant"]), self.where_key, self.due_key, self.audit_key(doc["tenant"]),
                    self.thread_set(doc["thread_id"]), self.webhooks_key, self.remind_key,
                ],
                args=[
                    doc["id"], doc["thread_id"], jsonutil.dumps(doc), doc["requested_at"],
                    doc["deadline_at"] if doc.get("deadline_at") is not None else "",
                    jsonutil.dumps(entry), doc["assignee"], self.notify_url, f"{doc['id']}:requested",
                    jsonutil.dumps(notification(doc, "approval.requested")),
                    remind_at if remind_at is not None else "",
                ],
                client=pipe,
            )  # fmt: skip
        return sum(int(n) for n in await pipe.execute())

    async def get(self, approval_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The approval with its current status, or None (also when it is another tenant's)."""
        thread_id = await awaited(self.client.hget(self.where_key, approval_id))
        if thread_id is None:
            return None
        found = await self._many([(thread_id.decode(), approval_id)])
        if not found or (tenant is not None and found[0]["tenant"] != tenant):
            return None
        return found[0]

    async def _many(self, refs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        for thread_id, approval_id in refs:
            pipe.hgetall(self.key(thread_id, approval_id))
        return [_approval(raw) for raw in await pipe.execute() if raw]

    async def search(self, tenant: str, *, newest_first: bool = True) -> list[dict[str, Any]]:
        """Every approval of the tenant (the caller filters and pages)."""
        ids: Any = await self.client.zrange(self.index_key(tenant), 0, -1, desc=newest_first)
        if not ids:
            return []
        threads: Any = await self.client.hmget(self.where_key, ids)
        refs = [(t.decode(), i.decode()) for i, t in zip(ids, threads, strict=True) if t is not None]
        return await self._many(refs)

    async def audit(self, thread_id: str, approval_id: str) -> list[dict[str, Any]]:
        raw: Any = await self.client.lrange(self.key(thread_id, approval_id) + ":audit", 0, -1)
        return [jsonutil.loads(r) for r in raw]

    async def export(self, tenant: str, *, after: str = "-", count: int = 1000) -> list[tuple[str, bytes]]:
        """The tenant's audit entries in order, as ``(entry id, JSON)``, after ``after``."""
        start = f"({after}" if after != "-" else "-"
        raw: Any = await self.client.xrange(self.audit_key(tenant), start, "+", count=count)
        return [(mid.decode(), fields[b"d"]) for mid, fields in raw]

    async def due(self, now: int, count: int = 100) -> list[tuple[str, int]]:
        """Pending approvals whose deadline passed: ``(id, deadline)``."""
        raw: Any = await self.client.zrangebyscore(
            self.due_key, "-inf", now, start=0, num=count, withscores=True
        )
        return [(m.decode(), int(s)) for m, s in raw]

    async def next_deadline(self) -> int | None:
        raw: Any = await self.client.zrange(self.due_key, 0, 0, withscores=True)
        return int(raw[0][1]) if raw else None

    async def drop_due(self, approval_id: str) -> None:
        await self.client.zrem(self.due_key, approval_id)

    async def escalate(
        self,
        approval: dict[str, Any],
        *,
        deadline: int,
        assignee: str,
        new_deadline: int | None,
        entry: dict[str, Any],
    ) -> bool:
        escalated = {**approval, "assignee": assignee, "deadline_at": new_deadline}
        n = approval["escalations"] + 1
        done = await self._escalate(
            keys=[
                self.key(approval["thread_id"], approval["id"]), self.due_key,
                self.audit_key(approval["tenant"]), self.webhooks_key,
            ],
            args=[
                approval["id"], deadline, assignee, new_deadline if new_deadline is not None else "",
                jsonutil.dumps(entry), self.notify_url, f"{approval['id']}:escalated:{n}",
                jsonutil.dumps(notification(escalated, "approval.escalated")), approval["thread_id"],
            ],
        )  # fmt: skip
        return bool(done)

    async def reminders_due(self, now: int, count: int = 100) -> list[str]:
        raw: Any = await self.client.zrangebyscore(self.remind_key, "-inf", now, start=0, num=count)
        return [m.decode() for m in raw]

    async def remind(self, approval: dict[str, Any]) -> bool:
        """Send the approval's reminder (once, while pending). False when not sent."""
        done = await self._remind(
            keys=[self.remind_key, self.key(approval["thread_id"], approval["id"]), self.webhooks_key],
            args=[
                approval["id"], self.notify_url, f"{approval['id']}:reminder",
                jsonutil.dumps(notification(approval, "approval.reminder")), approval["thread_id"],
            ],
        )  # fmt: skip
        return bool(done)

    def answering(self, approval: dict[str, Any], decision: dict[str, Any], actor: str) -> Answering:
        return Answering(
            key=self.key(approval["thread_id"], approval["id"]),
            approval_id=approval["id"],
            decision=decision,
            audit=audit_entry(
                approval, "decided", actor=actor, decision=decision, request=approval["request"]
            ),
        )


def notification(approval: dict[str, Any], event: str) -> dict[str, Any]:
    """The webhook body announcing an approval event."""
    request = approval["request"]
    deadline = approval.get("deadline_at")
    return {
        "event": event,
        "approval_id": approval["id"],
        "tenant": approval["tenant"],
        "thread_id": approval["thread_id"],
        "run_id": approval["run_id"],
        "graph_id": approval["graph_id"],
        "action": request.get("action"),
        "summary": request.get("summary"),
        "assignee": approval["assignee"],
        "deadline_at": datetime.fromtimestamp(deadline / 1000, UTC).isoformat() if deadline else None,
    }


def audit_entry(approval: dict[str, Any], event: str, *, actor: str, **data: Any) -> dict[str, Any]:
    return {
        "ts": now_ms(),
        "event": event,
        "approval_id": approval["id"],
        "thread_id": approval["thread_id"],
        "graph_id": approval.get("graph_id"),
        "actor": actor,
        **data,
    }


def _approval(raw: dict[bytes, bytes]) -> dict[str, Any]:
    doc: dict[str, Any] = jsonutil.loads(raw[b"doc"])
    decision = raw.get(b"decision")
    doc.update(
        status=raw[b"status"].decode(),
        assignee=raw.get(b"assignee", doc["assignee"].encode()).decode(),
        escalations=int(raw.get(b"escalations", b"0")),
        decision=jsonutil.loads(decision) if decision else None,
        decided_at=int(raw[b"decided_at"]) if b"decided_at" in raw else None,
        resume_run=raw[b"resume_run"].decode() if b"resume_run" in raw else None,
    )
    return doc
