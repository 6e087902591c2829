"""``core.spans``: the lean spans against the SDK's own (the oracle): the same calls on
both must give the same exported span, with the provider's sampler, limits and
processors; and they nest with spans of any other tracer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from core.spans import HotTracer, LeanSpan, activate, deactivate
from tests.core.memory_spans import REMOTE, memory_provider


@pytest.fixture
def install(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., tuple[TracerProvider, InMemorySpanExporter]]]:
    """Makes a provider current for ``HotTracer`` (which follows the global provider) by
    patching the API's lookup: the process-wide provider can be set only once."""

    def made(**options: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
        provider, memory = memory_provider(**options)
        monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
        return provider, memory

    yield made


def _exercise(tracer: Any) -> None:
    """Everything a span can be asked to do, in one trace under a remote parent."""
    with tracer.start_as_current_span(
        "invoke_workflow g",
        context=set_span_in_context(NonRecordingSpan(REMOTE)),
        attributes={"interlock.run_id": "r1", "interlock.segment": 2, "names": ["a", "b"]},
        links=[Link(REMOTE, {"interlock.link": "continues"})],
        record_exception=False,
        set_status_on_exception=False,
    ) as root:
        root.add_event("edge", {"from": "__start__", "to": "a", "interlock.step": 1})
        root.set_attribute("interlock.run.attempt", 1)
        root.set_attribute("bad", {"a": "dict"})  # not an attribute value: dropped
        root.set_attribute("ratio", 0.5)
        root.set_attribute("flags", [True, False])
        root.set_attribute("mixed", [1, "a"])  # mixed types: dropped
        node = tracer.start_span("node a", kind=SpanKind.INTERNAL, attributes={"interlock.node": "a"})
        node.set_status(Status(StatusCode.ERROR, "ValueError: boom"))
        node.set_status(StatusCode.UNSET)  # ignored
        node.record_exception(ValueError("boom"), {"extra": 1})
        node.add_event("interrupt", {"interlock.interrupt.id": "i1", "nested": ["x", "y"]})
        node.update_name("node a (renamed)")
        node.end(123)
        node.set_attribute("late", True)  # after end: ignored
        ok = tracer.start_span("node b", attributes={"interlock.node": "b"})
        ok.set_status(Status(StatusCode.OK))
        ok.set_status(Status(StatusCode.ERROR, "too late"))  # OK is final
        ok.add_link(REMOTE, {"why": "x"})
        ok.end()
        root.set_status(Status(StatusCode.ERROR, "failed"))


def _view(span: ReadableSpan, ids: dict[int, str]) -> dict[str, Any]:
    """What an exporter reads from a span, with ids replaced by names."""

    def ident(context: SpanContext | None) -> str | None:
        if context is None:
            return None
        return ids.setdefault(context.span_id, f"span-{len(ids)}")

    def event_view(event: Any) -> tuple[Any, ...]:
        attributes = dict(event.attributes)
        if "exception.stacktrace" in attributes:  # differs by the frames of the caller
            attributes["exception.stacktrace"] = attributes["exception.stacktrace"].splitlines()[-1]
        return (event.name, attributes, event.dropped_attributes)

    return {
        "name": span.name,
        "id": ident(span.get_span_context()),
        "parent": ident(span.parent),
        "parent_remote": span.parent.is_remote if span.parent else None,
        "trace": span.get_span_context().trace_id == REMOTE.trace_id,
        "flags": int(span.get_span_context().trace_flags),
        "kind": span.kind,
        "attributes": dict(span.attributes),
        "events": [event_view(e) for e in span.events],
        "links": [(ident(link.context), dict(link.attributes)) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "resource": dict(span.resource.attributes),
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "end_fixed": span.end_time == 123,
    }


def _both(
    install: Callable[..., tuple[TracerProvider, InMemorySpanExporter]], **options: Any
) -> tuple[Any, Any]:
    provider, memory = install(**options)
    _exercise(provider.get_tracer("interlock.runs"))
    sdk = memory.get_finished_spans()
    memory.clear()
    _exercise(HotTracer("interlock.runs"))
    lean = memory.get_finished_spans()
    assert all(isinstance(span, LeanSpan) for span in lean)
    sdk_ids: dict[int, str] = {REMOTE.span_id: "remote"}
    lean_ids: dict[int, str] = {REMOTE.span_id: "remote"}
    return [_view(s, sdk_ids) for s in sdk], [_view(s, lean_ids) for s in lean]


def test_a_lean_span_exports_what_an_sdk_span_does(install: Callable[..., Any]) -> None:
    sdk, lean = _both(install)
    assert len(sdk) == 3
    assert lean == sdk


def test_limits_drop_as_the_sdk_drops(install: Callable[..., Any]) -> None:
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=1, max_attribute_length=3)
    sdk, lean = _both(install, span_limits=limits)
    assert any(view["dropped"] != (0, 0, 0) for view in sdk)  # the limits bite
    assert lean == sdk


def test_an_unsampled_trace_records_nothing(install: Callable[..., Any]) -> None:
    _, memory = install(sampler=ParentBased(ALWAYS_OFF))
    tracer = HotTracer("interlock.runs")
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording()
        child = tracer.start_span("node a")
        assert not child.is_recording()
        assert child.get_span_context().trace_id == root.get_span_context().trace_id
        child.end()
    assert memory.get_finished_spans() == ()


def test_spans_of_other_tracers_nest_under_lean_ones(install: Callable[..., Any]) -> None:
    provider, memory = install()
    tracer = HotTracer("interlock.runs")
    with tracer.start_as_current_span("invoke_workflow g") as root:
        node = tracer.start_span("node decide")
        token = activate(node)
        try:
            with provider.get_tracer("interlock.agents").start_as_current_span("chat m"):
                pass
        finally:
            deactivate(token)
        node.end()
    chat, node_span, root_span = memory.get_finished_spans()
    assert chat.parent.span_id == node_span.get_span_context().span_id
    assert node_span.parent.span_id == root_span.get_span_context().span_id
    assert root_span.parent is None and root.get_span_context().trace_flags.sampled
    assert trace.get_current_span() is trace.INVALID_SPAN  # deactivated


def test_without_an_sdk_provider_spans_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: trace.NoOpTracerProvider())
    span = HotTracer("interlock.runs").start_span("node a", attributes={"x": 1})
    assert not span.is_recording()
    assert not isinstance(span, LeanSpan)


