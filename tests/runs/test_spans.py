"""The span model and metrics of run segments, on an in-process engine, read from the
SDK's in-memory exporter (and an in-memory metric reader)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from api.routes.runs import _continues
from core import metrics
from runs.engine import Engine
from runs.payload import RunPayload
from tests.runs.test_worker import run_to_end

REFUND_87 = {"ticket": "Please refund order o-10063, it arrived broken.", "customer_id": "c-001"}
"""A refund of 87.87: above the approval threshold, so the run pauses on an approval."""


def by_trace(spans: Sequence[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.context.trace_id == trace_id), key=lambda s: s.start_time or 0)


def root_of(spans: Sequence[ReadableSpan], segment: int) -> ReadableSpan:
    [root] = [
        s
        for s in spans
        if s.name == "invoke_workflow support_triage"
        and (s.attributes or {}).get("interlock.segment") == segment
    ]
    return root


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def resume(engine: Engine, thread_id: str, value: Any, **kw: Any) -> dict[str, Any]:
    """Resume the way the API does: the paused segment's link comes from the thread record."""
    record = await engine.store.get_thread(thread_id)
    assert record is not None
    continues = _continues(record)
    assert continues is not None
    return await run_to_end(engine, thread_id, command={"resume": value}, continues=continues, **kw)


