"""The trace and metrics of one run segment: from a run's start or resume until it ends
or pauses.

A segment is one trace whose root span ``invoke_workflow <graph>`` (kind CHAIN) the worker
opens; :class:`Segment` keeps what the node spans under it need: the edges taken (an
``edge`` event on the root per step transition, ``from`` the nodes of the previous step),
the interrupts, and node spans waiting for the id of the checkpoint that stores their
writes (reported by the saver through ``core.tracing.checkpoint_written``, so it costs no
Redis round trip). A resumed segment links to the one it continues; the link is kept on
the thread record, which the API reads anyway when it accepts a resume.
"""

from __future__ import annotations

import bisect
import contextvars
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.trace import Link, Span, SpanContext, TraceFlags

from core import metrics
from core.spans import LeanSpan
from core.tracing import CONVERSATION_ID, SESSION_ID, SPAN_KIND, checkpoint_listener, current_thread
from runs.payload import RunPayload

START, END = "__start__", "__end__"
_FROM_START = (START,)


def _step_of(waiting: tuple[Span, int, int]) -> int:
    """The step of a waiting node span (its sort key)."""
    return waiting[1]


current: contextvars.ContextVar[Segment | None] = contextvars.ContextVar("interlock_segment", default=None)
"""The segment the running task belongs to (set by the worker around graph execution)."""


def parent_namespace(checkpoint_ns: str) -> str:
    """The namespace of the graph a task runs in (its own ``node:task`` part removed)."""
    return checkpoint_ns.rpartition("|")[0]


