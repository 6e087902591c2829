"""Webhooks through the real service and the stock ``langgraph-sdk`` client: every
run-creating route takes ``webhook``, refuses a bad one with 422 (writing nothing), and
the ended run is POSTed, signed with the secret ``interlock webhooks secret`` prints."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient

from runs.webhooks import verify_signature
from tests.fakes.webhook_receiver import Received, WebhookReceiver
from tests.service import ServiceProcess

TICKET = {"ticket": "technical: the app crashes on start", "customer_id": "c-001"}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    try:
        yield r
    finally:
        r.stop()


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        if result := await check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(0.05)


async def _one(receiver: WebhookReceiver, path: str) -> Received:
    async def check() -> list[Received]:
        return receiver.received(path)

    [request] = await until(check)
    return request


def _cli_secret(service: ServiceProcess) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "webhooks", "secret"],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


BAD = [
    ("ftp://example.com/hook", "http:// or https://"),
    ("example.com/hook", "http:// or https://"),
    ("http://", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("http://exa mple.com/", "without spaces"),
    ("http://example.com:99999/", "not a valid URL"),
]


async def test_a_bad_webhook_is_422_on_every_route_and_writes_nothing(http: httpx.AsyncClient) -> None:
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    threads_before = (await http.post("/threads/count", json={})).json()
    good = {"assistant_id": "support_triage", "input": TICKET}
    for url, message in BAD:
        body = {**good, "webhook": url}
        for route in (
            f"/threads/{tid}/runs", f"/threads/{tid}/runs/wait", f"/threads/{tid}/runs/stream",
            "/runs", "/runs/wait", "/runs/stream",
        ):  # fmt: skip
            response = await http.post(route, json=body)
            assert response.status_code == 422, (route, url, response.text)
            assert response.json()["error"] == "ValidationError"
            assert "webhook" in response.json()["detail"] and message in response.json()["detail"]
        response = await http.post("/runs/batch", json=[good, body])
        assert response.status_code == 422, response.text
        assert "webhook" in response.json()["detail"]
    response = await http.post(f"/threads/{tid}/runs", json={**good, "webhook": 42})
    assert response.status_code == 422
    assert (await http.get(f"/threads/{tid}/runs")).json() == []
    assert (await http.post("/threads/count", json={})).json() == threads_before


async def test_runs_of_every_kind_deliver_signed_webhooks(
    client: LangGraphClient, receiver: WebhookReceiver, service: ServiceProcess
) -> None:
    secret = _cli_secret(service)
    assert secret.startswith("whsec_")
    assert _cli_secret(service) == secret  # made once, then kept

    thread = await client.threads.create()
    tid = thread["thread_id"]
    values = await client.runs.wait(tid, "support_triage", input=TICKET, webhook=receiver.url + "/wait")
    run = await client.runs.create(tid, "support_triage", input=TICKET, webhook=receiver.url + "/create")
    async for _ in client.runs.stream(None, "support_triage", input=TICKET, webhook=receiver.url + "/stream"):
        pass
    stateless = await client.runs.wait(
        None, "support_triage", input=TICKET, webhook=receiver.url + "/stateless"
    )
    [batch] = await client.runs.create_batch(
        [{"assistant_id": "support_triage", "input": TICKET, "webhook": receiver.url + "/batch"}]
    )

    waited = await _one(receiver, "/wait")
    body = waited.json()
    assert body["thread_id"] == tid and body["status"] == "success"
    assert body["values"] == values and body["values"]["route"] == "technical"
    assert body["kwargs"]["webhook"] == receiver.url + "/wait"
    assert waited.headers["x-interlock-delivery"] == body["run_id"]
    for path in ("/wait", "/create", "/stream", "/stateless", "/batch"):
        request = await _one(receiver, path)
        assert verify_signature(secret, request.headers["x-interlock-signature"], request.body), path
        assert request.headers["x-interlock-event"] == "run.completed"
        assert request.json()["status"] == "success", path
    assert (await _one(receiver, "/stateless")).json()["values"] == stateless
    assert (await _one(receiver, "/batch")).json()["run_id"] == batch["run_id"]
    assert (await _one(receiver, "/create")).json()["run_id"] == run["run_id"]

    async def delivered() -> dict[str, Any] | None:
        record: Any = await client.runs.get(tid, run["run_id"])
        found: dict[str, Any] | None = record.get("webhook_delivery")
        return found if found and found["status"] == "delivered" else None

    assert await until(delivered) == {"status": "delivered", "attempts": 1, "last_error": None}
