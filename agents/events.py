"""Waiting for an outside event: a run pauses until an event with a given correlation key
arrives (a payment's settlement, say), or until its deadline has passed.

A step calls :func:`wait_for_event`. Before it pauses (``interrupt()``), it registers a
**waiter** under ``(tenant, event, key)``: one key, so whoever receives the event finds
the waiting thread in O(1), without scanning threads. The event is delivered by
``runs/events.py`` (``Context.events``), which marks the waiter answered *in the same Lua
call* that creates the resuming run (the approvals' mechanism): a waiter is answered
exactly once, however many deliveries race (the event sent twice, the deadline sweep at
the same moment).

An event may come before anyone waits for it (a payment system that settles faster than
the run gets to its wait step). It is then kept for a while under the same coordinates;
registering and keeping each check the other atomically, so the event is never lost
between the two: either the waiter is there when the event comes, or the event is there
when the waiter comes.

| key                                   | type   | holds                                        |
| ------------------------------------- | ------ | -------------------------------------------- |
| ``P wait:<tenant>:<event>:<key>``     | hash   | ``status`` (pending, decided, done),         |
|                                       |        | thread, assistant, graph, interrupt id,      |
|                                       |        | ``deadline_at``, ``doc`` (JSON)              |
| ``P wait:…:audit``                    | list   | deliveries (written by the resuming Lua)     |
| ``P waits:due:<tenant>``              | zset   | ``<event>:<key>`` of pending waiters by      |
|                                       |        | deadline (ms): the reconcile sweep's index   |
| ``P waits:log:<tenant>``              | stream | every delivery, in order                     |
| ``P evbox:<tenant>:<event>:<key>``    | string | an event that came before its waiter (TTL)   |
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aredis
from langchain_core.runnables import RunnableConfig
from langgraph.types import _interrupt_id, interrupt

from core import jsonutil

EVENT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

DEADLINE_EVENT = "deadline.passed"
"""The value's ``event`` when a waiter is resumed because its deadline passed."""

EARLY_EVENT_TTL_S = 7 * 24 * 3600
"""How long an event that came before its waiter is kept."""

DONE_TTL_S = 24 * 3600
"""How long an answered waiter is remembered (a late duplicate is then ``already_resolved``)."""


def wait_key(prefix: str, tenant: str, event: str, key: str) -> str:
    return f"{prefix}wait:{tenant}:{event}:{key}"


def box_key(prefix: str, tenant: str, event: str, key: str) -> str:
    return f"{prefix}evbox:{tenant}:{event}:{key}"


def due_key(prefix: str, tenant: str) -> str:
    return f"{prefix}waits:due:{tenant}"


def log_key(prefix: str, tenant: str) -> str:
    return f"{prefix}waits:log:{tenant}"


def due_member(event: str, key: str) -> str:
    return f"{event}:{key}"


# KEYS: waiter, box, due. ARGV: interrupt id, thread id, assistant id, graph id,
# deadline_at ('' none), doc json, due member.
# Returns {'event', <json>} when the event came first; {'waiting'} when this very wait is
# registered already (a re-execution: after a take-over, or when the answer is on its
# way); {'registered'} otherwise.
_REGISTER = """
local early = redis.call('GET', KEYS[2])
if early then return {'event', early} end
if redis.call('HGET', KEYS[1], 'thread_id') == ARGV[2]
    and redis.call('HGET', KEYS[1], 'interrupt_id') == ARGV[1] then
  return {'waiting'}
end
redis.call('DEL', KEYS[1], KEYS[1] .. ':audit')
redis.call('HSET', KEYS[1], 'status', 'pending', 'interrupt_id', ARGV[1], 'thread_id', ARGV[2],
  'assistant_id', ARGV[3], 'graph_id', ARGV[4], 'deadline_at', ARGV[5], 'doc', ARGV[6])
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[7]) end
return {'registered'}
"""

