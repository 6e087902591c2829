"""A one-step graph whose input says how it ends, for the webhook tests:
START -> step -> END. ``fail`` raises, ``pause`` interrupts for an answer, ``sleep``
makes the step slow (to cancel it midway)."""

from __future__ import annotations

import asyncio

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    n: int
    fail: bool
    pause: bool
    sleep: float
    answer: str


async def step(state: State) -> State:
    if state.get("sleep"):
        await asyncio.sleep(state["sleep"])
    if state.get("fail"):
        raise RuntimeError("the step failed on purpose")
    if state.get("pause"):
        return {"answer": interrupt({"question": "go on?"}), "n": state.get("n", 0) + 1}
    return {"n": state.get("n", 0) + 1}


def build() -> StateGraph[State, None, State, State]:
    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    return builder


graph = build()
