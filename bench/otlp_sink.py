"""A minimal OTLP/HTTP trace collector for benchmarks: decodes every export request and
counts what arrived, nothing else.

    python -m bench.otlp_sink PORT

``POST /v1/traces`` (protobuf, optionally gzip) answers 200 like a collector;
``GET /count`` returns ``{"spans", "roots", "nodes", "requests"}`` (``roots``: spans named
``invoke_workflow …``, ``nodes``: ``node …``), so a benchmark can check that every span it caused arrived. It runs
as a process of its own, as a collector would, so its CPU is not the service's.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_lock = threading.Lock()
_counts = {"spans": 0, "roots": 0, "nodes": 0, "requests": 0}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = [s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]
        with _lock:
            _counts["requests"] += 1
            _counts["spans"] += len(spans)
            _counts["roots"] += sum(1 for s in spans if s.name.startswith("invoke_workflow "))
            _counts["nodes"] += sum(1 for s in spans if s.name.startswith("node "))
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self) -> None:
        with _lock:
            reply = json.dumps(_counts).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Handler)
    print(f"otlp sink on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
