"""A graph that only waits for an outside event (``agents/events.py``), for tests of
triggers, early events and deadlines without the whole order workflow.
START -> wait -> END; input ``{"key": str, "deadline_s": float | None}``."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from agents.context import Context
from agents.events import wait_for_event

EVENT = "test.ping"


class State(TypedDict, total=False):
    key: str
    deadline_s: float | None
    got: dict[str, Any]


async def wait(state: State, config: RunnableConfig, *, runtime: Runtime[Context]) -> State:
    value = await wait_for_event(
        runtime.context.redis,
        runtime.context.key_prefix,
        config,
        event=EVENT,
        key=state["key"],
        deadline_s=state.get("deadline_s"),
    )
    return {"got": value}


def build() -> StateGraph[State, Context, State, State]:
    builder = StateGraph(State, context_schema=Context)
    node: Any = wait
    builder.add_node("wait", node)
    builder.add_edge(START, "wait")
    builder.add_edge("wait", END)
    return builder
