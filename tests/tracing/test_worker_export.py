"""A separate ``interlock worker`` process exports its spans and metrics over OTLP/HTTP
(it serves no ``/metrics``): a run it executes arrives at a collector, as a trace and as
counts, by the time the worker has stopped."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.redis import make_client
from runs.payload import RunPayload
from store.runs import RunStore
from tests.fakes.openai_server import FakeOpenAI
from tests.service import ServiceProcess


class Collector:
    """OTLP/HTTP receiver that keeps span names and metric data points."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        self.metrics: dict[str, list[tuple[dict[str, str], float]]] = {}
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/v1/traces":
                    traces = ExportTraceServiceRequest.FromString(body)
                    collector.spans += [
                        s.name for r in traces.resource_spans for ss in r.scope_spans for s in ss.spans
                    ]
                elif self.path == "/v1/metrics":
                    collector._add_metrics(ExportMetricsServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _add_metrics(self, request: ExportMetricsServiceRequest) -> None:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = metric.sum.data_points if metric.HasField("sum") else []
                    self.metrics[metric.name] = [
                        ({a.key: a.value.string_value for a in p.attributes}, p.as_int or p.as_double)
                        for p in points
                    ]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    try:
        yield c
    finally:
        c.server.shutdown()
        c.server.server_close()


async def test_worker_exports_spans_and_metrics(
    redis_url: str, fake_llm: FakeOpenAI, collector: Collector, tmp_path: Path
) -> None:
    prefix = f"t:{uuid.uuid4().hex[:12]}:"
    worker = ServiceProcess(
        {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": prefix,
            "INTERLOCK_LLM_BASE_URL": fake_llm.base_url,
            "INTERLOCK_NEAREST_EXAMPLES": "false",
            "INTERLOCK_DATA_DIR": str(tmp_path / "data"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
        tmp_path / "worker.log",
        command="worker",
    )
    worker.start()
    client = make_client(redis_url)
    try:
        store = RunStore(client, prefix=prefix)
        thread_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
        payload = RunPayload(
            graph_id="support_triage",
            assistant_id="a",
            input={"ticket": "How long does shipping take?", "customer_id": "c-002"},
        )
        await store.create_run(
            run_id=run_id, thread_id=thread_id, graph_id="support_triage", assistant_id="a",
            metadata={}, payload=payload.model_dump(mode="json"), strategy="enqueue",
            if_not_exists="create", is_resume=False,
        )  # fmt: skip
        end = await asyncio.wait_for(store.wait_for_end(thread_id, run_id), 60)
        assert end is not None and end["status"] == "success"
    finally:
        await client.aclose()
        await asyncio.to_thread(worker.stop)  # SIGTERM: flushes spans and metrics
    assert "invoke_workflow support_triage" in collector.spans
    assert "node triage" in collector.spans
    finished = collector.metrics["interlock.runs.finished"]
    assert ({"graph_id": "support_triage", "status": "success"}, 1) in finished
    assert collector.metrics["interlock.decisions"][0][0]["node"] == "triage"
