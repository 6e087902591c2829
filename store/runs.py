"""Thread and run records, the run queue and run event streams, on plain Redis.

Every state change that must be all-or-nothing is one Lua script over one thread's keys
(plus the queue): creating a run writes its record *and* enqueues it, so an acknowledged
run always exists and is always queued; finishing a run records the outcome, publishes the
end event, acknowledges the queue entry and promotes the thread's next pending run, all at
once. Key layout: ``store/layout.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

import redis.asyncio as aredis

from core import jsonutil
from core.errors import Conflict, NotFound
from core.ids import now_ms
from core.redis import BoundScript, Scripts, awaited
from store import runs_lua as lua
from store.approvals import Answering
from store.layout import DEFAULT_TENANT, QUEUE_GROUP, Layout

RunStatus = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
MultitaskStrategy = Literal["reject", "interrupt", "rollback", "enqueue"]

RECENT_RUNS = 10_000
"""Runs per tenant kept in the recent-runs index (the console's runs page)."""

TERMINAL_STATUSES = frozenset({"success", "error", "timeout", "interrupted"})

END_EVENT = "__end__"
"""Control event that closes a run's event stream; never forwarded to SSE clients."""

FIRST_EVENT_ID = "0-1"
"""Stream id of a run's first ``metadata`` event when its stream was empty (``CLAIM_RUN``);
later events get Redis's time-based ids, always greater."""

_ERRORS = {
    "no_thread": (
        NotFound,
        "thread {thread_id} not found; create it first or pass if_not_exists='create'",
    ),
    "busy": (Conflict, "thread {thread_id} is busy with another run (multitask_strategy='reject')"),
    "nothing_to_resume": (Conflict, "thread {thread_id} has no pending interrupt to resume"),
    "thread_exists": (Conflict, "thread {thread_id} already exists"),
    "run_exists": (Conflict, "a run with this id already exists on thread {thread_id}"),
}


def _raise_script_error(e: aredis.ResponseError, thread_id: str) -> None:
    code = str(e).strip()
    if code.startswith("approval_decided "):
        approval_id = code.split(" ", 1)[1]
        raise Conflict(f"approval {approval_id} has already been decided; nothing was written") from None
    if code in _ERRORS:
        cls, message = _ERRORS[code]
        raise cls(message.format(thread_id=thread_id)) from None
    raise e


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


@dataclass(frozen=True)
class QueuedRun:
    """One entry of the run queue as a worker receives it."""

    message_id: str
    thread_id: str
    run_id: str
    payload: dict[str, Any]
    kind: Literal["run", "rollback"] = "run"


class Claim(NamedTuple):
    """A run taken by :meth:`RunStore.claim_run`."""

    token: str
    """The fence token, ``<run>:<epoch>``."""
    empty_thread: bool
    """First claim, and the thread had no root checkpoint at that instant."""


class RunStore:
    """Threads, runs, the run queue and run events on one Redis."""

    def __init__(
        self,
        client: aredis.Redis,
        *,
        prefix: str = "il:",
        events_maxlen: int = 10_000,
        events_ttl_s: int = 24 * 3600,
    ) -> None:
        self.client = client
        self.keys = Layout(prefix)
        self.events_maxlen = events_maxlen
        self.events_ttl_s = events_ttl_s
        # The scripts of every run go on the lean path (core.redis.Scripts), never retried.
        scripts = Scripts(client)
        self._create_thread = BoundScript(scripts, lua.CREATE_THREAD)
        self._create_run = BoundScript(scripts, lua.CREATE_RUN)
        self._finish_run = BoundScript(scripts, lua.FINISH_RUN)
        self._claim_run = BoundScript(scripts, lua.CLAIM_RUN)
        self._cancel_run = BoundScript(scripts, lua.CANCEL_RUN)
        self._rollback_done = BoundScript(scripts, lua.ROLLBACK_DONE)
        self._delete_run = BoundScript(scripts, lua.DELETE_RUN)

    async def setup(self) -> None:
        """Create the queue's consumer group (idempotent)."""
        try:
            await self.client.xgroup_create(self.keys.queue, QUEUE_GROUP, id="0", mkstream=True)
        except aredis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # threads

    async def create_thread(
        self,
        thread_id: str,
        metadata: Mapping[str, Any],
        *,
        if_exists: Literal["raise", "do_nothing"] = "raise",
        tenant: str = DEFAULT_TENANT,
    ) -> dict[str, Any]:
        """The new thread's record, or (``if_exists="do_nothing"``) the one already there."""
        now = now_ms()
        try:
            flat: list[bytes] = await self._create_thread(
                keys=[self.keys.thread(thread_id), self.keys.threads(tenant)],
                args=[thread_id, now, jsonutil.dumps(dict(metadata)), if_exists, tenant],
            )
        except aredis.ResponseError as e:
            _raise_script_error(e, thread_id)
        return thread_record(dict(zip(flat[::2], flat[1::2], strict=True)))

    async def get_thread(self, thread_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The thread, or None when there is none (or, given ``tenant``, it is another's)."""
        raw: dict[bytes, bytes] = await awaited(self.client.hgetall(self.keys.thread(thread_id)))
        if not raw or (tenant is not None and _tenant(raw) != tenant):
            return None
        return thread_record(raw)

    # runs

    async def create_run(
        self,
        *,
        run_id: str,
        thread_id: str,
        graph_id: str,
        assistant_id: str,
        metadata: Mapping[str, Any],
        payload: Mapping[str, Any],
        strategy: MultitaskStrategy,
        if_not_exists: Literal["create", "reject"],
        is_resume: bool,
        tenant: str = DEFAULT_TENANT,
        answering: Sequence[Answering] = (),
        audit_key: str = "",
        due_key: str = "",
    ) -> dict[str, Any]:
        """Write the run record and enqueue it (or queue it behind the thread's active
        run) in one atomic step. Raises NotFound/Conflict and then writes nothing.

        Returns the record as written (what ``get_run`` read at that instant): a worker may
        claim the run before the caller answers, and the protocol answers with the run as
        it was created.

        ``payload["webhook"]``, when set, is noted on the run record: whatever ends the run
        records the webhook's delivery in the same step (``store/webhooks.py``)."""
        k = self.keys
        now = now_ms()
        try:
            status = await self._create_run(
                keys=[
                    k.thread(thread_id), k.thread_runs(thread_id), k.thread_pending(thread_id),
                    k.run(thread_id, run_id), k.queue, k.threads(tenant), k.fence(thread_id),
                    k.recent_runs(tenant), k.webhooks,
                    *([audit_key, due_key, *(a.key for a in answering)] if answering else []),
                ],
                args=[
                    run_id, thread_id, now, strategy, if_not_exists, "1" if is_resume else "0",
                    graph_id, assistant_id, jsonutil.dumps(dict(metadata)), jsonutil.dumps(dict(payload)),
                    k.run_prefix(thread_id), self.events_maxlen, self.events_ttl_s, tenant,
                    RECENT_RUNS, payload.get("webhook") or "",
                    *(v for a in answering for v in (
                        jsonutil.dumps(a.decision), jsonutil.dumps(a.audit), a.approval_id,
                    )),
                ],
            )  # fmt: skip
        except aredis.ResponseError as e:
            _raise_script_error(e, thread_id)
        return {
            "run_id": run_id,
            "thread_id": thread_id,
            "assistant_id": assistant_id,
            "graph_id": graph_id,
            "created_at": now,
            "updated_at": now,
            "status": cast(RunStatus, status.decode()),
            "metadata": dict(metadata),
            "multitask_strategy": strategy,
            "kwargs": dict(payload),
            "tenant": tenant,
        }

    async def cancel_run(
        self, thread_id: str, run_id: str, action: Literal["interrupt", "rollback"] = "interrupt"
    ) -> str:
        """Cancel a pending or running run, wherever its worker is: it is marked
        ``interrupted`` and its owner is fenced out (it stops at its next checkpoint or
        side effect, writing nothing); the thread's next queued run starts.

        ``rollback`` also undoes the run: a pending one is deleted at once; for the active
        one a rollback job is queued, whose worker deletes the run and its checkpoints and
        then starts the thread's next run. Returns ``cancelled`` or ``rolling_back``."""
        k = self.keys
        try:
            result = await self._cancel_run(
                keys=[
                    k.thread(thread_id), k.thread_pending(thread_id), k.run(thread_id, run_id),
                    k.queue, k.fence(thread_id), k.thread_runs(thread_id), k.webhooks,
                ],
                args=[
                    run_id, thread_id, now_ms(), k.run_prefix(thread_id), self.events_maxlen,
                    self.events_ttl_s, action,
                ],
            )  # fmt: skip
        except aredis.ResponseError as e:
            code = str(e).strip()
            if code == "no_run":
                raise NotFound(f"run {run_id} not found on thread {thread_id}") from None
            if code == "not_active":
                raise Conflict(
                    f"run {run_id} has already ended; only pending or running runs can be cancelled"
                ) from None
            raise
        return str(result.decode() if isinstance(result, bytes) else result)

    async def delete_run(self, thread_id: str, run_id: str) -> None:
        """Delete an ended run's record and events. NotFound, or Conflict while it is
        pending, running or being rolled back."""
        try:
            await self._delete_run(
                keys=[self.keys.run(thread_id, run_id), self.keys.thread_runs(thread_id)], args=[run_id]
            )
        except aredis.ResponseError as e:
            if str(e).strip() == "no_run":
                raise NotFound(f"run {run_id} not found on thread {thread_id}") from None
            if str(e).strip() == "not_ended":
                raise Conflict(f"run {run_id} has not ended; cancel it first, then delete it") from None
            raise

    async def active_runs(self, thread_id: str) -> list[tuple[str, str]]:
        """``(run_id, status)`` of the thread's active run and of the runs waiting behind it."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.keys.thread(thread_id), "active_run")
        pipe.lrange(self.keys.thread_pending(thread_id), 0, -1)
        active, pending = await pipe.execute()
        found = [(active.decode(), "running")] if active else []
        return found + [(r.decode(), "pending") for r in pending]

    async def rollback_base(self, thread_id: str, run_id: str) -> tuple[bytes, set[bytes]] | None:
        """The checkpoint a run started from and the writes it had then (noted at the
        run's first claim), or None when the run started on an empty thread or never ran."""
        cp, writes = await awaited(
            self.client.hmget(self.keys.run(thread_id, run_id), ["base_cp", "base_writes"])
        )
        if not cp:
            return None
        return cp, set(writes.split(b"\n")) if writes else set()

    async def rollback_done(
        self,
        *,
        thread_id: str,
        run_id: str,
        message_id: str,
        thread_status: ThreadStatus,
        values: Any,
        interrupts: Any,
    ) -> bool:
        """Delete the rolled-back run, set the thread's state, ack the rollback job and
        start the thread's next run, atomically. False when another worker did it first."""
        k = self.keys
        done = await self._rollback_done(
            keys=[
                k.thread(thread_id), k.thread_pending(thread_id), k.run(thread_id, run_id),
                k.queue, k.fence(thread_id), k.thread_runs(thread_id),
            ],
            args=[
                run_id, thread_id, now_ms(), k.run_prefix(thread_id), thread_status,
                jsonutil.dumps(values), jsonutil.dumps(interrupts), message_id, QUEUE_GROUP,
            ],
        )  # fmt: skip
        return bool(done)

    async def get_run(self, thread_id: str, run_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The run, or None when there is none (or, given ``tenant``, it is another's)."""
        raw: dict[bytes, bytes] = await awaited(self.client.hgetall(self.keys.run(thread_id, run_id)))
        if not raw or (tenant is not None and _tenant(raw) != tenant):
            return None
        return _run_record(raw)

    async def recent_runs(self, tenant: str, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The tenant's runs, newest first, across threads (the last ``RECENT_RUNS``)."""
        refs: Any = await self.client.zrevrange(self.keys.recent_runs(tenant), offset, offset + limit - 1)
        pipe = self.client.pipeline(transaction=False)
        for ref in refs:
            thread_id, _, run_id = ref.decode().partition("|")
            pipe.hgetall(self.keys.run(thread_id, run_id))
        return [_run_record(raw) for raw in await pipe.execute() if raw]

    async def list_runs(self, thread_id: str, *, limit: int = 10, offset: int = 0) -> list[dict[str, Any]]:
        ids: Any = await self.client.zrevrange(self.keys.thread_runs(thread_id), offset, offset + limit - 1)
        pipe = self.client.pipeline(transaction=False)
        for rid in ids:
            pipe.hgetall(self.keys.run(thread_id, rid.decode()))
        return [_run_record(raw) for raw in await pipe.execute() if raw]

    async def claim_run(self, thread_id: str, run_id: str, worker: str) -> Claim | None:
        """Take ownership of a run: bump its epoch, point the thread's fence at it, mark
        it running and publish the ``metadata`` event, in one round trip.

        Returns the fence token (``<run>:<epoch>``) that every later write of this
        owner must present, or None when the run already ended.
        """
        k = self.keys
        epoch, empty = await self._claim_run(
            keys=[
                k.run(thread_id, run_id),
                k.fence(thread_id),
                k.events(thread_id, run_id),
                k.checkpoint_index(thread_id),
                k.checkpoint_writes(thread_id),
            ],
            args=[run_id, worker, now_ms(), self.events_maxlen, self.events_ttl_s, FIRST_EVENT_ID],
        )
        return Claim(f"{run_id}:{int(epoch)}", bool(empty)) if int(epoch) else None

    async def publish(self, thread_id: str, run_id: str, events: Sequence[tuple[str, bytes]]) -> None:
        """Append events to the run's stream, all in one round trip."""
        key = self.keys.events(thread_id, run_id)
        if len(events) == 1:
            await self.client.xadd(key, {"e": events[0][0], "d": events[0][1]}, maxlen=self.events_maxlen)
            return
        pipe = self.client.pipeline(transaction=False)
        for name, data in events:
            pipe.xadd(key, {"e": name, "d": data}, maxlen=self.events_maxlen)
        await pipe.execute()

    async def finish_run(
        self,
        *,
        thread_id: str,
        run_id: str,
        message_id: str,
        run_status: RunStatus,
        thread_status: ThreadStatus,
        values: Any,
        interrupts: Any,
        end: Mapping[str, Any],
        token: str,
        trace: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the outcome (and the webhook's delivery, if the run has one), close the
        event stream, ack the queue entry and start the thread's next pending run —
        atomically, and only while ``token`` still owns the run. Returns False (and writes
        nothing) when it does not.

        ``trace`` (the segment's number and trace ids) is kept on the thread, for the
        trace of a later resume to link to."""
        k = self.keys
        done = await self._finish_run(
            keys=[
                k.thread(thread_id), k.thread_pending(thread_id), k.run(thread_id, run_id),
                k.queue, k.events(thread_id, run_id), k.fence(thread_id), k.webhooks,
            ],
            args=[
                run_id, now_ms(), run_status, thread_status, jsonutil.dumps(values),
                jsonutil.dumps(interrupts), jsonutil.dumps(dict(end)), message_id, QUEUE_GROUP,
                k.run_prefix(thread_id), self.events_maxlen, self.events_ttl_s, thread_id, token,
                jsonutil.dumps(dict(trace)) if trace else b"",
            ],
        )  # fmt: skip
        return int(done) != -1

    async def read_events(
        self, thread_id: str, run_id: str, after: str, *, block_ms: int | None
    ) -> list[tuple[str, str, bytes]]:
        """Events after stream id ``after`` as ``(id, event, data)``; blocks up to
        ``block_ms`` for the first one when there is none yet."""
        key = self.keys.events(thread_id, run_id)
        reply: Any = await self.client.xread({key: after}, block=block_ms, count=1000)
        if not reply:
            return []
        return [(mid.decode(), f[b"e"].decode(), f[b"d"]) for mid, f in reply[0][1]]

    async def wait_for_end(
        self, thread_id: str, run_id: str, *, block_ms: int = 5_000
    ) -> dict[str, Any] | None:
        """Block until the run's end event; return it (``status``, ``values``/``error``…).

        None when the run does not exist. A run that ended so long ago that its events
        expired returns ``{"status": …, "expired": True}``.
        """
        # From after the first claim's metadata event: a run nobody streams wakes this
        # once, at its end.
        last = FIRST_EVENT_ID
        while True:
            batch = await self.read_events(thread_id, run_id, last, block_ms=block_ms)
            for event_id, name, data in batch:
                last = event_id
                if name == END_EVENT:
                    return dict(jsonutil.loads(data))
            if not batch:
                run = await self.get_run(thread_id, run_id)
                if run is None:
                    return None
                if run["status"] in TERMINAL_STATUSES:
                    return {"status": run["status"], "expired": True}

    # queue

    async def heartbeat(self, consumer: str, message_ids: Sequence[str]) -> None:
        """Keep ``consumer``'s runs: reset their idle time in the queue's pending list, so
        no other worker reclaims them (XCLAIM to itself, JUSTID)."""
        if message_ids:
            await self.client.xclaim(
                self.keys.queue, QUEUE_GROUP, consumer, 0, list(message_ids), justid=True
            )

    async def hand_back(self, consumer: str, message_ids: Sequence[str], lease_ms: int) -> None:
        """Give up runs at shutdown: mark their entries idle past the lease, so the next
        reclaim of any worker takes them over without waiting."""
        if message_ids:
            await self.client.xclaim(
                self.keys.queue, QUEUE_GROUP, consumer, 0, list(message_ids), idle=lease_ms + 1, justid=True
            )

    async def ack(self, message_id: str) -> None:
        """Drop a queue entry that has nothing left to do."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.keys.queue, QUEUE_GROUP, message_id)
        pipe.xdel(self.keys.queue, message_id)
        await pipe.execute()

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[QueuedRun]:
        """Take over runs whose worker stopped heartbeating for ``min_idle_ms``."""
        reply: Any = await self.client.xautoclaim(
            self.keys.queue, QUEUE_GROUP, consumer, min_idle_ms, "0-0", count=count
        )
        entries = reply[1] if reply else []
        return [_queued(mid, fields) for mid, fields in entries if fields]

    async def claim(self, consumer: str, count: int, *, block_ms: int) -> list[QueuedRun]:
        """Take up to ``count`` new runs from the queue, blocking up to ``block_ms``."""
        reply: Any = await self.client.xreadgroup(
            QUEUE_GROUP, consumer, {self.keys.queue: ">"}, count=count, block=block_ms
        )
        if not reply:
            return []
        return [_queued(mid, fields) for mid, fields in reply[0][1]]


def _queued(message_id: bytes, fields: dict[bytes, bytes]) -> QueuedRun:
    return QueuedRun(
        message_id=message_id.decode(),
        thread_id=fields[b"t"].decode(),
        run_id=fields[b"r"].decode(),
        payload=jsonutil.loads(fields[b"p"]) if b"p" in fields else {},
        kind="rollback" if fields.get(b"k") == b"rollback" else "run",
    )


def _tenant(raw: dict[bytes, bytes]) -> str:
    """The owner of a thread or run record (records from before tenants: ``default``)."""
    value = raw.get(b"tenant")
    return value.decode() if value else DEFAULT_TENANT


def thread_record(raw: dict[bytes, bytes]) -> dict[str, Any]:
    metadata = jsonutil.loads(raw.get(b"metadata", b"{}"))
    for field in ("graph_id", "assistant_id"):
        if (value := raw.get(field.encode())) is not None:
            metadata.setdefault(field, value.decode())
    values = raw.get(b"values")
    interrupts = raw.get(b"interrupts")
    trace = raw.get(b"trace")
    return {
        "thread_id": raw[b"thread_id"].decode(),
        "created_at": int(raw[b"created_at"]),
        "updated_at": int(raw[b"updated_at"]),
        "metadata": metadata,
        "status": raw[b"status"].decode(),
        "values": jsonutil.loads(values) if values else None,
        "interrupts": jsonutil.loads(interrupts) if interrupts else {},
        "graph_id": _text(raw.get(b"graph_id")),
        "active_run": _text(raw.get(b"active_run")),
        "tenant": _tenant(raw),
        "trace": jsonutil.loads(trace) if trace else None,
    }


def _run_record(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return {
        "run_id": raw[b"run_id"].decode(),
        "thread_id": raw[b"thread_id"].decode(),
        "assistant_id": raw[b"assistant_id"].decode(),
        "graph_id": raw[b"graph_id"].decode(),
        "created_at": int(raw[b"created_at"]),
        "updated_at": int(raw[b"updated_at"]),
        "status": raw[b"status"].decode(),
        "metadata": jsonutil.loads(raw[b"metadata"]),
        "multitask_strategy": raw[b"multitask_strategy"].decode(),
        "kwargs": jsonutil.loads(raw[b"payload"]),
        "tenant": _tenant(raw),
        **_webhook_delivery(raw),
    }


def _webhook_delivery(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """``{"webhook_delivery": {status, attempts, last_error}}`` once the run's webhook is
    due (``pending`` → ``retrying`` → ``delivered`` | ``failed``), else nothing."""
    status = raw.get(b"webhook_status")
    if status is None:
        return {}
    return {
        "webhook_delivery": {
            "status": status.decode(),
            "attempts": int(raw.get(b"webhook_attempts", b"0")),
            "last_error": _text(raw.get(b"webhook_error")),
        }
    }
