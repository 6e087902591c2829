"""The composition root for graphs: compile each registered graph once, with our
checkpointer, and (when tracing is configured) with a span around every node execution.

Wrapping happens here, on a copy of the builder, so graph modules stay plain LangGraph
and user graphs get the same spans as ours.
"""

from __future__ import annotations

import copy
import dataclasses
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

from core.tracing import CONVERSATION_ID, SESSION_ID, SPAN_KIND
from graphs.registry import GraphEntry, GraphRegistry

_tracer = trace.get_tracer("interlock.runs")

CompiledGraph = CompiledStateGraph[Any, Any, Any, Any]


def _node_attributes(name: str, config: RunnableConfig) -> dict[str, Any]:
    meta = config.get("metadata") or {}
    conf = config.get("configurable") or {}
    thread_id = str(conf.get("thread_id", ""))
    return {
        SPAN_KIND: "CHAIN",
        "interlock.node": name,
        "interlock.step": int(meta.get("langgraph_step", -1)),
        "interlock.task_id": str(conf.get("__pregel_task_id", "")),
        "interlock.checkpoint_ns": str(meta.get("langgraph_checkpoint_ns", "")),
        SESSION_ID: thread_id,
        CONVERSATION_ID: thread_id,
    }


def _traced(name: str, inner: Any) -> RunnableCallable:
    """``inner`` (a node's runnable) inside a ``node <name>`` span."""

    def record(span: trace.Span, exc: BaseException) -> None:
        if isinstance(exc, GraphInterrupt):
            span.add_event("interrupt", {"interlock.node": name})
        elif not isinstance(exc, GraphBubbleUp):
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))

    async def afunc(state: Any, config: RunnableConfig) -> Any:
        with _tracer.start_as_current_span(
            f"node {name}",
            attributes=_node_attributes(name, config),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await inner.ainvoke(state, config)
            except BaseException as exc:
                record(span, exc)
                raise

    def func(state: Any, config: RunnableConfig) -> Any:
        with _tracer.start_as_current_span(
            f"node {name}",
            attributes=_node_attributes(name, config),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return inner.invoke(state, config)
            except BaseException as exc:
                record(span, exc)
                raise

    return RunnableCallable(func, afunc, name=name, trace=False)


def instrument(builder: StateGraph[Any, Any, Any, Any]) -> StateGraph[Any, Any, Any, Any]:
    """A copy of ``builder`` whose nodes run inside spans (the original is untouched)."""
    traced = copy.copy(builder)
    traced.nodes = {
        name: dataclasses.replace(spec, runnable=_traced(name, spec.runnable))
        for name, spec in builder.nodes.items()
    }
    return traced


def tracing_on() -> bool:
    """Whether spans are recorded (an SDK tracer provider is installed): without one, a
    node wrapper would cost a runnable layer per node and record nothing."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def compile_entry(entry: GraphEntry, checkpointer: BaseCheckpointSaver[Any]) -> CompiledGraph:
    builder = instrument(entry.builder) if tracing_on() else entry.builder
    return builder.compile(checkpointer=checkpointer, name=entry.graph_id, **dict(entry.compile_kwargs))


def compile_all(
    registry: GraphRegistry, checkpointer: BaseCheckpointSaver[Any]
) -> Mapping[str, CompiledGraph]:
    return {gid: compile_entry(registry.get(gid), checkpointer) for gid in registry.ids()}