# KEYS: waiter, due. ARGV: thread id, due member, ttl. The waiter got its answer: done.
_DONE = """
if redis.call('HGET', KEYS[1], 'thread_id') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', 'done')
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[1] .. ':audit', ARGV[3])
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

# KEYS: waiter, box. ARGV: event json, ttl. Keep an event nobody waits for yet — unless
# a waiter registered meanwhile ('retry': deliver it to that one instead).
KEEP_EARLY = """
if redis.call('HGET', KEYS[1], 'status') == 'pending' then return 'retry' end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 'stored'
"""


def _run_identity(config: RunnableConfig) -> tuple[str, str, str, str, str]:
    """``(tenant, thread, assistant, graph, checkpoint namespace)`` of the running node."""
    conf = config.get("configurable") or {}
    meta = config.get("metadata") or {}
    return (
        str(meta.get("tenant") or "default"),
        str(conf["thread_id"]),
        str(meta.get("assistant_id") or meta.get("graph_id") or ""),
        str(meta.get("graph_id") or ""),
        str(conf.get("checkpoint_ns") or ""),
    )


async def wait_for_event(
    redis: aredis.Redis,
    prefix: str,
    config: RunnableConfig,
    *,
    event: str,
    key: str,
    deadline_s: float | None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Pause the run until ``event`` with correlation ``key`` is delivered (or its
    deadline passes, then the value's ``event`` is :data:`DEADLINE_EVENT`); return the
    delivered value ``{"event", "key", "event_id", "data", …}``.

    Must be the first ``interrupt()`` of its node (its interrupt id is computed here, so
    deliveries can answer exactly this interrupt). A value for another event or key
    (someone resumed the thread by hand with something else) is refused and the step
    waits again.
    """
    if not EVENT_NAME.match(event):
        raise ValueError(f"event name {event!r} must match {EVENT_NAME.pattern}")
    tenant, thread_id, assistant_id, graph_id, ns = _run_identity(config)
    waiter, box, due = (
        wait_key(prefix, tenant, event, key),
        box_key(prefix, tenant, event, key),
        due_key(prefix, tenant),
    )
    member = due_member(event, key)
    deadline_at = int(time.time() * 1000 + deadline_s * 1000) if deadline_s is not None else None
    # The interrupt value: what the run waits for, until when.
    request: dict[str, Any] = {
        "type": "event",
        "event": event,
        "key": key,
        "deadline_at": deadline_at,
        "deadline_s": deadline_s,
        "details": dict(details or {}),
    }
    answered = 0
    while True:
        interrupt_id = _interrupt_id(ns, answered)
        found = await cast(
            Any,
            redis.eval(
                _REGISTER,
                3,
                waiter,
                box,
                due,
                interrupt_id,
                thread_id,
                assistant_id,
                graph_id,
                "" if deadline_at is None else str(deadline_at),
                jsonutil.dumps({"request": request, "configurable": _user_configurable(config)}),
                member,
            ),
        )
        if found[0] == b"event":
            value: Any = jsonutil.loads(found[1])
        else:
            value = interrupt(request)
            answered += 1
        if (
            isinstance(value, dict)
            and value.get("event") in (event, DEADLINE_EVENT)
            and (value.get("event") == DEADLINE_EVENT or str(value.get("key")) == key)
        ):
            await cast(Any, redis.eval(_DONE, 2, waiter, due, thread_id, member, DONE_TTL_S))
            return dict(value)
        request = {**request, "error": f"value not accepted: expected event {event!r} with key {key!r}"}


def _user_configurable(config: RunnableConfig) -> dict[str, Any]:
    """The run's own ``configurable`` (assistant settings), without LangGraph's internals:
    the resuming run gets it back."""
    conf = config.get("configurable") or {}
    internal = {"thread_id", "checkpoint_ns", "checkpoint_id", "checkpoint_map", "run_id"}
    return {
        k: v
        for k, v in conf.items()
        if not k.startswith("__") and k not in internal and isinstance(v, str | int | float | bool)
    }


async def overdue(
    redis: aredis.Redis, prefix: str, tenant: str, *, event: str | None = None, limit: int = 100
) -> list[tuple[str, str, int]]:
    """``(event, key, deadline_at)`` of the tenant's waiters whose deadline has passed,
    earliest first (optionally only those waiting for ``event``)."""
    now = int(time.time() * 1000)
    raw: list[tuple[bytes, float]] = await cast(
        Any,
        redis.zrangebyscore(due_key(prefix, tenant), "-inf", now, start=0, num=limit, withscores=True),
    )
    found = []
    for member, score in raw:
        name, _, key = member.decode().partition(":")
        if event is None or name == event:
            found.append((name, key, int(score)))
    return found
