"""The worker on an in-process engine: execution, outcome records, the span model."""

from __future__ import annotations

import uuid
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runs.engine import Engine
from runs.payload import RunPayload, SegmentLink
from store.runs import END_EVENT, FIRST_EVENT_ID, RunStore


async def run_to_end(
    engine: Engine,
    thread_id: str,
    *,
    input: dict[str, Any] | None = None,
    command: dict[str, Any] | None = None,
    trace_context: dict[str, str] | None = None,
    continues: SegmentLink | None = None,
) -> dict[str, Any]:
    payload = RunPayload(
        graph_id="support_triage",
        assistant_id="a",
        input=input,
        command=command,  # type: ignore[arg-type]
        trace_context=trace_context or {},
        continues=continues,
    )
    run_id = str(uuid.uuid4())
    await engine.store.create_run(
        run_id=run_id,
        thread_id=thread_id,
        graph_id="support_triage",
        assistant_id="a",
        metadata={},
        payload=payload.model_dump(mode="json"),
        strategy="enqueue",
        if_not_exists="create",
        is_resume=command is not None,
    )
    end = await engine.store.wait_for_end(thread_id, run_id)
    assert end is not None
    return {**end, "run_id": run_id}


async def test_run_records_outcome_on_thread_and_run(engine: Engine) -> None:
    tid = str(uuid.uuid4())
    end = await run_to_end(engine, tid, input={"ticket": "refund o-10028", "customer_id": "c-001"})
    assert end["status"] == "success"
    assert end["values"]["refund"]["status"] == "issued"
    thread = await engine.store.get_thread(tid)
    assert thread is not None
    assert thread["status"] == "idle"
    assert thread["values"]["route"] == "refund"
    assert thread["active_run"] is None
    run = await engine.store.get_run(tid, end["run_id"])
    assert run is not None and run["status"] == "success"


async def test_enqueued_runs_on_one_thread_run_in_order(engine: Engine) -> None:
    tid = str(uuid.uuid4())
    store: RunStore = engine.store
    ids = []
    for ticket in ("refund o-10028", "technical: app crashes", "escalate now"):
        run_id = str(uuid.uuid4())
        ids.append(run_id)
        payload = RunPayload(
            graph_id="support_triage", assistant_id="a", input={"ticket": ticket, "customer_id": "c-001"}
        )
        await store.create_run(
            run_id=run_id, thread_id=tid, graph_id="support_triage", assistant_id="a", metadata={},
            payload=payload.model_dump(mode="json"), strategy="enqueue", if_not_exists="create", is_resume=False,
        )  # fmt: skip
    routes = []
    for run_id in ids:
        end = await store.wait_for_end(tid, run_id)
        assert end is not None and end["status"] == "success"
        routes.append(end["values"]["route"])
    assert routes == ["refund", "technical", "escalate"]
    history = [
        s
        async for s in engine.graphs["support_triage"].aget_state_history(
            {"configurable": {"thread_id": tid}}
        )
    ]
    assert len(history) > 10


async def test_span_model_of_a_run(engine: Engine, spans: InMemorySpanExporter) -> None:
    tid = str(uuid.uuid4())
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    await run_to_end(
        engine,
        tid,
        input={"ticket": "refund o-10063", "customer_id": "c-001"},
        trace_context={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
    )
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "invoke_workflow support_triage")
    assert format(root.context.trace_id, "032x") == trace_id  # parented by the request's traceparent
    assert root.attributes is not None
    assert root.attributes["interlock.run.status"] == "interrupted"
    assert root.attributes["session.id"] == tid
    in_run = [s for s in finished if s.context.trace_id == root.context.trace_id]
    nodes = sorted((s for s in in_run if s.name.startswith("node ")), key=lambda s: s.start_time or 0)
    assert [s.name for s in nodes] == [
        "node load_customer", "node triage", "node lookup_order", "node approval",
    ]  # fmt: skip
    for node in nodes:
        assert node.parent is not None and node.parent.span_id == root.context.span_id
        assert node.attributes is not None and node.attributes["session.id"] == tid
        assert node.attributes["gen_ai.conversation.id"] == tid
        assert node.attributes["interlock.step"] >= 1
    approval = nodes[-1]
    assert [e.name for e in approval.events] == ["interrupt"]
    decision = next(s for s in in_run if s.name == "decide triage")
    assert decision.parent is not None and decision.parent.span_id == nodes[1].context.span_id
    assert decision.attributes is not None
    assert decision.attributes["agent.decision.chosen"] == "refund"
    assert list(decision.attributes["agent.decision.candidates"]) == [
        "refund",
        "answer",
        "technical",
        "escalate",
    ]
    llm = next(s for s in in_run if s.name.startswith("chat "))
    assert llm.parent is not None and llm.parent.span_id == decision.context.span_id


async def test_failing_node_records_error(engine: Engine, spans: InMemorySpanExporter) -> None:
    tid = str(uuid.uuid4())
    # A ticket that is not a string passes no API check here (the worker is called
    # directly), so load_customer succeeds and lookup_order fails on it: a real node error.
    end = await run_to_end(engine, tid, input={"ticket": 42, "customer_id": "c-001"})
    assert end["status"] == "error"
    assert end["error"]["error"] == "TypeError"
    thread = await engine.store.get_thread(tid)
    assert thread is not None and thread["status"] == "error"
    failed = [s for s in spans.get_finished_spans() if s.status.status_code.name == "ERROR"]
    assert any(s.name.startswith("node ") for s in failed)
    assert any(s.name == "invoke_workflow support_triage" for s in failed)


async def test_a_wait_for_the_end_is_woken_once_and_streams_keep_every_event(
    engine: Engine, monkeypatch: Any
) -> None:
    """The first claim publishes ``metadata`` as event ``0-1`` (``FIRST_EVENT_ID``), and
    ``wait_for_end`` reads after it: a run nobody streams wakes its waiter at its end
    only. A stream from the start still gets both events, in order."""
    store: RunStore = engine.store
    batches: list[list[str]] = []
    read_events = store.read_events

    async def recording(*args: Any, **kwargs: Any) -> list[tuple[str, str, bytes]]:
        batch = await read_events(*args, **kwargs)
        batches.append([name for _, name, _ in batch])
        return batch

    monkeypatch.setattr(store, "read_events", recording)
    tid = str(uuid.uuid4())
    end = await run_to_end(engine, tid, input={"ticket": "refund o-10028", "customer_id": "c-001"})
    assert end["status"] == "success"
    assert [b for b in batches if b] == [[END_EVENT]]

    events = await read_events(tid, end["run_id"], "0-0", block_ms=None)
    assert [(i, name) for i, name, _ in events] == [(FIRST_EVENT_ID, "metadata"), (events[1][0], END_EVENT)]
