"""``GET /metrics``: the API process's OpenTelemetry metrics in the Prometheus format."""

from __future__ import annotations

import re

import httpx
from langgraph_sdk.client import LangGraphClient

from tests.service import ServiceProcess


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels…}`` (labels may be a subset) in an exposition."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match[3])
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


async def test_metrics_are_public_and_count_runs(client: LangGraphClient, service: ServiceProcess) -> None:
    thread = await client.threads.create()
    await client.runs.wait(
        thread["thread_id"],
        "support_triage",
        input={"ticket": "How long does shipping to Austria take?", "customer_id": "c-002"},
    )
    async with httpx.AsyncClient(base_url=service.url) as http:  # no API key
        reply = await http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    assert _value(text, "interlock_runs_started_total", graph_id="support_triage") >= 1
    assert _value(text, "interlock_runs_finished_total", graph_id="support_triage", status="success") >= 1
    assert _value(text, "interlock_run_duration_seconds_count", graph_id="support_triage") >= 1
    assert _value(text, "interlock_node_duration_seconds_count", node="triage", status="ok") >= 1
    assert _value(text, "interlock_queue_wait_seconds_count", graph_id="support_triage") >= 1
    assert _value(text, "interlock_decisions_total", node="triage", method="llm") >= 1
    assert _value(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") > 0
