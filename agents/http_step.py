"""Tool steps that call outside systems over HTTP: one helper, the same rules everywhere.

- A timeout per attempt (``timeout_s``), enforced on the whole attempt, not per read.
- Retries with exponential backoff and jitter on transient failures only: connection
  errors, timeouts, 429 and 5xx. Any other answer — a 2xx, or a 4xx such as a declined
  card or an item out of stock — is the system's answer and goes back to the step as is.
- An ``Idempotency-Key`` header derived from (thread id, task id, step name). LangGraph
  re-executes a node after a crash with the same task id, so the retry of an attempt and
  the re-execution of a step send the same key, and the system applies it once.
- One span per call, ``execute_tool <name>`` (OpenInference kind ``TOOL``), with the
  method, URL, status, attempts and key; each failed attempt is an event on it.

:func:`http_step` is for calls that change something: it runs inside
:func:`~agents.tools.effect_once`, so the answer is recorded per task, a re-executed step
gets the recorded answer without calling again, and a worker that lost its run is fenced
out before it acts. :func:`http_read` is for reads: no key, no record.

```
TransientError
└── SystemUnavailable   no usable answer within the attempts; says which key was sent,
                        so a compensation can replay the call to learn what happened
```
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from langgraph.runtime import Runtime
from opentelemetry import trace
from opentelemetry.trace import Span
from pydantic import BaseModel

from agents.context import Context
from agents.tools import effect_once, tool_span_attributes
from core.errors import TransientError

_tracer = trace.get_tracer("interlock.agents")

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

IDEMPOTENCY_HEADER = "Idempotency-Key"


class SystemUnavailable(TransientError):
    """An outside system gave no usable answer (connection error, timeout, 429, 5xx) in
    any of the attempts. Whether it applied the call is unknown: ``idempotency_key`` is the
    key sent, and replaying the call with it tells (the system answers as the first time)."""

    def __init__(self, message: str, *, idempotency_key: str | None, reason: str) -> None:
        super().__init__(message, idempotency_key=idempotency_key, reason=reason)
        self.idempotency_key = idempotency_key
        self.reason = reason


@dataclass(frozen=True)
class Retry:
    """How hard one call tries."""

    attempts: int = 4
    timeout_s: float = 2.0
    """Per attempt."""
    backoff_s: float = 0.1
    """Delay before the second attempt; doubled for each further one (before jitter)."""
    max_backoff_s: float = 2.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Sleep after failed attempt ``attempt`` (1-based): exponential with "equal
        jitter" (between half and all of it), so clients that failed together spread out;
        a server's ``Retry-After`` is honoured up to ``max_backoff_s``."""
        if retry_after is not None:
            return min(self.max_backoff_s, max(0.0, retry_after))
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


class HttpAnswer(BaseModel):
    """What the system answered (any status but 429 and 5xx)."""

    status: int
    body: Any
    attempts: int
    idempotency_key: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def idempotency_key(thread_id: str, task_id: str, name: str) -> str:
    """The key a step sends: the same for every attempt and every re-execution of the task."""
    return f"{thread_id}:{task_id}:{name}"


def _transient(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"text": response.text[:500]}


async def request(
    base_url: str,
    method: Method,
    path: str,
    *,
    json: Any = None,
    key: str | None = None,
    retry: Retry = Retry(),
    span: Span | None = None,
) -> HttpAnswer:
    """One call with the rules above; ``key`` goes out as ``Idempotency-Key``.

    Raises:
        SystemUnavailable: every attempt failed transiently.
    """
    span = span or trace.get_current_span()
    headers = {IDEMPOTENCY_HEADER: key} if key else {}
    span.set_attributes({"http.request.method": method, "url.full": base_url.rstrip("/") + path})
    if key:
        span.set_attribute("interlock.idempotency_key", key)
    reason = "no attempt"
    async with httpx.AsyncClient(base_url=base_url, timeout=retry.timeout_s) as client:
        for attempt in range(1, retry.attempts + 1):
            retry_after = None
            try:
                async with asyncio.timeout(retry.timeout_s):
                    response = await client.request(method, path, json=json, headers=headers)
            except (TimeoutError, httpx.TimeoutException):
                reason = f"timeout after {retry.timeout_s} s"
            except httpx.TransportError as e:
                reason = f"{type(e).__name__}: {e}"[:200]
            else:
                if not _transient(response.status_code):
                    span.set_attributes(
                        {
                            "http.response.status_code": response.status_code,
                            "interlock.http.attempts": attempt,
                        }
                    )
                    return HttpAnswer(
                        status=response.status_code,
                        body=_body(response),
                        attempts=attempt,
                        idempotency_key=key,
                    )
                reason = f"http {response.status_code}"
                retry_after = _retry_after(response)
            span.add_event("attempt failed", {"attempt": attempt, "reason": reason})
            if attempt < retry.attempts:
                await asyncio.sleep(retry.delay(attempt, retry_after))
    span.set_attribute("interlock.http.attempts", retry.attempts)
    raise SystemUnavailable(
        f"{method} {path}: {reason} (after {retry.attempts} attempts)", idempotency_key=key, reason=reason
    )


async def http_step(
    runtime: Runtime[Context],
    name: str,
    method: Method,
    path: str,
    *,
    json: Any = None,
    retry: Retry = Retry(),
    key: str | None = None,
    base_url: str | None = None,
) -> HttpAnswer:
    """A call that changes something, made once per (thread, task, ``name``).

    ``key`` overrides the derived idempotency key: a compensation replays an earlier
    step's call with that step's key to learn whether it was applied.

    Raises:
        SystemUnavailable: the system could not be reached; nothing is recorded, so the
            step's next execution tries again with the same key.
    """
    info = runtime.execution_info
    if info is None:
        raise RuntimeError(f"tool step '{name}' must run inside a graph node with a checkpointer")
    sent = key or idempotency_key(info.thread_id or "-", info.task_id, name)
    url = base_url or runtime.context.demo_systems_url

    async def act(_record_key: str) -> dict[str, Any]:
        answer = await request(url, method, path, json=json, key=sent, retry=retry)
        return answer.model_dump(mode="json")

    return HttpAnswer.model_validate(await effect_once(runtime, name, act))


async def http_read(
    runtime: Runtime[Context],
    name: str,
    path: str,
    *,
    retry: Retry = Retry(),
    base_url: str | None = None,
) -> HttpAnswer:
    """A read (``GET``): retried like any call, not recorded, no idempotency key."""
    info = runtime.execution_info
    thread_id = (info.thread_id if info else None) or "-"
    with _tracer.start_as_current_span(
        f"execute_tool {name}", attributes=tool_span_attributes(name, thread_id)
    ) as span:
        return await request(
            base_url or runtime.context.demo_systems_url, "GET", path, retry=retry, span=span
        )
