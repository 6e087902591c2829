"""TEST DOUBLE — a fake OpenAI-compatible chat server. Not a model; never use it in production.

It speaks the real wire protocol (``POST /v1/chat/completions`` → a ``chat.completion``
JSON document), so tests exercise the real ``openai`` client, real HTTP and real timeouts.
It runs ``http.server.ThreadingHTTPServer`` in a background thread, independent of any
asyncio loop, and can run as its own process for end-to-end tests::

    python -m tests.fakes.openai_server --port 8099    # prints its base URL, serves until killed

Default answer: it reads the JSON schema it was sent (``response_format.json_schema.schema``
in OpenAI's dialect, ``response_format.schema`` in llama-cpp-python's) and replies
``{"branch": X}``, X being the first enum value that appears as a word in the last user
message (case-insensitive), else the last enum value. So a ticket that says "refund"
routes to ``refund``, deterministically.

Scripted faults, consumed one per chat request before the default resumes
(``POST /_control/script`` with a JSON list):

- ``{"kind": "garbage"}``: non-JSON content
- ``{"kind": "unknown_branch"}``: ``{"branch": "no_such_branch"}``
- ``{"kind": "empty"}``: empty content
- ``{"kind": "status", "status": 429}``: an OpenAI-style error body with that HTTP status
- ``{"kind": "delay", "seconds": 1.0}``: sleep, then answer normally (for client timeouts)
- ``{"kind": "refusal"}``: ``message.refusal`` set, ``content`` null
- ``{"kind": "length"}``: truncated content with ``finish_reason: "length"``
- ``{"kind": "branch", "value": "x", "probs": {"x": 0.6, "y": 0.4}}``: ``{"branch": "x"}``, whatever the
  schema says; ``probs`` (optional) sets the log-probabilities reported at the branch name

``POST /_control/reset`` clears the script and the request log; ``GET /_control/requests``
returns the chat request bodies received so far; ``GET /v1/models`` lists one model.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAKE_MODEL = "fake-model"
"""Model name the fake reports when a request names none."""

_GARBAGE = "Sure! The best branch here is probably the first one."


class _State:
    """What the fake remembers: the fault script and the requests received. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[dict[str, Any]] = deque()
        self._requests: list[Any] = []

    def set_script(self, behaviours: list[dict[str, Any]]) -> None:
        with self._lock:
            self._script = deque(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()

    def record(self, body: Any) -> dict[str, Any] | None:
        """Log one chat request and take the next scripted behaviour, if any."""
        with self._lock:
            self._requests.append(body)
            return self._script.popleft() if self._script else None

    def requests(self) -> list[Any]:
        with self._lock:
            return list(self._requests)


def _enum_of(body: dict[str, Any]) -> list[str]:
    """The ``branch`` enum of the schema in either structured-output dialect, or ``[]``."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return []
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
    else:
        schema = fmt.get("schema")
    if not isinstance(schema, dict):
        return []
    enum = schema.get("properties", {}).get("branch", {}).get("enum", [])
    return [str(value) for value in enum] if isinstance(enum, list) else []


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": …}, …]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def default_branch(body: dict[str, Any]) -> str | None:
    """The branch the fake picks for ``body`` when nothing is scripted (None: no schema)."""
    enum = _enum_of(body)
    if not enum:
        return None
    text = _last_user_text(body)
    for name in enum:
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE):
            return name
    return enum[-1]


def _count_tokens(text: str) -> int:
    """A crude, deterministic token count: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _logprobs(body: dict[str, Any], content: str, probs: dict[str, float] | None) -> dict[str, Any]:
    """Per-token log-probabilities shaped like llama-server's: the JSON around the branch
    name is one token each side, and at the name the alternatives are the candidates.

    ``probs`` gives each candidate's probability there; by default the chosen branch gets
    0.9 and the other candidates share 0.1.
    """
    match = re.fullmatch(r'(\{"branch": ")(.*)("\})', content)
    if match is None:
        return {"content": [{"token": content, "logprob": -0.105, "bytes": None, "top_logprobs": []}]}
    head, value, tail = match.groups()
    enum = _enum_of(body) or [value]
    if probs is None:
        others = [c for c in enum if c != value]
        probs = {value: 0.9, **{c: 0.1 / len(others) for c in others}} if others else {value: 1.0}
    top = [{"token": c, "logprob": math.log(p), "bytes": None} for c, p in probs.items() if p > 0]
    chosen = probs.get(value, 0.5)
    return {
        "content": [
            {"token": head, "logprob": -0.01, "bytes": None, "top_logprobs": []},
            {"token": value, "logprob": math.log(chosen), "bytes": None, "top_logprobs": top},
            {"token": tail, "logprob": -0.01, "bytes": None, "top_logprobs": []},
        ]
    }


def _completion(
    body: dict[str, Any],
    *,
    content: str | None,
    finish_reason: str = "stop",
    refusal: str | None = None,
    probs: dict[str, float] | None = None,
) -> dict[str, Any]:
    prompt = " ".join(_text_of(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict))
    completion_tokens = _count_tokens(content or refusal or "")
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": refusal},
        "finish_reason": finish_reason,
        "logprobs": None,
    }
    if body.get("logprobs") and content:
        choice["logprobs"] = _logprobs(body, content, probs)
    prompt_tokens = _count_tokens(prompt)
    return {
        "id": f"chatcmpl-fake-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or FAKE_MODEL,
        "system_fingerprint": "fake",
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _answer(body: dict[str, Any], behaviour: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON document for one chat request."""
    kind = behaviour.get("kind") if behaviour else None
    if kind == "status":
        assert behaviour is not None
        status = int(behaviour.get("status", 500))
        error = {"message": f"fake error {status}", "type": "fake_error", "code": str(status)}
        return status, {"error": error}
    if kind == "delay":
        assert behaviour is not None
        time.sleep(float(behaviour.get("seconds", 1.0)))
        kind = None
    if kind == "garbage":
        return 200, _completion(body, content=_GARBAGE)
    if kind == "unknown_branch":
        return 200, _completion(body, content='{"branch": "no_such_branch"}')
    if kind == "empty":
        return 200, _completion(body, content="")
    if kind == "refusal":
        return 200, _completion(body, content=None, refusal="I can't help with that.")
    if kind == "length":
        return 200, _completion(body, content='{"branch": "', finish_reason="length")
    if kind == "branch":
        assert behaviour is not None
        return 200, _completion(
            body, content=json.dumps({"branch": behaviour.get("value")}), probs=behaviour.get("probs")
        )
    branch = default_branch(body)
    if branch is None:
        return 200, _completion(body, content="I am not sure what you want me to say.")
    return 200, _completion(body, content=json.dumps({"branch": branch}))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end on their own

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: test output is for test failures

    def _send(self, status: int, document: Any) -> None:
        data = json.dumps(document).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timed out) first

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            model = {"id": FAKE_MODEL, "object": "model", "created": 0, "owned_by": "fake"}
            self._send(200, {"object": "list", "data": [model]})
        elif self.path == "/_control/requests":
            self._send(200, self.server.state.requests())
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        try:
            body = self._body()
        except ValueError:
            self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request"}})
            return
        state = self.server.state
        if self.path == "/v1/chat/completions":
            if not isinstance(body, dict):
                self._send(400, {"error": {"message": "expected an object", "type": "invalid"}})
                return
            status, document = _answer(body, state.record(body))
            self._send(status, document)
        elif self.path == "/_control/script":
            if not isinstance(body, list) or not all(isinstance(b, dict) for b in body):
                self._send(400, {"error": {"message": "expected a list of objects"}})
                return
            state.set_script(body)
            self._send(200, {"scripted": len(body)})
        elif self.path == "/_control/reset":
            state.reset()
            self._send(200, {"reset": True})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler sleeping in a "delay" must not block stop()

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.state = _State()


class FakeOpenAI:
    """A running fake server in this process. Stop it with :meth:`stop` (or ``with``)."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        """Root URL, for the ``/_control/*`` endpoints."""
        self.base_url = f"{self.url}/v1"
        """What an OpenAI client takes as ``base_url``."""
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def script(self, behaviours: list[dict[str, Any]]) -> None:
        """Replace the fault script; each chat request consumes one behaviour."""
        self._server.state.set_script(behaviours)

    def reset(self) -> None:
        """Forget the script and the requests received."""
        self._server.state.reset()

    def requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat requests received since the last reset, oldest first."""
        return self._server.state.requests()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_fake_openai(host: str = "127.0.0.1", port: int = 0) -> FakeOpenAI:
    """Start a fake server on ``host:port`` (0: a free port) in a background thread."""
    return FakeOpenAI(_Server((host, port)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server (test double).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    args = parser.parse_args(argv)
    server = _Server((args.host, args.port))
    host, port = server.server_address[:2]
    # The parent process reads this line to learn the port (useful with --port 0).
    print(f"http://{host!s}:{port}/v1", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
