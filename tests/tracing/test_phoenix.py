"""``support_triage`` through the real service, traced into a real Arize Phoenix, read back
through Phoenix's REST and GraphQL APIs.

The service runs as a subprocess with the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``
pointing at Phoenix (OTLP/HTTP, batch processor); the LLM is the fake OpenAI server. Each
request carries its own W3C ``traceparent``, so the test knows which trace is whose.
Phoenix ingests asynchronously: the test polls until both segments have arrived.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.service import ServiceProcess
from tests.tracing.phoenix_backend import PhoenixProcess, is_loopback

pytestmark = pytest.mark.phoenix

REFUND_87 = {"ticket": "Please refund order o-10063, it arrived broken.", "customer_id": "c-001"}
START_TRACE, START_PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
RESUME_TRACE, RESUME_PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SEGMENT_SPANS = {START_TRACE: 8, RESUME_TRACE: 6}
"""FastAPI's request span + root + 4 nodes + decision + LLM call; request + root + 3 nodes +
tool call."""


@pytest.fixture(scope="module")
def service(
    redis_url: str, fake_llm: FakeOpenAI, phoenix: PhoenixProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    logs = tmp_path_factory.mktemp("service")
    proc = ServiceProcess(
        {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
            "INTERLOCK_LLM_BASE_URL": fake_llm.base_url,
            "INTERLOCK_LLM_TIMEOUT_S": "2",
            "INTERLOCK_NEAREST_EXAMPLES": "false",
            "INTERLOCK_DATA_DIR": str(logs / "data"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.url,
            "OTEL_METRICS_EXPORTER": "none",  # Phoenix takes traces only; metrics: /metrics
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_SERVICE_NAME": "interlock-test",
        },
        Path(logs / "service.log"),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _traceparent(trace_id: str, parent: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{parent}-01"}


def _wait_for_segments(phoenix: PhoenixProcess, timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = phoenix.spans()
        counts = {t: sum(1 for s in spans if s["context"]["trace_id"] == t) for t in SEGMENT_SPANS}
        if counts == SEGMENT_SPANS:
            return spans
        if time.monotonic() > deadline:
            names = sorted(s["name"] for s in spans if s["context"]["trace_id"] in SEGMENT_SPANS)
            raise AssertionError(f"spans per trace {counts}, expected {SEGMENT_SPANS}: {names}")
        time.sleep(0.5)


def _ancestors(spans: list[dict[str, Any]], span: dict[str, Any]) -> list[str]:
    """Span ids from ``span``'s parent up to the outermost (remote) parent."""
    by_id = {s["context"]["span_id"]: s for s in spans}
    chain = []
    parent = span["parent_id"]
    while parent is not None:
        chain.append(parent)
        parent = by_id[parent]["parent_id"] if parent in by_id else None
    return chain


def test_phoenix_listens_on_loopback_only(phoenix: PhoenixProcess) -> None:
    listening = phoenix.listening()
    assert (("127.0.0.1", phoenix.port)) in listening
    assert all(is_loopback(address) for address, _ in listening), listening
    assert not phoenix.grpc_reachable()


