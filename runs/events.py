"""Delivering outside events to the runs that wait for them (``agents/events.py``).

:class:`RedisEventBus` is the ``Context.events`` of every process: the trigger route
(``POST /triggers/{name}``) uses it for events from outside, and the ``reconcile_payments``
graph for the "deadline passed" events it makes. A delivery to a pending waiter creates
the resuming run and marks the waiter answered in one Lua call (``CREATE_RUN``, the way an
approval is answered), so two deliveries racing for one waiter resume it once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aredis
from opentelemetry import propagate

from agents.events import (
    EARLY_EVENT_TTL_S,
    KEEP_EARLY,
    box_key,
    due_key,
    due_member,
    log_key,
    wait_key,
)
from core import jsonutil
from core.errors import Conflict, NotFound
from core.ids import new_id, now_ms
from runs.payload import ResumeCommand, RunPayload
from store.approvals import Answering
from store.runs import RunStore

log = logging.getLogger("interlock.events")


class RedisEventBus:
    """Resumes waiting runs through the run store (implements ``agents.context.EventBus``)."""

    def __init__(self, store: RunStore, redis: aredis.Redis, prefix: str) -> None:
        self.store = store
        self.redis = redis
        self.prefix = prefix

    async def deliver(
        self,
        tenant: str,
        event: str,
        key: str,
        value: Mapping[str, Any],
        *,
        actor: str,
        keep_early: bool = True,
    ) -> dict[str, Any]:
        waiter = wait_key(self.prefix, tenant, event, key)
        for _ in range(3):
            raw: dict[bytes, bytes] = await cast(Any, self.redis.hgetall(waiter))
            status = raw.get(b"status")
            thread_id = raw[b"thread_id"].decode() if b"thread_id" in raw else None
            if status == b"pending" and thread_id is not None:
                return await self._resume(tenant, event, key, waiter, raw, thread_id, value, actor)
            if status in (b"decided", b"done"):
                return {"outcome": "already_resolved", "thread_id": thread_id}
            if not keep_early:
                return {"outcome": "no_waiter"}
            box = box_key(self.prefix, tenant, event, key)
            kept = await cast(
                Any,
                self.redis.eval(KEEP_EARLY, 2, waiter, box, jsonutil.dumps(dict(value)), EARLY_EVENT_TTL_S),
            )
            if kept == b"stored":
                return {"outcome": "stored"}
            # 'retry': a run registered its wait meanwhile; deliver to it.
        raise Conflict(f"event {event} {key}: the waiter kept changing; try again")

    async def _resume(
        self,
        tenant: str,
        event: str,
        key: str,
        waiter: str,
        raw: dict[bytes, bytes],
        thread_id: str,
        value: Mapping[str, Any],
        actor: str,
    ) -> dict[str, Any]:
        doc = jsonutil.loads(raw.get(b"doc", b"{}"))
        graph_id = raw.get(b"graph_id", b"").decode()
        assistant_id = raw.get(b"assistant_id", b"").decode() or graph_id
        interrupt_id = raw[b"interrupt_id"].decode()
        run_id = new_id()
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the delivering request's trace continues in the run
        metadata = {"event": event, "event_id": value.get("event_id"), "delivered_by": actor}
        payload = RunPayload(
            graph_id=graph_id,
            assistant_id=assistant_id,
            command=ResumeCommand(resume={interrupt_id: dict(value)}),
            config={"configurable": doc.get("configurable") or {}},
            metadata=metadata,
            trace_context=carrier,
            tenant=tenant,
        )
        member = due_member(event, key)
        audit = {
            "type": "delivered",
            "event": event,
            "key": key,
            "event_id": value.get("event_id"),
            "actor": actor,
            "thread_id": thread_id,
            "run_id": run_id,
            "at": now_ms(),
        }
        try:
            await self.store.create_run(
                run_id=run_id,
                thread_id=thread_id,
                graph_id=graph_id,
                assistant_id=assistant_id,
                metadata=metadata,
                payload=payload.model_dump(mode="json", exclude_defaults=True),
                strategy="enqueue",
                if_not_exists="reject",
                is_resume=True,
                tenant=tenant,
                answering=[Answering(key=waiter, approval_id=member, decision=dict(value), audit=audit)],
                audit_key=log_key(self.prefix, tenant),
                due_key=due_key(self.prefix, tenant),
            )
        except Conflict as e:
            if "already been decided" in e.message:
                return {"outcome": "already_resolved", "thread_id": thread_id}
            # Nothing to resume: the run that waited was cancelled or failed meanwhile.
            await self._forget(waiter, tenant, member)
            log.warning("event %s %s: thread %s no longer waits (%s)", event, key, thread_id, e.message)
            return {"outcome": "no_waiter", "thread_id": thread_id}
        except NotFound:
            await self._forget(waiter, tenant, member)
            return {"outcome": "no_waiter", "thread_id": thread_id}
        log.info("event %s %s resumes thread %s (run %s, by %s)", event, key, thread_id, run_id, actor)
        return {"outcome": "resumed", "thread_id": thread_id, "run_id": run_id}

    async def _forget(self, waiter: str, tenant: str, member: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(waiter, waiter + ":audit")
        pipe.zrem(due_key(self.prefix, tenant), member)
        await pipe.execute()
