"""TEST DOUBLE — an HTTP server that receives webhooks and records them. Not a product.

A real ``http.server.ThreadingHTTPServer`` on a loopback port, in a background thread, so
the code under test makes real connections, gets real status codes and real timeouts.
It answers 200 by default; per path it can be scripted, one behaviour per request:

- ``{"status": 500}``: answer that status
- ``{"delay": 5.0}``: wait that long, then answer 200 (or ``"status"``)

``stop()`` closes the port (connections are refused) and ``start()`` opens it again on
the same port, for "the receiver is down".
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from core import jsonutil
from core.redis import free_port


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and what it was answered."""

    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes
    status: int

    def json(self) -> Any:
        return jsonutil.loads(self.body)


class WebhookReceiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[dict[str, Any]]] = {}
        self._default: dict[str, int] = {}
        self._received: list[Received] = []
        self._arrived: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                behaviour = receiver._next(self.path)
                if "delay" in behaviour:
                    time.sleep(behaviour["delay"])
                status = int(behaviour.get("status", receiver._default.get(self.path, 200)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver._received.append(Received(self.path, headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _next(self, path: str) -> dict[str, Any]:
        with self._lock:
            self._arrived.append(path)
            script = self._scripts.get(path)
            return script.popleft() if script else {}

    def script(self, path: str, behaviours: list[dict[str, Any]]) -> None:
        """Answer the next requests to ``path`` like this, one behaviour each."""
        with self._lock:
            self._scripts[path] = deque(behaviours)

    def answer(self, path: str, status: int) -> None:
        """Answer every unscripted request to ``path`` with ``status`` (default 200)."""
        with self._lock:
            self._default[path] = status

    def arrived(self, path: str) -> int:
        """Requests to ``path`` that arrived, including ones not answered yet."""
        with self._lock:
            return self._arrived.count(path)

    def received(self, path: str | None = None) -> list[Received]:
        """Requests answered so far (to ``path``, or all)."""
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]
