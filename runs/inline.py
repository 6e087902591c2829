"""Sync nodes that are quick run on the event loop, not in a thread pool.

Under ``astream`` LangGraph runs every plain-function node in the loop's thread pool, in
case it blocks. For the many nodes that are a few microseconds of dict work (routing,
formatting, bookkeeping) the hand-off costs more than the node: a thread wake-up, a
self-pipe write and two GIL hand-overs, about 0.2 ms of CPU per node on 2 cores. Such a
node gains nothing from the thread either, since pure Python holds the GIL wherever it
runs.

:class:`InlinePolicy` learns which nodes those are, per node and process: a node starts in
the pool; after ``PROMOTE_AFTER`` pooled runs in a row that each used under ``QUICK_S`` of
CPU without once waiting, it runs inline. "Waiting" is a voluntary context switch of the
node's thread (``getrusage(RUSAGE_THREAD)``): I/O, a sleep, a lock. Being preempted by
other processes is involuntary and does not count, so a busy machine neither keeps quick
nodes out nor sends them back. An inline run that waited for more than ``BLOCKED_S``, or
that computed for longer than ``SLOW_S``, sends the node back to the pool for good, with a
warning. So a node that blocks can hold up the loop once per process, by as long as that
one run took. ``INTERLOCK_INLINE_SYNC_NODES=off`` keeps LangGraph's behaviour.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import resource
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from langchain_core.runnables.config import run_in_executor
from langgraph._internal._runnable import RunnableCallable

log = logging.getLogger("interlock.inline")

T = TypeVar("T")

PROMOTE_AFTER = 8
"""Consecutive quick pooled runs before a node runs inline."""

QUICK_S = 0.001
"""A pooled run that used less CPU than this, and never waited, counts towards promotion."""

BLOCKED_S = 0.002
"""An inline run that waited (a voluntary context switch) and took this much more wall
time than CPU time goes back to the pool."""

SLOW_S = 0.020
"""An inline run that computed this long goes back to the pool: in a thread, the loop's
other runs get the GIL every few milliseconds (``sys.getswitchinterval``)."""


def _thread_usage() -> tuple[float, int]:
    """CPU seconds and voluntary context switches of the calling thread so far."""
    usage = resource.getrusage(_RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw


_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
"""Linux has per-thread usage; elsewhere the process's is a coarser stand-in."""


def runs_in_pool(runnable: Any) -> bool:
    """Whether LangGraph hands this node runnable to the thread pool under ``astream``
    (a sync function, given an executor-backed ``afunc`` by ``coerce_to_runnable``)."""
    afunc = getattr(runnable, "afunc", None)
    return (
        isinstance(runnable, RunnableCallable)
        and isinstance(afunc, functools.partial)
        and afunc.func is run_in_executor
    )


class InlinePolicy:
    """Where one sync node of one compiled graph runs: the pool, or inline once it has
    shown it is quick. Thread-safe (pooled runs report from their threads)."""

    __slots__ = ("_lock", "_quick", "graph_id", "inline", "name", "pinned")

    def __init__(self, graph_id: str, name: str) -> None:
        self.graph_id = graph_id
        self.name = name
        self.inline = False
        self.pinned = False
        """Sent back to the pool for good."""
        self._quick = 0
        self._lock = threading.Lock()

    async def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` (the node, bound to its input and config) where it belongs."""
        if self.inline:
            return self._inline(func)
        loop = asyncio.get_running_loop()
        # As langchain_core's run_in_executor: in a copy of this task's context, where the
        # node's config (get_config, get_stream_writer) lives.
        context = contextvars.copy_context()
        return await loop.run_in_executor(None, context.run, self._pooled, func)

    def _pooled(self, func: Callable[[], T]) -> T:
        cpu0, switches0 = _thread_usage()
        try:
            return func()
        finally:
            cpu1, switches1 = _thread_usage()
            self._record_pooled(cpu1 - cpu0, waited=switches1 > switches0)

    def _record_pooled(self, cpu_s: float, *, waited: bool) -> None:
        with self._lock:
            if self.pinned or self.inline:
                return
            self._quick = self._quick + 1 if cpu_s < QUICK_S and not waited else 0
            if self._quick >= PROMOTE_AFTER:
                self.inline = True
                log.debug("node %s of graph %s is quick: it runs on the event loop", self.name, self.graph_id)

    def _inline(self, func: Callable[[], T]) -> T:
        wall0 = time.perf_counter()
        cpu0, switches0 = _thread_usage()
        try:
            return func()
        finally:
            cpu1, switches1 = _thread_usage()
            wall = time.perf_counter() - wall0
            cpu = cpu1 - cpu0
            if (switches1 > switches0 and wall - cpu > BLOCKED_S) or cpu > SLOW_S:
                self._demote(wall, wall - cpu)

    def _demote(self, wall_s: float, waited_s: float) -> None:
        with self._lock:
            if self.pinned:
                return
            self.inline, self.pinned = False, True
        log.warning(
            "node %s of graph %s held the event loop for %.1f ms (%.1f ms of it waiting, not "
            "computing): it runs in the thread pool from now on",
            self.name,
            self.graph_id,
            wall_s * 1000,
            waited_s * 1000,
        )