def root_span_arguments(payload: RunPayload, run_id: str, thread_id: str) -> dict[str, Any]:
    """Keyword arguments of ``start_as_current_span`` for the segment's root span: its
    attributes and, for a resume, the link to the segment it continues."""
    attributes: dict[str, Any] = {
        SPAN_KIND: "CHAIN",
        "gen_ai.operation.name": "invoke_workflow",
        "interlock.run_id": run_id,
        "interlock.thread_id": thread_id,
        "interlock.assistant_id": payload.assistant_id,
        "interlock.graph_id": payload.graph_id,
        "interlock.segment": payload.continues.segment + 1 if payload.continues else 1,
        SESSION_ID: thread_id,
        CONVERSATION_ID: thread_id,
    }
    links: list[Link] = []
    previous = payload.continues
    if previous is not None and previous.trace_id and previous.span_id:
        attributes["interlock.continues.trace_id"] = previous.trace_id
        attributes["interlock.continues.span_id"] = previous.span_id
        try:
            context = SpanContext(
                int(previous.trace_id, 16),
                int(previous.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            links.append(Link(context, {"interlock.link": "continues"}))
        except ValueError:
            pass  # not hex: keep the attribute, skip the link
    return {"attributes": attributes, "links": links}


class Segment:
    """Bookkeeping of one executing run segment (thread-safe: sync nodes run in threads)."""

    def __init__(self, root: Span, payload: RunPayload, thread_id: str, *, attempt: int) -> None:
        self.root = root
        self.graph_id = payload.graph_id
        self.thread_id = thread_id
        self.number = payload.continues.segment + 1 if payload.continues else 1
        self.attempt = attempt
        self.payload = payload
        self.traced = root.is_recording()
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._steps: dict[str, tuple[int, list[str]]] = {}
        """Per graph namespace: the latest step that started nodes, and those nodes."""
        self._previous: dict[str, Sequence[str]] = {}
        """Per graph namespace: the nodes of the step before it."""
        self._waiting: dict[str, list[tuple[Span, int, int]]] = {}
        """Per graph namespace, node spans that ended well, waiting for their checkpoint:
        (span, step, end ns), by step."""
        self._tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []

    # lifetime

    def begin(self, enqueued_ms: int) -> Segment:
        """The segment starts executing (its entry entered the queue at ``enqueued_ms``):
        spans made from here on know their segment and thread; count the start."""
        self._tokens = [
            (current, current.set(self)),
            (current_thread, current_thread.set(self.thread_id)),
        ]
        if self.traced:
            self._tokens.append((checkpoint_listener, checkpoint_listener.set(self.on_checkpoint)))
        instruments = metrics.instruments()
        if instruments is not None:
            attrs = {"graph_id": self.graph_id}
            instruments.runs_started.add(1, {**attrs, "resume": self.payload.continues is not None})
            previous = self.payload.continues
            # A take-over (attempt > 1) waited for a lease, not in the queue or for a person.
            if self.attempt == 1:
                waited = max(0.0, time.time() - enqueued_ms / 1000)
                instruments.queue_wait.record(waited, attrs)
                if previous is not None and previous.interrupts:
                    instruments.interrupts_pending.add(-previous.interrupts, attrs)
                if previous is not None and previous.interrupted_at:
                    waited = max(0.0, time.time() - previous.interrupted_at / 1000)
                    instruments.interrupt_wait.record(waited, attrs)
        return self

    def end(self, status: str | None = None, interrupts: Sequence[Mapping[str, Any]] = ()) -> None:
        """The segment stopped executing: with its outcome ``status``, the final edges
        and an ``interrupt`` event per pending interrupt go on the root span; node spans
        still waiting for a checkpoint end."""
        if status is not None:
            self.root.set_attribute("interlock.run.status", status)
            if status == "success":
                with self._lock:
                    last = self._steps.get("", (0, []))[1]
                for node in last:
                    self._edge({"from": node, "to": END}, ("edge", node, END))
            for item in interrupts:
                value = item.get("value")
                kind = value.get("type") if isinstance(value, dict) else None
                attributes = {"interlock.interrupt.id": str(item.get("id", ""))}
                if isinstance(kind, str):
                    attributes["interlock.interrupt.type"] = kind
                self.root.add_event("interrupt", attributes)
        for var, token in reversed(self._tokens):
            var.reset(token)
        self._tokens = []
        self.flush()

    def recorded(self, status: str, interrupts: int) -> None:
        """The outcome is on record: count it."""
        instruments = metrics.instruments()
        if instruments is None:
            return
        attrs = {"graph_id": self.graph_id, "status": status}
        instruments.runs_finished.add(1, attrs)
        instruments.run_duration.record(time.perf_counter() - self.started, attrs)
        if interrupts:
            instruments.interrupts_pending.add(interrupts, {"graph_id": self.graph_id})

    def link_record(self) -> dict[str, Any]:
        """What the thread record keeps so that a resume can link to this segment."""
        record: dict[str, Any] = {"segment": self.number}
        context = self.root.get_span_context()
        if self.traced and context.is_valid:
            record["trace_id"] = format(context.trace_id, "032x")
            record["span_id"] = format(context.span_id, "016x")
        return record

    # nodes

    def node_started(self, name: str, step: int, namespace: str) -> None:
        """Note the node and put an ``edge`` event per node of the step before it."""
        sources: Sequence[str]
        with self._lock:
            latest = self._steps.get(namespace)
            if latest is None or step > latest[0]:
                sources = self._previous[namespace] = latest[1] if latest is not None else _FROM_START
                self._steps[namespace] = (step, [name])
            else:
                latest[1].append(name)
                sources = self._previous.get(namespace, _FROM_START)
        for source in sources:
            attributes: dict[str, Any] = {"from": source, "to": name, "interlock.step": step}
            if namespace:
                attributes["interlock.checkpoint_ns"] = namespace
            self._edge(attributes, ("edge", source, name, step, namespace))

    def _edge(self, attributes: dict[str, Any], key: tuple[Any, ...]) -> None:
        """An ``edge`` event on the root; ``key`` fixes its attributes (for the exporter's
        cache: edges repeat in every run of a graph)."""
        root = self.root
        if type(root) is LeanSpan:
            root.add_trusted_event("edge", attributes, key)
        else:
            root.add_event("edge", attributes)

    def node_ended(self, span: Span, namespace: str, step: int, end_ns: int) -> None:
        """A node span that ended well waits for the checkpoint that stores its writes."""
        with self._lock:
            waiting = self._waiting.get(namespace)
            if waiting is None:
                self._waiting[namespace] = [(span, step, end_ns)]
            elif waiting[-1][1] <= step:
                waiting.append((span, step, end_ns))
            else:  # never seen (a step's nodes end before the next step's start); kept sorted anyway
                bisect.insort(waiting, (span, step, end_ns), key=_step_of)

    def on_checkpoint(self, namespace: str, checkpoint_id: str, step: int) -> None:
        """The saver stored a checkpoint: it holds the writes of every waiting node of
        that graph up to its step."""
        if not self._waiting:
            return
        with self._lock:
            waiting = self._waiting.get(namespace)
            if not waiting:
                return
            if waiting[-1][1] <= step:  # the usual case: the checkpoint covers them all
                done = waiting
                del self._waiting[namespace]
            else:
                split = bisect.bisect_right(waiting, step, key=_step_of)  # kept sorted by step
                done = waiting[:split]
                del waiting[:split]
        for span, _, end_ns in done:
            if type(span) is LeanSpan:
                span.set_trusted("interlock.checkpoint_id", checkpoint_id)
            else:
                span.set_attribute("interlock.checkpoint_id", checkpoint_id)
            span.end(end_ns)

    def flush(self) -> None:
        """End the node spans no checkpoint came for (the segment ended first)."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for spans in waiting.values():
            for span, _, end_ns in spans:
                span.end(end_ns)
