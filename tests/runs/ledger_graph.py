"""A slow five-step graph whose every step applies a side effect once per task, counted
in a Redis ledger per (thread, step): the chaos tests read the ledger to find steps
applied twice. START -> s0 -> s1 -> s2 -> s3 -> s4 -> END."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from agents.context import Context
from agents.tools import effect_once

STEPS = 5
STEP_SECONDS = float(os.environ.get("LEDGER_STEP_SECONDS", "0.3"))


_APPLY = """
if redis.call('SET', KEYS[1], 1, 'NX') then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
return 1
"""


class State(TypedDict, total=False):
    n: int
    done: list[str]


def _step(name: str) -> Any:
    async def step(state: State, runtime: Runtime[Context]) -> State:
        await asyncio.sleep(STEP_SECONDS)
        ctx = runtime.context
        thread = runtime.execution_info.thread_id if runtime.execution_info else "-"

        async def apply(key: str) -> dict[str, Any]:
            # The "outside system": applies each idempotency key at most once, atomically
            # (a Redis killed mid-way must not leave the key marked but the step uncounted),
            # and counts applications per step, so a step re-run under a new task id
            # shows up as 2.
            await ctx.redis.eval(_APPLY, 2, f"{key}:applied", f"{ctx.key_prefix}ledger:{{{thread}}}", name)
            return {"step": name}

        await effect_once(runtime, name, apply)
        return {"n": state.get("n", 0) + 1, "done": [*state.get("done", []), name]}

    return step


def build() -> StateGraph[State, Context, State, State]:
    builder = StateGraph(State, context_schema=Context)
    previous = START
    for i in range(STEPS):
        builder.add_node(f"s{i}", _step(f"s{i}"))
        builder.add_edge(previous, f"s{i}")
        previous = f"s{i}"
    builder.add_edge(previous, END)
    return builder


graph = build()
