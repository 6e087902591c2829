"""The composition root for graphs: compile each registered graph once, with our
checkpointer, and (when tracing or metrics are configured) with a span and a duration
measurement around every node execution; with neither, nodes run unwrapped.

Wrapping happens here, on a copy of the builder, so graph modules stay plain LangGraph
and user graphs get the same spans as ours.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._runnable import RunnableCallable
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphBubbleUp, GraphInterrupt
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, Status, StatusCode

from core import metrics
from core.spans import HotTracer, activate, deactivate
from core.tracing import CONVERSATION_ID, SESSION_ID, SPAN_KIND
from graphs.registry import GraphEntry, GraphRegistry
from runs import segment
from runs.inline import InlinePolicy, runs_in_pool

_tracer = HotTracer("interlock.runs")

CompiledGraph = CompiledStateGraph[Any, Any, Any, Any]


def _node_attributes(name: str, step: int, namespace: str, config: RunnableConfig) -> dict[str, Any]:
    conf = config.get("configurable") or {}
    thread_id = str(conf.get("thread_id", ""))
    attributes = {
        SPAN_KIND: "CHAIN",
        "interlock.node": name,
        "interlock.step": step,
        "interlock.task_id": str(conf.get("__pregel_task_id", "")),
        SESSION_ID: thread_id,
        CONVERSATION_ID: thread_id,
    }
    if namespace:  # inside a subgraph: which one (the root graph's is "")
        attributes["interlock.checkpoint_ns"] = namespace
    return attributes


def _interrupts(exc: GraphInterrupt) -> list[tuple[str, Any]]:
    found = exc.args[0] if exc.args and isinstance(exc.args[0], list | tuple) else ()
    return [(str(getattr(i, "id", "")), getattr(i, "value", None)) for i in found]


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, GraphInterrupt):
        return "interrupt"
    return "bubble_up" if isinstance(exc, GraphBubbleUp) else "error"


class _Probe:
    """Measures (and, with ``spans``, traces) one node execution."""

    __slots__ = ("graph_id", "name", "namespace", "segment", "span", "started", "step")

    def __init__(self, name: str, config: RunnableConfig, spans: bool, span_name: str) -> None:
        meta = config.get("metadata") or {}
        self.name = name
        self.graph_id = str(meta.get("graph_id", ""))
        self.step = int(meta.get("langgraph_step", -1))
        self.namespace = segment.parent_namespace(str(meta.get("langgraph_checkpoint_ns", "")))
        self.span: Span | None = None
        self.segment = segment.current.get()
        if spans:
            self.span = _tracer.start_child(
                span_name, _node_attributes(name, self.step, self.namespace, config)
            )
            if self.segment is not None:
                self.segment.node_started(name, self.step, self.namespace)
        self.started = time.perf_counter()

    def done(self, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - self.started
        instruments = metrics.instruments()
        if instruments is not None:
            instruments.node_duration.record(
                elapsed, {"graph_id": self.graph_id, "node": self.name, "status": _outcome(exc)}
            )
        span = self.span
        if span is None:
            return
        end_ns = time.time_ns()
        if isinstance(exc, GraphInterrupt):
            for interrupt_id, value in _interrupts(exc) or [("", None)]:
                attributes = {"interlock.node": self.name, "interlock.interrupt.id": interrupt_id}
                if isinstance(value, dict) and isinstance(value.get("type"), str):
                    attributes["interlock.interrupt.type"] = value["type"]
                span.add_event("interrupt", attributes)
        elif exc is not None and not isinstance(exc, GraphBubbleUp):
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if exc is None and self.segment is not None:
            # Ended when the checkpoint holding its writes is stored (which names it).
            self.segment.node_ended(span, self.namespace, self.step, end_ns)
        else:
            span.end(end_ns)


class _Probeless:
    """Stand-in for a probe when a node is wrapped only to choose where it runs."""

    __slots__ = ("span",)

    def __init__(self) -> None:
        self.span: Span | None = None

    def done(self, exc: BaseException | None) -> None:
        pass


def _traced(
    name: str, inner: Any, *, spans: bool, measured: bool, where: InlinePolicy | None
) -> RunnableCallable:
    """``inner`` (a node's runnable): with ``measured``, timed for metrics and, with
    ``spans``, inside a ``node <name>`` span; with ``where``, a sync node run inline or in
    the thread pool as that policy decides (``runs/inline.py``)."""
    span_name = f"node {name}"

    async def afunc(state: Any, config: RunnableConfig) -> Any:
        probe: _Probe | _Probeless = _Probe(name, config, spans, span_name) if measured else _Probeless()
        try:
            call = (
                where.call(functools.partial(inner.invoke, state, config))
                if where is not None
                else inner.ainvoke(state, config)
            )
            if probe.span is None:
                result = await call
            else:
                token = activate(probe.span)
                try:
                    result = await call
                finally:
                    deactivate(token)
        except BaseException as exc:
            probe.done(exc)
            raise
        probe.done(None)
        return result

    def func(state: Any, config: RunnableConfig) -> Any:
        probe: _Probe | _Probeless = _Probe(name, config, spans, span_name) if measured else _Probeless()
        try:
            if probe.span is None:
                result = inner.invoke(state, config)
            else:
                token = activate(probe.span)
                try:
                    result = inner.invoke(state, config)
                finally:
                    deactivate(token)
        except BaseException as exc:
            probe.done(exc)
            raise
        probe.done(None)
        return result

    return RunnableCallable(func, afunc, name=name, trace=False)


def instrument(
    builder: StateGraph[Any, Any, Any, Any],
    *,
    spans: bool = True,
    measured: bool = True,
    inline: bool = False,
    graph_id: str = "",
) -> StateGraph[Any, Any, Any, Any]:
    """A copy of ``builder`` whose nodes are measured and, with ``spans``, run inside
    spans; with ``inline``, its sync nodes run on the event loop once they prove quick
    (``runs/inline.py``). The original is untouched; nodes that need none of it stay as
    they are."""
    nodes = {}
    for name, spec in builder.nodes.items():
        where = InlinePolicy(graph_id, name) if inline and runs_in_pool(spec.runnable) else None
        if measured or spans or where is not None:
            runnable = _traced(name, spec.runnable, spans=spans, measured=measured or spans, where=where)
            spec = dataclasses.replace(spec, runnable=runnable)
        nodes[name] = spec
    traced = copy.copy(builder)
    traced.nodes = nodes
    return traced


def tracing_on() -> bool:
    """Whether spans are recorded (an SDK tracer provider is installed): without one, a
    node wrapper would cost a runnable layer per node and record nothing."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def compile_entry(
    entry: GraphEntry, checkpointer: BaseCheckpointSaver[Any], *, inline_sync_nodes: bool = True
) -> CompiledGraph:
    spans = tracing_on()
    measured = spans or metrics.instruments() is not None
    builder = entry.builder
    if measured or inline_sync_nodes:
        builder = instrument(
            builder, spans=spans, measured=measured, inline=inline_sync_nodes, graph_id=entry.graph_id
        )
    return builder.compile(checkpointer=checkpointer, name=entry.graph_id, **dict(entry.compile_kwargs))


def compile_all(
    registry: GraphRegistry, checkpointer: BaseCheckpointSaver[Any], *, inline_sync_nodes: bool = True
) -> Mapping[str, CompiledGraph]:
    return {
        gid: compile_entry(registry.get(gid), checkpointer, inline_sync_nodes=inline_sync_nodes)
        for gid in registry.ids()
    }