@pytest.fixture
def meter() -> Iterator[InMemoryMetricReader]:
    """Metrics recorded into a reader of this test's own (the global provider untouched)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    saved = metrics._instruments
    metrics._instruments = metrics.make_instruments(provider.get_meter("test"))
    try:
        yield reader
    finally:
        metrics._instruments = saved
        provider.shutdown()


async def settled(
    reader: InMemoryMetricReader, name: str, count: int
) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Points once ``name`` (counted after the outcome is on record, just after the run's
    end event) sums to ``count``."""
    for _ in range(200):
        found = points(reader)
        if sum(v for _, v in found.get(name, [])) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never reached {count}: {points(reader).get(name)}")


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Metric name → [(attributes, value or histogram point)]."""
    data = reader.get_metrics_data()
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", point)
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


async def test_a_paused_segment_is_one_trace(engine: Engine, spans: InMemorySpanExporter) -> None:
    tid = str(uuid.uuid4())
    end = await run_to_end(engine, tid, input=REFUND_87)
    assert end["status"] == "interrupted"
    finished = spans.get_finished_spans()
    root = root_of(finished, 1)
    assert root.parent is None
    assert attrs(root) | {"interlock.run.attempt": 1} == {
        "openinference.span.kind": "CHAIN",
        "gen_ai.operation.name": "invoke_workflow",
        "interlock.run_id": end["run_id"],
        "interlock.thread_id": tid,
        "interlock.assistant_id": "a",
        "interlock.graph_id": "support_triage",
        "interlock.segment": 1,
        "interlock.run.attempt": 1,
        "interlock.run.status": "interrupted",
        "session.id": tid,
        "gen_ai.conversation.id": tid,
    }
    trace = by_trace(finished, root.context.trace_id)
    # Every span of the segment groups under the thread.
    assert all(attrs(s)["session.id"] == attrs(s)["gen_ai.conversation.id"] == tid for s in trace)

    nodes = [s for s in trace if s.name.startswith("node ")]
    assert [(attrs(s)["interlock.node"], attrs(s)["interlock.step"]) for s in nodes] == [
        ("load_customer", 1),
        ("triage", 2),
        ("lookup_order", 3),
        ("approval", 4),
    ]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in nodes)
    assert all(attrs(s)["interlock.task_id"] for s in nodes)
    assert all((s.end_time or 0) > (s.start_time or 0) for s in nodes)

    # The nodes that finished carry the checkpoint that stored their writes.
    history = [
        h
        async for h in engine.graphs["support_triage"].aget_state_history(
            {"configurable": {"thread_id": tid}}
        )
    ]
    by_step = {h.metadata["step"]: h.config["configurable"]["checkpoint_id"] for h in history if h.metadata}
    for node in nodes[:3]:
        assert attrs(node)["interlock.checkpoint_id"] == by_step[attrs(node)["interlock.step"]]
    approval = nodes[3]
    assert "interlock.checkpoint_id" not in attrs(approval)  # paused: its step never completed

    # Edges taken and the interrupt, as events on the root.
    assert [(e["from"], e["to"]) for e in events(root, "edge")] == [
        ("__start__", "load_customer"),
        ("load_customer", "triage"),
        ("triage", "lookup_order"),
        ("lookup_order", "approval"),
    ]
    thread = await engine.store.get_thread(tid)
    assert thread is not None
    [[pending]] = thread["interrupts"].values()
    assert events(root, "interrupt") == [
        {"interlock.interrupt.id": pending["id"], "interlock.interrupt.type": "approval"}
    ]
    assert events(approval, "interrupt") == [
        {
            "interlock.node": "approval",
            "interlock.interrupt.id": pending["id"],
            "interlock.interrupt.type": "approval",
        }
    ]
    assert approval.status.status_code == StatusCode.UNSET  # a pause is not an error

    # The decision under its node, the LLM call under the decision.
    [decide] = [s for s in trace if s.name == "decide triage"]
    assert decide.parent is not None and decide.parent.span_id == nodes[1].context.span_id
    assert attrs(decide)["agent.decision.chosen"] == "refund"
    assert attrs(decide)["agent.decision.method"] == "llm"
    assert list(attrs(decide)["agent.decision.candidates"]) == ["refund", "answer", "technical", "escalate"]
    assert 0 < attrs(decide)["agent.decision.confidence"] <= 1
    [chat] = [s for s in trace if s.name.startswith("chat ")]
    assert chat.parent is not None and chat.parent.span_id == decide.context.span_id
    assert chat.kind == SpanKind.CLIENT
    assert attrs(chat)["openinference.span.kind"] == "LLM"
    assert attrs(chat)["gen_ai.request.model"] == "smollm2"
    assert attrs(chat)["gen_ai.usage.input_tokens"] > 0
    assert attrs(chat)["gen_ai.usage.output_tokens"] > 0
    assert list(attrs(chat)["gen_ai.response.finish_reasons"]) == ["stop"]
    # No content unless INTERLOCK_TRACE_CONTENT=true.
    assert not any(k.startswith(("input.", "output.", "gen_ai.input", "gen_ai.output")) for k in attrs(chat))

    # The thread keeps the segment's trace, for a resume to link to.
    assert thread["trace"] == {
        "segment": 1,
        "trace_id": format(root.context.trace_id, "032x"),
        "span_id": format(root.context.span_id, "016x"),
    }


async def test_a_resume_is_a_new_trace_linked_to_the_paused_one(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    tid = str(uuid.uuid4())
    await run_to_end(engine, tid, input=REFUND_87)
    approver_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    end = await resume(
        engine,
        tid,
        {"decision": "approve", "comment": "ok"},
        trace_context={"traceparent": f"00-{approver_trace}-00f067aa0ba902b7-01"},
    )
    assert end["status"] == "success"
    finished = spans.get_finished_spans()
    first, second = root_of(finished, 1), root_of(finished, 2)
    # Under the approver's request, not under the paused segment.
    assert format(second.context.trace_id, "032x") == approver_trace
    assert second.parent is not None and format(second.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert attrs(second)["interlock.continues.trace_id"] == format(first.context.trace_id, "032x")
    assert attrs(second)["interlock.continues.span_id"] == format(first.context.span_id, "016x")
    [link] = second.links
    assert link.context.trace_id == first.context.trace_id
    assert link.context.span_id == first.context.span_id
    assert attrs(second)["interlock.run.status"] == "success"
    assert attrs(second)["session.id"] == tid

    trace = by_trace(finished, second.context.trace_id)
    nodes = [attrs(s)["interlock.node"] for s in trace if s.name.startswith("node ")]
    assert nodes == ["approval", "issue_refund", "respond"]
    edges = [(e["from"], e["to"]) for e in events(second, "edge")]
    assert edges == [
        ("__start__", "approval"),
        ("approval", "issue_refund"),
        ("issue_refund", "respond"),
        ("respond", "__end__"),
    ]
    [tool] = [s for s in trace if s.name == "execute_tool issue_refund"]
    assert attrs(tool)["openinference.span.kind"] == "TOOL"
    assert attrs(tool)["gen_ai.tool.name"] == "issue_refund"
    assert attrs(tool)["session.id"] == tid
    [node] = [s for s in trace if s.name == "node issue_refund"]
    assert tool.parent is not None and tool.parent.span_id == node.context.span_id

    thread = await engine.store.get_thread(tid)
    assert thread is not None and thread["trace"]["segment"] == 2


async def test_a_resume_without_traceparent_starts_its_own_trace(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    tid = str(uuid.uuid4())
    await run_to_end(engine, tid, input=REFUND_87)
    await resume(engine, tid, {"decision": "reject", "comment": "no"})
    finished = spans.get_finished_spans()
    first, second = root_of(finished, 1), root_of(finished, 2)
    assert second.parent is None
    assert second.context.trace_id != first.context.trace_id
    assert [link.context.span_id for link in second.links] == [first.context.span_id]


async def test_metrics_of_a_paused_and_resumed_run(
    engine: Engine, spans: InMemorySpanExporter, meter: InMemoryMetricReader
) -> None:
    tid = str(uuid.uuid4())
    await run_to_end(engine, tid, input=REFUND_87)
    found = await settled(meter, "interlock.runs.finished", 1)
    assert found["interlock.runs.started"] == [({"graph_id": "support_triage", "resume": False}, 1)]
    assert found["interlock.runs.finished"] == [({"graph_id": "support_triage", "status": "interrupted"}, 1)]
    assert found["interlock.interrupts.pending"] == [({"graph_id": "support_triage"}, 1)]
    assert found["interlock.decisions"] == [({"node": "triage", "branch": "refund", "method": "llm"}, 1)]
    assert "interlock.decision.fallbacks" not in found
    [(_, wait)] = found["interlock.queue.wait"]
    assert wait.count == 1 and 0 <= wait.sum < 60
    node_counts = {a["node"]: (a["status"], p.count) for a, p in found["interlock.node.duration"]}
    assert node_counts == {
        "load_customer": ("ok", 1),
        "triage": ("ok", 1),
        "lookup_order": ("ok", 1),
        "approval": ("interrupt", 1),
    }
    tokens = {a["gen_ai.token.type"]: p.sum for a, p in found["gen_ai.client.token.usage"]}
    assert tokens["input"] > 0 and tokens["output"] > 0

    await resume(engine, tid, {"decision": "approve", "comment": "ok"})
    found = await settled(meter, "interlock.runs.finished", 2)
    assert found["interlock.interrupts.pending"] == [({"graph_id": "support_triage"}, 0)]
    [(_, waited)] = found["interlock.interrupt.wait"]
    assert waited.count == 1
    finished = {a["status"]: v for a, v in found["interlock.runs.finished"]}
    assert finished == {"interrupted": 1, "success": 1}
    durations = {a["status"]: p.count for a, p in found["interlock.run.duration"]}
    assert durations == {"interrupted": 1, "success": 1}


async def test_fallbacks_are_counted(
    engine: Engine, spans: InMemorySpanExporter, meter: InMemoryMetricReader, fake_llm: Any
) -> None:
    fake_llm.script([{"kind": "status", "status": 500}] * 3)
    try:
        await run_to_end(engine, str(uuid.uuid4()), input=REFUND_87)
    finally:
        fake_llm.reset()
    found = await settled(meter, "interlock.runs.finished", 1)
    assert found["interlock.decision.fallbacks"] == [({"node": "triage"}, 1)]
    assert found["interlock.decisions"] == [
        ({"node": "triage", "branch": "escalate", "method": "fallback"}, 1)
    ]
    errors = {a.get("error.type") for a, _ in found["gen_ai.client.operation.duration"]}
    assert errors == {"http 500"}


def test_payload_accepts_what_older_workers_wrote() -> None:
    # A queue entry written before segments were linked still validates.
    payload = RunPayload.model_validate({"graph_id": "g", "assistant_id": "a"})
    assert payload.continues is None


def test_a_node_span_takes_the_checkpoint_of_its_graph_and_step() -> None:
    """``Segment``'s bookkeeping alone: spans wait per graph namespace for the checkpoint
    of their step (even one that ended out of order), and the rest end with the segment."""
    from runs.segment import Segment
    from tests.core.memory_spans import memory_provider

    provider, memory = memory_provider()
    tracer = provider.get_tracer("t")
    segment = Segment(
        tracer.start_span("root"), RunPayload(graph_id="g", assistant_id="a", input={}), "t1", attempt=1
    )
    for namespace, step, name in [
        ("", 1, "a"),
        ("sub:1", 1, "x"),
        ("", 2, "b"),
        ("", 3, "c"),
        ("", 1, "late"),
    ]:
        segment.node_ended(tracer.start_span(name), namespace, step, 5)
    segment.on_checkpoint("", "cp-1", 1)
    segment.on_checkpoint("sub:1", "cp-x", 1)
    segment.on_checkpoint("other", "cp-o", 9)  # nothing waits there
    segment.on_checkpoint("", "cp-2", 2)
    assert {s.name for s in memory.get_finished_spans()} == {"a", "late", "x", "b"}
    segment.flush()
    ids = {s.name: (s.attributes or {}).get("interlock.checkpoint_id") for s in memory.get_finished_spans()}
    assert ids == {"a": "cp-1", "late": "cp-1", "x": "cp-x", "b": "cp-2", "c": None}
    assert all(s.end_time == 5 for s in memory.get_finished_spans())
