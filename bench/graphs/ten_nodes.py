"""The API benchmark's graph: ten trivial nodes in a line over a ~1 KB state.

``START -> n0 -> n1 -> … -> n9 -> END``; every node rotates the 1,000-character ``text``
(so every checkpoint really stores new state) and bumps ``n``. ``graph`` has plain
functions as nodes, as most user graphs do (LangGraph runs them in a thread pool under
``astream``); ``graph_async`` is the same graph with ``async def`` nodes, to measure what
that hand-off costs. Standalone on purpose: the official dev server loads this file in
its own virtualenv, without Interlock installed.
"""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

NODES = 10
TEXT_BYTES = 1000


class State(TypedDict):
    text: str
    n: int


def step(state: State) -> dict[str, Any]:
    """One node: a new ~1 KB text every step, and the counter the benchmark checks."""
    text = state["text"]
    return {"text": text[1:] + text[0], "n": state["n"] + 1}


async def astep(state: State) -> dict[str, Any]:
    return step(state)


def build_graph(*, async_nodes: bool = False) -> StateGraph[State]:
    """``START -> n0 -> … -> n9 -> END``."""
    graph = StateGraph(State)
    prev = START
    for i in range(NODES):
        graph.add_node(f"n{i}", astep if async_nodes else step)
        graph.add_edge(prev, f"n{i}")
        prev = f"n{i}"
    graph.add_edge(prev, END)
    return graph


# Compiled without a checkpointer: ``langgraph dev`` attaches its own and Interlock
# recompiles the builder with its Redis saver, so one object serves both servers.
graph = build_graph().compile()
graph_async = build_graph(async_nodes=True).compile()