def _node(tracer: HotTracer, trusted: bool) -> None:
    with tracer.start_as_current_span("invoke_workflow g") as root:
        attributes = {"interlock.node": "a", "interlock.step": 1, "session.id": "t"}
        node = (
            tracer.start_child("node a", dict(attributes))
            if trusted
            else tracer.start_span("node a", attributes=attributes)
        )
        for key, value in (("interlock.checkpoint_id", "cp-1"), ("interlock.step", 2)):
            node.set_trusted(key, value) if trusted else node.set_attribute(key, value)  # type: ignore[attr-defined]
        for i in range(2):
            edge = {"from": "__start__", "to": "a", "interlock.step": i}
            if trusted:  # the first without a key, the second with one
                root.add_trusted_event("edge", edge, ("edge", i) if i else None)  # type: ignore[attr-defined]
            else:
                root.add_event("edge", edge)
        node.end()


@pytest.mark.parametrize(
    "limits", [SpanLimits(), SpanLimits(max_span_attributes=2, max_events=1, max_attribute_length=1)]
)
def test_the_trusted_hot_path_exports_what_the_checked_one_does(
    install: Callable[..., Any], limits: SpanLimits
) -> None:
    _, memory = install(span_limits=limits)
    tracer = HotTracer("interlock.runs")
    _node(tracer, trusted=False)
    checked = memory.get_finished_spans()
    memory.clear()
    _node(tracer, trusted=True)
    trusted = memory.get_finished_spans()
    assert [_view(s, {}) for s in trusted] == [_view(s, {}) for s in checked]
    node, root = trusted
    assert node.parent.span_id == root.get_span_context().span_id
    assert node.get_span_context().trace_flags == root.get_span_context().trace_flags


