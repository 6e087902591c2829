"""The composition root for graphs: compile each registered graph once, with our
checkpointer, and (when tracing or metrics are configured) with a span and a duration
measurement around every node execution; with neither, nodes run unwrapped.

Wrapping happens here, on a copy of the builder, so graph modules stay plain LangGraph
and user graphs get the same spans as ours.
"""

from __future__ import annotations

import copy
import dataclasses
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
from opentelemetry.trace import Status, StatusCode

from core import metrics
from core.tracing import CONVERSATION_ID, SESSION_ID, SPAN_KIND
from graphs.registry import GraphEntry, GraphRegistry
from runs import segment

_tracer = trace.get_tracer("interlock.runs")

CompiledGraph = CompiledStateGraph[Any, Any, Any, Any]


def _node_attributes(name: str, config: RunnableConfig) -> dict[str, Any]:
    meta = config.get("metadata") or {}
    conf = config.get("configurable") or {}
    thread_id = str(conf.get("thread_id", ""))
    attributes = {
        SPAN_KIND: "CHAIN",
        "interlock.node": name,
        "interlock.step": int(meta.get("langgraph_step", -1)),
        "interlock.task_id": str(conf.get("__pregel_task_id", "")),
        SESSION_ID: thread_id,
        CONVERSATION_ID: thread_id,
    }
    namespace = segment.parent_namespace(str(meta.get("langgraph_checkpoint_ns", "")))
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

    __slots__ = ("config", "name", "segment", "span", "started")

    def __init__(self, name: str, config: RunnableConfig, spans: bool) -> None:
        self.name = name
        self.config = config
        self.span: trace.Span | None = None
        self.segment = segment.current.get()
        if spans:
            attributes = _node_attributes(name, config)
            self.span = _tracer.start_span(f"node {name}", attributes=attributes)
            if self.segment is not None:
                self.segment.node_started(
                    name, attributes["interlock.step"], attributes.get("interlock.checkpoint_ns", "")
                )
        self.started = time.perf_counter()

    def done(self, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - self.started
        outcome = _outcome(exc)
        instruments = metrics.instruments()
        if instruments is not None:
            graph_id = str((self.config.get("metadata") or {}).get("graph_id", ""))
            instruments.node_duration.record(
                elapsed, {"graph_id": graph_id, "node": self.name, "status": outcome}
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
            ns = str((self.config.get("metadata") or {}).get("langgraph_checkpoint_ns", ""))
            step = int((self.config.get("metadata") or {}).get("langgraph_step", -1))
            self.segment.node_ended(span, segment.parent_namespace(ns), step, end_ns)
        else:
            span.end(end_ns)


def _traced(name: str, inner: Any, *, spans: bool) -> RunnableCallable:
    """``inner`` (a node's runnable), timed for metrics and, with ``spans``, inside a
    ``node <name>`` span."""

    async def afunc(state: Any, config: RunnableConfig) -> Any:
        probe = _Probe(name, config, spans)
        try:
            if probe.span is None:
                result = await inner.ainvoke(state, config)
            else:
                with trace.use_span(probe.span, record_exception=False, set_status_on_exception=False):
                    result = await inner.ainvoke(state, config)
        except BaseException as exc:
            probe.done(exc)
            raise
        probe.done(None)
        return result

    def func(state: Any, config: RunnableConfig) -> Any:
        probe = _Probe(name, config, spans)
        try:
            if probe.span is None:
                result = inner.invoke(state, config)
            else:
                with trace.use_span(probe.span, record_exception=False, set_status_on_exception=False):
                    result = inner.invoke(state, config)
        except BaseException as exc:
            probe.done(exc)
            raise
        probe.done(None)
        return result

    return RunnableCallable(func, afunc, name=name, trace=False)


def instrument(
    builder: StateGraph[Any, Any, Any, Any], *, spans: bool = True
) -> StateGraph[Any, Any, Any, Any]:
    """A copy of ``builder`` whose nodes are measured and, with ``spans``, run inside
    spans (the original is untouched)."""
    traced = copy.copy(builder)
    traced.nodes = {
        name: dataclasses.replace(spec, runnable=_traced(name, spec.runnable, spans=spans))
        for name, spec in builder.nodes.items()
    }
    return traced


def tracing_on() -> bool:
    """Whether spans are recorded (an SDK tracer provider is installed): without one, a
    node wrapper would cost a runnable layer per node and record nothing."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def compile_entry(entry: GraphEntry, checkpointer: BaseCheckpointSaver[Any]) -> CompiledGraph:
    spans = tracing_on()
    measured = spans or metrics.instruments() is not None
    builder = instrument(entry.builder, spans=spans) if measured else entry.builder
    return builder.compile(checkpointer=checkpointer, name=entry.graph_id, **dict(entry.compile_kwargs))


def compile_all(
    registry: GraphRegistry, checkpointer: BaseCheckpointSaver[Any]
) -> Mapping[str, CompiledGraph]:
    return {gid: compile_entry(registry.get(gid), checkpointer) for gid in registry.ids()}
