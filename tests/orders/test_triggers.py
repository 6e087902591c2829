"""``POST /triggers/{name}``: signed events start runs or resume the run waiting for them,
each event id once; against the real service (``wait_graph`` waits for ``test.ping``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from langgraph_sdk.client import LangGraphClient

from api.routes.triggers import SIGNATURE_HEADER
from runs.webhooks import sign
from tests.api.support import expect_error
from tests.demo_systems import DemoSystemsProcess
from tests.orders.conftest import ORDER_SECRET, PING_SECRET, finished, waiting


async def _send(
    http: httpx.AsyncClient,
    name: str,
    event: dict[str, Any],
    secret: str | None,
    *,
    tamper: bool = False,
    at: int | None = None,
) -> httpx.Response:
    body = json.dumps(event).encode()
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, body + (b" " if tamper else b""), at)
    # No API key: triggers authenticate by signature.
    return await http.post(f"/triggers/{name}", content=body, headers={**headers, "x-api-key": ""})


def _ping(key: str, event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or f"evt-{uuid.uuid4().hex[:8]}", "type": "test.ping", "data": {"key": key}}


async def _wait_for(client: LangGraphClient, key: str, deadline_s: float | None = None) -> str:
    thread = await client.threads.create()
    await client.runs.create(thread["thread_id"], "wait_graph", input={"key": key, "deadline_s": deadline_s})
    return str(thread["thread_id"])


async def _got(client: LangGraphClient, thread_id: str) -> dict[str, Any]:
    for _ in range(200):
        thread = await client.threads.get(thread_id)
        values: Any = thread.get("values") or {}
        if thread["status"] == "idle" and "got" in values:
            return dict(values["got"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"thread {thread_id} did not get its event: {thread}")


async def test_a_missing_or_wrong_signature_is_401_and_starts_nothing(
    http: httpx.AsyncClient, client: LangGraphClient
) -> None:
    before = len(await client.http.get("/runs", params={"limit": 1000}))
    event = {"id": "evt-unsigned", "type": "order.created", "data": {}}
    assert "X-Interlock-Signature" in expect_error(await _send(http, "order-created", event, None), 401)
    expect_error(await _send(http, "order-created", event, ORDER_SECRET, tamper=True), 401)
    expect_error(await _send(http, "order-created", event, PING_SECRET), 401)  # another trigger's secret
    stale = int(time.time()) - 600  # a captured request replayed ten minutes later
    assert "stale" in expect_error(await _send(http, "order-created", event, ORDER_SECRET, at=stale), 401)
    expect_error(await _send(http, "no-such-trigger", event, ORDER_SECRET), 404)
    # Signed, but not an event this trigger takes, or not an event at all: 422.
    wrong = {"id": "evt-wrong", "type": "order.cancelled", "data": {}}
    assert "order.created" in expect_error(await _send(http, "order-created", wrong, ORDER_SECRET), 422)
    expect_error(await _send(http, "order-created", {"type": "order.created"}, ORDER_SECRET), 422)
    # Signed but the data does not fit the graph's input: nothing started either.
    misfit = {"id": "evt-misfit", "type": "order.created", "data": {"order_id": "o-1"}}
    expect_error(await _send(http, "order-created", misfit, ORDER_SECRET), 422)
    assert len(await client.http.get("/runs", params={"limit": 1000})) == before


async def test_a_start_trigger_starts_one_order_per_event_id(
    http: httpx.AsyncClient, client: LangGraphClient, demo: DemoSystemsProcess
) -> None:
    order = {
        "order_id": f"o-{uuid.uuid4().hex[:8]}",
        "customer_id": "c-002",
        "items": [{"sku": "sku-bag", "qty": 1}],
        "amount": 49.0,
    }
    event = {"id": f"evt-{uuid.uuid4().hex[:8]}", "type": "order.created", "data": order}
    first = await _send(http, "order-created", event, ORDER_SECRET)
    assert first.status_code == 202, first.text
    started = first.json()
    assert started["outcome"] == "started" and started["duplicate"] is False
    again = await _send(http, "order-created", event, ORDER_SECRET)
    assert again.status_code == 202
    assert again.json() == {**started, "duplicate": True}

    final = await finished(client, started["thread_id"])
    assert final["status"] == "fulfilled"
    runs = await client.runs.list(started["thread_id"])
    assert len(runs) == 2  # the order and its settlement, not a second order
    assert {r["run_id"] for r in runs} >= {started["run_id"]}
    first_run = next(r for r in runs if r["run_id"] == started["run_id"])
    assert first_run["metadata"]["trigger"] == "order-created"
    assert len(demo.order(order["order_id"])["payments"]) == 1


async def test_a_resume_trigger_resumes_the_waiting_run_exactly_once(
    http: httpx.AsyncClient, client: LangGraphClient
) -> None:
    key = f"k-{uuid.uuid4().hex[:8]}"
    tid = await _wait_for(client, key)
    state = await waiting(client, tid, "wait")
    assert state["interrupts"][0]["value"]["event"] == "test.ping"

    event = _ping(key, "evt-first")
    first = await _send(http, "ping", event, PING_SECRET)
    assert first.status_code == 202 and first.json()["outcome"] == "resumed", first.text
    assert first.json()["thread_id"] == tid
    duplicate = await _send(http, "ping", event, PING_SECRET)
    assert duplicate.json()["duplicate"] is True and duplicate.json()["run_id"] == first.json()["run_id"]
    other = await _send(http, "ping", _ping(key, "evt-second"), PING_SECRET)
    assert other.status_code == 202 and other.json()["outcome"] == "already_resolved"

    got = await _got(client, tid)
    assert got["event_id"] == "evt-first" and got["via"] == "trigger:ping"
    assert len(await client.runs.list(tid)) == 2


async def test_racing_deliveries_resume_a_waiting_run_once(
    http: httpx.AsyncClient, client: LangGraphClient
) -> None:
    key = f"k-{uuid.uuid4().hex[:8]}"
    tid = await _wait_for(client, key)
    await waiting(client, tid, "wait")
    answers = await asyncio.gather(*(_send(http, "ping", _ping(key), PING_SECRET) for _ in range(8)))
    outcomes = sorted(a.json()["outcome"] for a in answers)
    assert outcomes == ["already_resolved"] * 7 + ["resumed"], outcomes
    await _got(client, tid)
    assert len(await client.runs.list(tid)) == 2


async def test_an_event_that_comes_before_its_waiter_is_kept_for_it(
    http: httpx.AsyncClient, client: LangGraphClient
) -> None:
    key = f"k-{uuid.uuid4().hex[:8]}"
    early = await _send(http, "ping", _ping(key, "evt-early"), PING_SECRET)
    assert early.status_code == 202 and early.json()["outcome"] == "stored"
    thread = await client.threads.create()
    result = await client.runs.wait(thread["thread_id"], "wait_graph", input={"key": key})
    assert isinstance(result, dict) and "__interrupt__" not in result  # it never had to wait
    assert result["got"]["event_id"] == "evt-early"


async def test_a_wait_past_its_deadline_is_resumed_by_the_reconcile_sweep(client: LangGraphClient) -> None:
    key = f"k-{uuid.uuid4().hex[:8]}"
    tid = await _wait_for(client, key, deadline_s=0.3)
    await waiting(client, tid, "wait")
    await asyncio.sleep(0.4)
    sweep = await client.runs.wait(None, "reconcile_payments", input={"event": "test.ping"})
    assert isinstance(sweep, dict)
    assert [(r["key"], r["thread_id"], r["outcome"]) for r in sweep["resumed"]] == [(key, tid, "resumed")]
    got = await _got(client, tid)
    assert got["event"] == "deadline.passed" and got["by"] == "reconcile_payments"


async def test_signed_garbage_is_a_422_never_a_5xx(http: httpx.AsyncClient) -> None:
    for body in (b"not json", b"[]", b'{"id": "x", "data": 5}', b'{"id": "", "type": "test.ping"}', b"{}"):
        headers = {SIGNATURE_HEADER: sign(PING_SECRET, body), "content-type": "application/json"}
        answer = await http.post("/triggers/ping", content=body, headers=headers)
        assert answer.status_code == 422, (body, answer.text)
    no_key = json.dumps({"id": "evt-nokey", "type": "test.ping", "data": {"other": 1}}).encode()
    headers = {SIGNATURE_HEADER: sign(PING_SECRET, no_key), "content-type": "application/json"}
    assert "data.key" in expect_error(await http.post("/triggers/ping", content=no_key, headers=headers), 422)