def test_a_hot_child_outside_a_lean_span_is_an_ordinary_span(install: Callable[..., Any]) -> None:
    _, memory = install()
    span = HotTracer("interlock.runs").start_child("node a", {"interlock.node": "a"})
    span.end()
    [exported] = memory.get_finished_spans()
    assert exported.parent is None and exported.attributes["interlock.node"] == "a"


def test_children_take_their_ids_from_the_providers_generator(install: Callable[..., Any]) -> None:
    class Counting(IdGenerator):
        def __init__(self) -> None:
            self.next = 0x1000

        def generate_span_id(self) -> int:
            self.next += 1
            return self.next

        def generate_trace_id(self) -> int:
            return 0xABC

    _, memory = install(id_generator=Counting())
    tracer = HotTracer("interlock.runs")
    with tracer.start_as_current_span("root"):
        tracer.start_child("node a", {"interlock.node": "a"}).end()
    node, root = memory.get_finished_spans()
    assert (root.get_span_context().trace_id, root.get_span_context().span_id) == (0xABC, 0x1001)
    assert (node.get_span_context().trace_id, node.get_span_context().span_id) == (0xABC, 0x1002)
    assert node.get_span_context().is_valid and not node.get_span_context().is_remote


def test_a_child_context_is_what_span_context_would_make(install: Callable[..., Any]) -> None:
    _, memory = install()
    tracer = HotTracer("interlock.runs")
    with tracer.start_as_current_span("root", context=set_span_in_context(NonRecordingSpan(REMOTE))):
        tracer.start_child("node a", {"interlock.node": "a"}).end()
    node, _ = memory.get_finished_spans()
    made = node.get_span_context()
    expected = SpanContext(made.trace_id, made.span_id, False, made.trace_flags, made.trace_state)
    assert type(made) is SpanContext and made == expected
    assert made.trace_id == REMOTE.trace_id and made.is_valid and 0 < made.span_id < 2**64


@pytest.mark.parametrize("sampled", [True, False])
def test_the_default_sampler_decides_as_the_sdks(install: Callable[..., Any], sampled: bool) -> None:
    """``ParentBased(ALWAYS_ON)`` (what a provider samples with unless told otherwise) is
    decided without calling it: the same flags, trace state and recording as the SDK's."""
    provider, memory = install()
    parent = SpanContext(
        REMOTE.trace_id,
        REMOTE.span_id,
        True,
        TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        TraceState([("vendor", "v1")]),
    )
    made = []
    for tracer in (provider.get_tracer("interlock.runs"), HotTracer("interlock.runs")):
        for context in (set_span_in_context(NonRecordingSpan(parent)), None):
            span = tracer.start_span("root", context=context, attributes={"k": "v"})
            span_context = span.get_span_context()
            made.append((span.is_recording(), int(span_context.trace_flags), span_context.trace_state))
            span.end()
    assert made[:2] == made[2:]
    assert made[0][0] is sampled and made[1][0] is True
    exported = memory.get_finished_spans()
    assert [dict(s.attributes) for s in exported] == [{"k": "v"}] * len(exported)


@pytest.mark.parametrize("flags", [{}, {"record_exception": False}, {"set_status_on_exception": False}])
def test_an_error_leaving_the_block_is_recorded_as_the_sdk_records_it(
    install: Callable[..., Any], flags: dict[str, bool]
) -> None:
    provider, memory = install()
    views = []
    for tracer in (provider.get_tracer("interlock.runs"), HotTracer("interlock.runs")):
        for error in (ValueError("boom"), asyncio.CancelledError()):
            with pytest.raises(type(error)), tracer.start_as_current_span("node a", **flags):
                raise error
            assert trace.get_current_span() is trace.INVALID_SPAN
        views.append([_view(s, {}) for s in memory.get_finished_spans()])
        memory.clear()
    sdk, lean = views
    assert lean == sdk
    assert len(sdk) == 2 and sdk[1]["events"] == [] and sdk[1]["status"][0] is StatusCode.UNSET
