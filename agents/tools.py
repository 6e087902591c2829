"""Tool steps: deterministic work with side effects that happen once per task.

LangGraph re-runs a node that was interrupted by a crash from its start, so a side effect
must be keyed by something that is the same on the re-run: ``thread id + task id`` (task
ids are a hash of checkpoint id, namespace, step, node and triggers). :func:`effect_once`
records each effect in Redis under that key with ``SET NX``; a re-run finds the record and
returns it instead of acting again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langgraph.runtime import Runtime
from opentelemetry import trace

from agents.context import Context
from core import jsonutil
from core.tracing import CONVERSATION_ID, SESSION_ID, SPAN_KIND

_tracer = trace.get_tracer("interlock.agents")


def effect_key(prefix: str, thread_id: str, task_id: str, name: str) -> str:
    """Ledger key of one side effect; carries the thread's hash tag."""
    return f"{prefix}fx:{{{thread_id}}}:{task_id}:{name}"


async def effect_once(
    runtime: Runtime[Context],
    name: str,
    act: Callable[[str], Awaitable[Mapping[str, Any]]],
) -> dict[str, Any]:
    """Run ``act(idempotency_key)`` once per (thread, task, name); return its result.

    The result is recorded before it is returned, so a crash after the record but before
    the checkpoint re-runs the node, finds the record and does not act again. A crash
    *between* acting and recording is closed by ``act`` itself: it must pass the key on
    to the system it changes, which then applies the change at most once per key.
    """
    info = runtime.execution_info
    if info is None:
        raise RuntimeError(f"tool step '{name}' must run inside a graph node with a checkpointer")
    ctx = runtime.context
    thread_id = info.thread_id or "-"
    key = effect_key(ctx.key_prefix, thread_id, info.task_id, name)
    with _tracer.start_as_current_span(
        f"execute_tool {name}",
        attributes={
            SPAN_KIND: "TOOL",
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "interlock.task_id": info.task_id,
            SESSION_ID: thread_id,
            CONVERSATION_ID: thread_id,
        },
    ) as span:
        if (done := await ctx.redis.get(key)) is not None:
            span.set_attribute("interlock.effect.replayed", True)
            return dict(jsonutil.loads(done))
        result = dict(await act(key))
        # NX: if two executions raced, the first record wins and both return it.
        if not await ctx.redis.set(key, jsonutil.dumps(result), nx=True):
            winner: Any = await ctx.redis.get(key)
            result = dict(jsonutil.loads(winner))
        span.set_attribute("interlock.effect.replayed", False)
        return result