def test_support_triage_trace_in_phoenix(service: ServiceProcess, phoenix: PhoenixProcess) -> None:
    with httpx.Client(base_url=service.url, headers={"x-api-key": service.api_key}, timeout=30) as http:
        thread_id = http.post("/threads", json={}).json()["thread_id"]
        paused = http.post(
            f"/threads/{thread_id}/runs/wait",
            json={"assistant_id": "support_triage", "input": REFUND_87},
            headers=_traceparent(START_TRACE, START_PARENT),
        ).json()
        assert paused["__interrupt__"][0]["value"]["type"] == "approval"
        interrupt_id = paused["__interrupt__"][0]["id"]
        done = http.post(
            f"/threads/{thread_id}/runs/wait",
            json={"assistant_id": "support_triage", "command": {"resume": {"decision": "approve"}}},
            headers=_traceparent(RESUME_TRACE, RESUME_PARENT),
        ).json()
        assert done["refund"]["status"] == "issued"
        metrics = http.get("/metrics", headers={"x-api-key": ""})
        assert metrics.status_code == 200

    spans = _wait_for_segments(phoenix)
    first = sorted(
        (s for s in spans if s["context"]["trace_id"] == START_TRACE), key=lambda s: s["start_time"]
    )
    second = sorted(
        (s for s in spans if s["context"]["trace_id"] == RESUME_TRACE), key=lambda s: s["start_time"]
    )

    # Segment 1: the root under the request (FastAPI's span, child of the traceparent
    # header's), then the nodes in order.
    [request] = [s for s in first if s["name"].startswith("POST ")]
    assert request["parent_id"] == START_PARENT
    [root] = [s for s in first if s["name"] == "invoke_workflow support_triage"]
    assert root["parent_id"] == request["context"]["span_id"]
    assert root["span_kind"] == "CHAIN"
    attributes = root["attributes"]
    assert attributes["interlock.thread_id"] == thread_id
    assert attributes["interlock.graph_id"] == "support_triage"
    assert attributes["interlock.segment"] == 1
    assert attributes["interlock.run.status"] == "interrupted"
    assert attributes["interlock.run_id"]
    assert attributes["interlock.assistant_id"]
    edges = [(e["attributes"]["from"], e["attributes"]["to"]) for e in root["events"] if e["name"] == "edge"]
    assert edges == [
        ("__start__", "load_customer"),
        ("load_customer", "triage"),
        ("triage", "lookup_order"),
        ("lookup_order", "approval"),
    ]
    interrupts = [e["attributes"] for e in root["events"] if e["name"] == "interrupt"]
    assert interrupts == [{"interlock.interrupt.id": interrupt_id, "interlock.interrupt.type": "approval"}]
    nodes = [s for s in first if s["name"].startswith("node ")]
    assert [s["name"] for s in nodes] == [
        "node load_customer",
        "node triage",
        "node lookup_order",
        "node approval",
    ]
    assert all(s["parent_id"] == root["context"]["span_id"] for s in nodes)
    assert [s["attributes"]["interlock.step"] for s in nodes] == [1, 2, 3, 4]
    assert all(s["attributes"].get("interlock.checkpoint_id") for s in nodes[:3])

    # The decision, and the LLM call nested under it.
    [decide] = [s for s in first if s["name"] == "decide triage"]
    assert decide["parent_id"] == nodes[1]["context"]["span_id"]
    assert decide["attributes"]["agent.decision.chosen"] == "refund"
    assert decide["attributes"]["agent.decision.method"] == "llm"
    assert decide["attributes"]["agent.decision.candidates"] == ["refund", "answer", "technical", "escalate"]
    assert 0 < decide["attributes"]["agent.decision.confidence"] <= 1
    [chat] = [s for s in first if s["name"].startswith("chat ")]
    assert chat["parent_id"] == decide["context"]["span_id"]
    assert chat["span_kind"] == "LLM"
    assert chat["attributes"]["gen_ai.request.model"] == "smollm2"
    assert chat["attributes"]["llm.token_count.prompt"] > 0  # derived by Phoenix from gen_ai.usage.*
    assert chat["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]

    # Segment 2: a new trace under the approver's request, carrying the paused one's id
    # (Phoenix drops span links; the attribute is what it keeps).
    [resumed] = [s for s in second if s["name"] == "invoke_workflow support_triage"]
    assert _ancestors(second, resumed) == [
        next(s["context"]["span_id"] for s in second if s["name"].startswith("POST ")),
        RESUME_PARENT,
    ]
    assert resumed["attributes"]["interlock.segment"] == 2
    assert resumed["attributes"]["interlock.run.status"] == "success"
    assert resumed["attributes"]["interlock.continues.trace_id"] == START_TRACE
    assert resumed["attributes"]["interlock.continues.span_id"] == root["context"]["span_id"]
    assert [s["name"] for s in second if s["name"].startswith("node ")] == [
        "node approval",
        "node issue_refund",
        "node respond",
    ]
    [tool] = [s for s in second if s["name"] == "execute_tool issue_refund"]
    assert tool["span_kind"] == "TOOL"

    # Every span, FastAPI's request span that starts the run included, carries the thread
    # as its session; Phoenix groups both traces under it.
    ours = first + second
    assert all(s["attributes"].get("session.id") == thread_id for s in ours), [
        s["name"] for s in ours if "session.id" not in s["attributes"]
    ]
    assert all(s["attributes"]["gen_ai.conversation.id"] == thread_id for s in ours)
    sessions = phoenix.graphql(
        """{ projects { edges { node { sessions(first: 50) { edges { node {
             sessionId traces(first: 10) { edges { node { traceId } } } } } } } } } }"""
    )
    grouped = {
        session["node"]["sessionId"]: {t["node"]["traceId"] for t in session["node"]["traces"]["edges"]}
        for project in sessions["projects"]["edges"]
        for session in project["node"]["sessions"]["edges"]
    }
    assert grouped[thread_id] == {START_TRACE, RESUME_TRACE}
