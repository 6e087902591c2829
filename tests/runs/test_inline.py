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
    """A sync node that notes the thread it ran on and what reached it; with ``block_next``
    set, its next call waits in ``time.sleep``; with ``sleep_s``, every call does."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.threads: list[int] = []
        self.block_next = False
        self.sleep_s = sleep_s
        self.seen: list[tuple[str, str]] = []

    def __call__(self, state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        if self.block_next or self.sleep_s:
            self.block_next = False
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


async def until_inline(graph: Any, node: Node, most: int = 200) -> int:
    """Run ``graph`` until ``node`` has run on the event loop's thread; how many runs that took.
    Promotion needs PROMOTE_AFTER quick pooled runs in a row, and on a loaded machine a pooled
    run is sometimes made to wait for the GIL (which counts as waiting), so not always the
    first PROMOTE_AFTER."""
    loop_thread = threading.get_ident()
    for runs in range(1, most + 1):
        await run(graph, 1)
        if node.threads[-1] == loop_thread:
            return runs
    raise AssertionError(f"never promoted in {most} runs")


async def test_a_quick_sync_node_moves_onto_the_event_loop() -> None:
    node = Node()
    graph = compiled(node)
    promoted_at = await until_inline(graph, node)
    customs = await run(graph, 4)
    loop_thread = threading.get_ident()
    assert promoted_at > inline.PROMOTE_AFTER  # the first PROMOTE_AFTER runs were pooled
    assert loop_thread not in node.threads[: inline.PROMOTE_AFTER]
    assert node.threads[-5:] == [loop_thread] * 5  # and it stays inline
    # Config, stream writer and runtime context reach the node both ways.
    assert [c["call"] for c in customs] == list(range(promoted_at + 1, promoted_at + 5))
    assert all(tag == "ctx" for _, tag in node.seen) and len({t for t, _ in node.seen}) == len(node.seen)


async def test_a_node_that_blocks_goes_back_to_the_pool_for_good(caplog: pytest.LogCaptureFixture) -> None:
    node = Node()
    graph = compiled(node)
    await until_inline(graph, node)
    node.block_next = True
    with caplog.at_level(logging.WARNING, logger="interlock.inline"):
        await run(graph, 1)  # inline, and it blocks the loop this once
        blocked_at = len(node.threads)
        await run(graph, 20)
    loop_thread = threading.get_ident()
    assert node.threads[blocked_at - 1] == loop_thread
    assert loop_thread not in node.threads[blocked_at:]
    assert "node work of graph g held the event loop" in caplog.text


async def test_a_slow_node_and_inline_off_never_leave_the_pool() -> None:
    slow = Node(sleep_s=inline.QUICK_S * 2)
    await run(compiled(slow), inline.PROMOTE_AFTER + 2)
    quick = Node()
    await run(compiled(quick, inline_nodes=False), inline.PROMOTE_AFTER + 2)
    loop_thread = threading.get_ident()
    assert loop_thread not in slow.threads and loop_thread not in quick.threads
