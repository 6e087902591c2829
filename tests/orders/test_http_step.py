"""The HTTP step helper (``agents/http_step.py``) against the real demo systems process:
which failures are retried, with which key, for how long, and what the span records."""

from __future__ import annotations

import time
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.http_step import Retry, SystemUnavailable, idempotency_key, request
from core.redis import free_port
from tests.demo_systems import DemoSystemsProcess

FAST = Retry(attempts=4, timeout_s=1.0, backoff_s=0.02, max_backoff_s=0.1)


def _reserve(order_id: str) -> dict[str, object]:
    return {"order_id": order_id, "sku": "sku-pen", "qty": 1}


def test_backoff_grows_with_jitter_up_to_its_cap_and_honours_retry_after() -> None:
    retry = Retry(backoff_s=0.1, max_backoff_s=1.0)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [retry.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, delays)
        assert len(set(delays)) > 1  # jittered
    assert retry.delay(1, retry_after=0.5) == 0.5
    assert retry.delay(1, retry_after=30) == 1.0
    assert idempotency_key("t", "task", "reserve_item") == "t:task:reserve_item"


async def test_transient_failures_are_retried_with_the_same_key(
    demo: DemoSystemsProcess, spans: InMemorySpanExporter
) -> None:
    order_id, key = f"o-{uuid.uuid4().hex[:8]}", f"k-{uuid.uuid4().hex}"
    demo.faults({"endpoint": "inventory.reserve", "order_id": order_id, "errors": 2, "error_status": 503})
    demo.faults({"endpoint": "payments.authorize", "order_id": order_id, "errors": 1, "error_status": 429})
    with trace.get_tracer("test").start_as_current_span("execute_tool reserve_item"):
        answer = await request(
            demo.url, "POST", "/inventory/reservations", json=_reserve(order_id), key=key, retry=FAST
        )
    assert answer.status == 201 and answer.attempts == 3 and answer.idempotency_key == key
    assert demo.idempotency()[key] | {"body": None} == {
        "endpoint": "inventory.reserve",
        "order_id": order_id,
        "requests": 3,
        "applied": 1,
        "status": 201,
        "body": None,
    }
    [span] = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["interlock.idempotency_key"] == key
    assert span.attributes["http.response.status_code"] == 201
    assert span.attributes["interlock.http.attempts"] == 3
    assert [e.attributes["reason"] for e in span.events if e.attributes] == ["http 503", "http 503"]

    paid = await request(
        demo.url,
        "POST",
        "/payments/authorizations",
        json={"order_id": order_id, "customer_id": "c-001", "amount": 10.0},
        key=key + "-pay",
        retry=FAST,
    )
    assert paid.status == 201 and paid.attempts == 2  # 429 is retried too


async def test_a_4xx_is_an_answer_and_never_retried(demo: DemoSystemsProcess) -> None:
    order_id, key = f"o-{uuid.uuid4().hex[:8]}", f"k-{uuid.uuid4().hex}"
    demo.faults({"endpoint": "payments.authorize", "order_id": order_id, "decline": True})
    body = {"order_id": order_id, "customer_id": "c-001", "amount": 10.0}
    answer = await request(demo.url, "POST", "/payments/authorizations", json=body, key=key, retry=FAST)
    assert answer.status == 402 and answer.attempts == 1 and not answer.ok
    assert answer.body["error"] == "declined"
    again = await request(demo.url, "POST", "/payments/authorizations", json=body, key=key, retry=FAST)
    assert again.body == answer.body  # the same key gets the same answer
    assert demo.idempotency()[key]["requests"] == 2 and demo.idempotency()[key]["applied"] == 1


async def test_a_timeout_is_retried_and_the_same_key_gets_the_first_answer(demo: DemoSystemsProcess) -> None:
    order_id, key = f"o-{uuid.uuid4().hex[:8]}", f"k-{uuid.uuid4().hex}"
    demo.faults({"endpoint": "payments.authorize", "order_id": order_id, "timeouts": 1, "timeout_s": 3})
    body = {"order_id": order_id, "customer_id": "c-001", "amount": 10.0}
    started = time.monotonic()
    answer = await request(
        demo.url,
        "POST",
        "/payments/authorizations",
        json=body,
        key=key,
        retry=Retry(timeout_s=0.5, backoff_s=0.01),
    )
    assert 0.5 <= time.monotonic() - started < 2.5
    assert answer.status == 201 and answer.attempts == 2
    assert [p["payment_id"] for p in demo.order(order_id)["payments"]] == [answer.body["payment_id"]]


async def test_an_unreachable_system_is_unavailable_after_the_attempts() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(SystemUnavailable) as raised:
        await request(closed, "POST", "/x", json={}, key="k-1", retry=Retry(attempts=3, backoff_s=0.05))
    elapsed = time.monotonic() - started
    assert raised.value.retryable and raised.value.idempotency_key == "k-1"
    assert "ConnectError" in raised.value.reason and "after 3 attempts" in raised.value.message
    assert 0.05 <= elapsed < 2  # two backoffs of 25-50 ms and 50-100 ms
