"""``core.otlp``: the hand-written OTLP span encoder against the SDK's own encoder (the
oracle), and the exporter against a real OTLP/HTTP receiver on a loopback port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.export import SpanExportResult
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

from core import otlp
from tests.core.memory_spans import REMOTE, memory_provider


def _varied_spans() -> list[ReadableSpan]:
    """Spans with every shape the encoder handles: kinds, attribute types, events, links,
    statuses, remote parents with a trace state, limits that drop, two resources and
    scopes with and without versions, attributes and schema URLs."""
    first, first_spans = memory_provider({"service.name": "interlock", "host.cores": 2})
    second, second_spans = memory_provider(
        {"service.name": "other"}, span_limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1)
    )
    tracer = first.get_tracer("interlock.runs")
    versioned = first.get_tracer(
        "interlock.agents",
        "1.2.3",
        schema_url="https://opentelemetry.io/schemas/1.26.0",
        attributes={"a": "b"},
    )
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "1")]),
    )
    attributes: dict[str, Any] = {
        "text": "thread-1",
        "empty": "",
        "unicode": "Grüße 🚀",
        "yes": True,
        "no": False,
        "count": 3,
        "negative": -42,
        "big": 2**62,
        "ratio": 0.25,
        "names": ("a", "b"),
        "numbers": [1, 2, 3],
        "flags": [True, False],
        "floats": [1.5, -2.0],
    }
    with tracer.start_as_current_span(
        "invoke_workflow g", context=set_span_in_context(NonRecordingSpan(remote))
    ) as root:
        root.set_attributes(attributes)
        root.add_event("edge", {"from": "a", "to": "b", "interlock.step": 1})
        root.add_event("bare")
        for kind in SpanKind:
            with tracer.start_as_current_span(
                f"node {kind.name}", kind=kind, attributes={"session.id": "thread-1"}
            ):
                pass
        with versioned.start_as_current_span(
            "chat m", links=[Link(remote, {"interlock.link": "continues"}), Link(root.get_span_context())]
        ) as llm:
            llm.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span(
            "failing", record_exception=False, set_status_on_exception=False
        ) as bad:
            bad.record_exception(ValueError("no such order"))
            bad.set_status(Status(StatusCode.ERROR, "ValueError: no such order"))
        with tracer.start_as_current_span("error without description") as plain:
            plain.set_status(StatusCode.ERROR)
    with second.get_tracer("limited").start_as_current_span(
        "dropping", links=[Link(remote), Link(remote)], attributes={"a": 1, "b": 2, "c": 3}
    ) as limited:
        limited.add_event("one")
        limited.add_event("two")
    return [*first_spans.get_finished_spans(), *second_spans.get_finished_spans()]


def test_bytes_parse_to_what_the_sdk_encoder_builds() -> None:
    spans = _varied_spans()
    ours = ExportTraceServiceRequest.FromString(otlp.encode_spans(spans))
    assert ours == sdk_encode_spans(spans)
    # Cached attribute bytes give the same answer the second time, in another order.
    again = list(reversed(spans))
    assert ExportTraceServiceRequest.FromString(otlp.encode_spans(again)) == sdk_encode_spans(again)


def test_the_dropped_counts_and_groups_survive() -> None:
    request = ExportTraceServiceRequest.FromString(otlp.encode_spans(_varied_spans()))
    services = [
        next(a.value.string_value for a in r.resource.attributes if a.key == "service.name")
        for r in request.resource_spans
    ]
    assert services == ["interlock", "other"]
    limited = request.resource_spans[1].scope_spans[0].spans[0]
    assert (limited.dropped_attributes_count, limited.dropped_events_count, limited.dropped_links_count) == (
        1,
        1,
        1,
    )
    scopes = [s.scope.name for s in request.resource_spans[0].scope_spans]
    assert scopes == ["interlock.runs", "interlock.agents"]


def test_an_empty_batch_is_an_empty_request() -> None:
    assert otlp.encode_spans([]) == b""
    assert ExportTraceServiceRequest.FromString(b"") == sdk_encode_spans([])


def test_the_caches_stay_bounded() -> None:
    provider, memory = memory_provider({"service.name": "interlock"})
    tracer = provider.get_tracer("t")
    for i in range(otlp._CACHE_LIMIT + 10):
        attributes = {"id": f"value-{i}", "n": i, "interlock.task_id": "t" * (i % 300)}
        with tracer.start_as_current_span(f"s{i}", attributes=attributes):
            pass
    spans = memory.get_finished_spans()
    assert ExportTraceServiceRequest.FromString(otlp.encode_spans(spans)) == sdk_encode_spans(spans)
    for cache in (otlp._string_pairs, otlp._int_pairs, otlp._heads, otlp._names):
        assert len(cache) <= otlp._CACHE_LIMIT


class _Receiver(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, str], bytes]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Receiver", (_Receiver,), {"requests": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


def test_the_exporter_posts_what_the_sdk_would(
    receiver: tuple[str, list[tuple[str, dict[str, str], bytes]]],
) -> None:
    url, received = receiver
    spans = _varied_spans()
    exporter = otlp.SpanExporter(endpoint=url, headers={"x-tenant": "acme"})
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    [(path, headers, body)] = received
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["x-tenant"] == "acme"
    assert ExportTraceServiceRequest.FromString(body) == sdk_encode_spans(spans)


def test_the_exporter_reports_a_refused_export() -> None:
    exporter = otlp.SpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=0.5)
    assert exporter.export(_varied_spans()[:1]) is SpanExportResult.FAILURE


def test_lean_spans_encode_as_the_sdk_encodes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    from core.spans import HotTracer, activate, deactivate

    provider, memory = memory_provider({"service.name": "interlock"})
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    tracer = HotTracer("interlock.runs")
    with tracer.start_as_current_span(
        "invoke_workflow g",
        attributes={"interlock.segment": 2, "session.id": "t"},
        links=[Link(REMOTE, {"a": "b"})],
    ) as root:
        node = tracer.start_child("node a", {"interlock.node": "a", "interlock.step": 1, "ratio": 0.5})
        token = activate(node)
        root.add_trusted_event("edge", {"from": "__start__", "to": "a", "interlock.step": 1})  # type: ignore[attr-defined]
        node.set_trusted("interlock.checkpoint_id", "cp-1")  # type: ignore[attr-defined]
        node.record_exception(ValueError("boom"))
        node.set_status(Status(StatusCode.ERROR, "ValueError: boom"))
        deactivate(token)
        node.end()
    spans = memory.get_finished_spans()
    assert len(spans) == 2
    assert ExportTraceServiceRequest.FromString(otlp.encode_spans(spans)) == sdk_encode_spans(spans)


@pytest.mark.parametrize("by_index", [True, False], ids=["context-by-index", "context-by-property"])
def test_lean_spans_on_the_fast_path_encode_as_the_sdk_encodes_them(
    monkeypatch: pytest.MonkeyPatch, by_index: bool
) -> None:
    """The usual lean spans (no links, status, drops or trace state) take a path of their
    own: roots with and without a remote parent, ids of every length as unique-valued
    attributes, ints from the cache, and keyed events that repeat across runs; their
    ``SpanContext`` read by index (as the API lays it out) or, where core.spans finds
    another layout, through its properties."""
    from opentelemetry import trace

    from core.spans import HotTracer

    monkeypatch.setattr(otlp, "CONTEXT_AS_TUPLE", by_index)
    provider, memory = memory_provider({"service.name": "interlock"})
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    tracer = HotTracer("interlock.runs")
    for run, parent in enumerate([None, set_span_in_context(NonRecordingSpan(REMOTE)), None]):
        with tracer.start_as_current_span(
            "invoke_workflow g", context=parent, attributes={"interlock.run_id": f"run-{run}"}
        ) as root:
            for step, size in enumerate((0, 36, 127, 128, 300, 20_000), start=1):
                node = tracer.start_child(
                    f"node n{step}",
                    {
                        "interlock.node": f"n{step}",
                        "interlock.step": step * 99,
                        "interlock.task_id": "t" * size,
                    },
                )
                edge = {"from": f"n{step - 1}", "to": f"n{step}", "interlock.step": step}
                root.add_trusted_event("edge", edge, ("edge", f"n{step - 1}", f"n{step}", step))  # type: ignore[attr-defined]
                node.set_trusted("interlock.checkpoint_id", f"cp-{run}-{step}")  # type: ignore[attr-defined]
                node.set_trusted("flag", True if step % 2 else 1)  # type: ignore[attr-defined]
                node.end()
            root.set_attribute("interlock.run.status", "success")
    spans = memory.get_finished_spans()
    assert len(spans) == 21
    assert ExportTraceServiceRequest.FromString(otlp.encode_spans(spans)) == sdk_encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(otlp.encode_spans(spans)) == sdk_encode_spans(spans)


def test_cached_events_keep_their_value_types() -> None:
    """``True``, ``1`` and ``1.0`` are equal as dict keys; their encodings differ."""
    provider, memory = memory_provider({"service.name": "interlock"})
    with provider.get_tracer("t").start_as_current_span("s") as span:
        for value in (True, 1, 1.0, True):
            span.add_event("same", {"v": value})
    spans = memory.get_finished_spans()
    request = ExportTraceServiceRequest.FromString(otlp.encode_spans(spans))
    values = [e.attributes[0].value for e in request.resource_spans[0].scope_spans[0].spans[0].events]
    assert [v.WhichOneof("value") for v in values] == [
        "bool_value",
        "int_value",
        "double_value",
        "bool_value",
    ]
    assert request == sdk_encode_spans(spans)
