"""Quick sync nodes move from LangGraph's thread pool onto the event loop; a node that
blocks goes back for good (``runs/inline.py``)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from runs import inline
from runs.compile import instrument


class State(TypedDict):
    n: int


@dataclass
class Ctx:
    tag: str


class Node:
    """A sync node that notes the thread it ran on and what reached it; ``block_on`` makes
    its calls with those numbers wait in ``time.sleep``."""

    def __init__(self, block_on: set[int] | None = None, sleep_s: float = 0.0) -> None:
        self.threads: list[int] = []
        self.block_on = block_on or set()
        self.sleep_s = sleep_s
        self.seen: list[tuple[str, str]] = []

    def __call__(self, state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        if len(self.threads) in self.block_on or self.sleep_s:
            time.sleep(self.sleep_s or 0.01)
        get_stream_writer()({"call": len(self.threads)})
        self.seen.append((get_config()["configurable"]["thread_id"], runtime.context.tag))
        return {"n": state["n"] + 1}


def compiled(node: Node, *, inline_nodes: bool = True) -> Any:
    builder = StateGraph(State, context_schema=Ctx)
    builder.add_node("work", node)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    traced = instrument(builder, spans=False, measured=False, inline=inline_nodes, graph_id="g")
    return traced.compile(checkpointer=InMemorySaver())


async def run(graph: Any, times: int) -> list[Any]:
    customs = []
    for _ in range(times):
        thread_id = str(uuid.uuid4())
        async for mode, chunk in graph.astream(
            {"n": 0},
            {"configurable": {"thread_id": thread_id}},
            context=Ctx(tag="ctx"),
            stream_mode=["custom", "values"],
        ):
            if mode == "custom":
                customs.append(chunk)
    return customs


async def test_a_quick_sync_node_moves_onto_the_event_loop() -> None:
    node = Node()
    graph = compiled(node)
    customs = await run(graph, inline.PROMOTE_AFTER + 4)
    loop_thread = threading.get_ident()
    pooled, inlined = node.threads[: inline.PROMOTE_AFTER], node.threads[inline.PROMOTE_AFTER :]
    assert loop_thread not in pooled
    assert inlined == [loop_thread] * 4
    # Config, stream writer and runtime context reach the node both ways.
    assert [c["call"] for c in customs] == list(range(1, inline.PROMOTE_AFTER + 5))
    assert all(tag == "ctx" for _, tag in node.seen) and len({t for t, _ in node.seen}) == len(node.seen)


async def test_a_node_that_blocks_goes_back_to_the_pool_for_good(caplog: pytest.LogCaptureFixture) -> None:
    first_inline = inline.PROMOTE_AFTER + 1
    node = Node(block_on={first_inline})
    graph = compiled(node)
    with caplog.at_level(logging.WARNING, logger="interlock.inline"):
        await run(graph, first_inline + 3)
    loop_thread = threading.get_ident()
    assert node.threads[first_inline - 1] == loop_thread  # it blocked the loop this once
    assert loop_thread not in node.threads[first_inline:]
    assert "node work of graph g held the event loop" in caplog.text


async def test_a_slow_node_and_inline_off_never_leave_the_pool() -> None:
    slow = Node(sleep_s=inline.QUICK_S * 2)
    await run(compiled(slow), inline.PROMOTE_AFTER + 2)
    quick = Node()
    await run(compiled(quick, inline_nodes=False), inline.PROMOTE_AFTER + 2)
    loop_thread = threading.get_ident()
    assert loop_thread not in slow.threads and loop_thread not in quick.threads
