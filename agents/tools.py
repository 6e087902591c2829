"""Tool steps: deterministic work with side effects that happen once per task.

LangGraph re-runs a node that was interrupted by a crash from its start, so a side effect
must be keyed by something that is the same on the re-run: ``thread id + task id`` (task
ids are a hash of checkpoint id, namespace, step, node and triggers). :func:`effect_once`
records each effect in Redis under that key with ``SET NX``; a re-run finds the record and
returns it instead of acting again. Before acting it waits until the checkpoint the step
started from is stored (the worker's saver writes behind): only a stored checkpoint gives
the re-run the same task id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langgraph.config import get_config
from langgraph.runtime import Runtime
from opentelemetry import trace
from redis.exceptions import ResponseError

from agents.context import Context
from core import jsonutil
from core.errors import FENCE_CONFIG_KEY, FencedOut
from core.tracing import CONVERSATION_ID, SESSION_ID, SPAN_KIND

_tracer = trace.get_tracer("interlock.agents")


def tool_span_attributes(name: str, thread_id: str, task_id: str | None = None) -> dict[str, Any]:
    """Attributes of an ``execute_tool <name>`` span (GenAI conventions, OpenInference kind)."""
    attributes: dict[str, Any] = {
        SPAN_KIND: "TOOL",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        SESSION_ID: thread_id,
        CONVERSATION_ID: thread_id,
    }
    if task_id is not None:
        attributes["interlock.task_id"] = task_id
    return attributes


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

    A worker that lost its run (paused past its lease, then woken) must not act at all:
    the run's fence is checked before acting and, atomically, when recording; a stale
    owner gets :class:`~core.errors.FencedOut` and changes nothing.
    """
    info = runtime.execution_info
    if info is None:
        raise RuntimeError(f"tool step '{name}' must run inside a graph node with a checkpointer")
    ctx = runtime.context
    thread_id = info.thread_id or "-"
    key = effect_key(ctx.key_prefix, thread_id, info.task_id, name)
    with _tracer.start_as_current_span(
        f"execute_tool {name}", attributes=tool_span_attributes(name, thread_id, info.task_id)
    ) as span:
        fence = _fence()
        done = await _record(ctx, key, fence, None)
        if done is not None:
            span.set_attribute("interlock.effect.replayed", True)
            return dict(jsonutil.loads(done))
        if ctx.checkpoints_stored is not None:
            # The task id in the key comes from the checkpoint this step started from: it
            # must be stored before anything acts, or a crash now would redo the step under
            # a new checkpoint id, a new task id and a new key, and act twice.
            await ctx.checkpoints_stored(thread_id)
        result = dict(await act(key))
        # NX: if two executions raced, the first record wins and both return it.
        winner = await _record(ctx, key, fence, jsonutil.dumps(result))
        span.set_attribute("interlock.effect.replayed", False)
        return dict(jsonutil.loads(winner)) if winner is not None else result


# KEYS: record, fence ('' when the run has none); ARGV: value ('' = only read), token.
# Returns the existing record, or nil when there was none (and it was written, if given).
_RECORD = """
if KEYS[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return redis.error_reply('fenced')
end
local existing = redis.call('GET', KEYS[1])
if existing or ARGV[1] == '' then return existing end
redis.call('SET', KEYS[1], ARGV[1])
return false
"""


def _fence() -> tuple[str, str]:
    """The run's fence ``(key, token)`` from the node's config, or empty strings."""
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # not inside a graph run
        return "", ""
    fence = configurable.get(FENCE_CONFIG_KEY)
    return (str(fence[0]), str(fence[1])) if fence else ("", "")


async def _record(ctx: Context, key: str, fence: tuple[str, str], value: bytes | None) -> bytes | None:
    """Read the effect record (and write ``value`` if there is none) while the fence holds."""
    try:
        found: Any = await ctx.redis.eval(_RECORD, 2, key, fence[0], value or b"", fence[1])
    except ResponseError as e:
        if "fenced" in str(e):
            raise FencedOut(f"effect {key}: this worker no longer owns the run") from None
        raise
    return found if found else None
