"""``order_fulfillment`` end to end: the real service, the real demo systems (their own
process, loopback), the real ``langgraph-sdk`` client, real Redis; the fake LLM decides
``risk_decision``. After every order, the demo systems' own books must agree: nothing held
or charged for an order that was not fulfilled, nothing applied twice."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import redis.asyncio as aredis
from langgraph_sdk.client import LangGraphClient

from core.ids import now_ms
from store.crons import CronStore
from tests.demo_systems import DemoSystemsProcess
from tests.fakes.openai_server import FakeOpenAI
from tests.orders.conftest import finished, waiting
from tests.service import ServiceProcess


def _order(
    customer: str = "c-001", amount: float = 120.0, items: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "order_id": f"o-{uuid.uuid4().hex[:10]}",
        "customer_id": customer,
        "items": items or [{"sku": "sku-mug", "qty": 2}, {"sku": "sku-tee", "qty": 1}],
        "amount": amount,
    }


async def _start(client: LangGraphClient, order: dict[str, Any], **config: Any) -> str:
    thread = await client.threads.create()
    await client.runs.create(
        thread["thread_id"],
        "order_fulfillment",
        input=order,
        config={"configurable": config} if config else None,
    )
    return str(thread["thread_id"])


async def _approvals_of(http: httpx.AsyncClient, thread_id: str) -> list[dict[str, Any]]:
    pending = await http.get("/approvals", params={"status": "pending", "graph_id": "order_fulfillment"})
    return [a for a in pending.json() if a["thread_id"] == thread_id]


def _books_agree(demo: DemoSystemsProcess, order: dict[str, Any], fulfilled: bool) -> dict[str, Any]:
    """The demo systems' state for the order: consistent with its outcome, nothing twice."""
    books = demo.order(order["order_id"])
    statuses = [r["status"] for r in books["reservations"]]
    payments = [p["status"] for p in books["payments"]]
    if fulfilled:
        assert statuses == ["shipped"] * len(order["items"]), books
        assert payments == ["captured"] and len(books["shipments"]) == 1, books
    else:
        assert "held" not in statuses and "shipped" not in statuses, books
        assert not {"captured", "authorized"} & set(payments), books
        assert books["shipments"] == [], books
    # One reservation per line at most, one payment at most: no step ran twice under a new key.
    assert len(books["reservations"]) <= len(order["items"]) and len(payments) <= 1, books
    assert all(entry["applied"] <= 1 for entry in books["idempotency"].values()), books
    return books


async def test_happy_path_runs_the_branches_in_parallel_and_joins_after_the_slowest(
    client: LangGraphClient, demo: DemoSystemsProcess, fake_llm: FakeOpenAI
) -> None:
    order = _order()
    demo.faults({"endpoint": "payments.authorize", "order_id": order["order_id"], "latency_ms": 700})
    tid = await _start(client, order)
    final = await finished(client, tid)

    assert final["status"] == "fulfilled" and final.get("reason") is None
    assert final["decision"]["chosen"] == "approve" and final["decision"]["method"] == "llm"
    assert final["fraud"]["level"] == "low"
    assert [r["status"] for r in final["reservations"]] == ["shipped", "shipped"]
    assert final["payment"]["status"] == "captured" and final["payment"]["settled"] is True
    assert final["settlement"]["status"] == "settled"
    assert final["shipment"]["shipment_id"].startswith("shp-")
    assert final["compensations"] == []
    assert "on its way" in final["notification"]["message"]

    branches = {b["branch"]: b for b in final["branches"]}
    assert set(branches) == {"reserve_item[0]", "reserve_item[1]", "fraud_score", "authorize_payment"}
    starts = [b["started_at"] for b in branches.values()]
    ends = [b["ended_at"] for b in branches.values()]
    assert max(starts) < min(ends), branches  # every branch was running while every other was
    slowest = branches["authorize_payment"]
    assert slowest["ended_at"] - slowest["started_at"] >= 700
    assert final["joined_at"] >= max(ends) == slowest["ended_at"]

    runs = await client.runs.list(tid)
    assert len(runs) == 2  # the order, then its resumption by the settlement event
    assert {r["status"] for r in runs} == {"interrupted", "success"}
    resumed = next(r for r in runs if r["status"] == "success")
    assert resumed["metadata"]["event"] == "payment.settled"
    _books_agree(demo, order, fulfilled=True)


async def test_out_of_stock_undoes_the_rest_in_reverse_order(
    client: LangGraphClient, demo: DemoSystemsProcess
) -> None:
    order = _order(items=[{"sku": "sku-mug", "qty": 1}, {"sku": "sku-hat", "qty": 3}])
    demo.out_of_stock("sku-hat")
    # The authorization finishes last, so it is undone first.
    demo.faults({"endpoint": "payments.authorize", "order_id": order["order_id"], "latency_ms": 300})
    final = await finished(client, await _start(client, order))

    assert final["status"] == "cancelled"
    assert final["reason"] == "out of stock: sku-hat"
    assert [c["action"] for c in final["compensations"]] == ["void_payment", "release_reservation"]
    assert final["compensations"][1]["reservation_id"] == final["reservations"][0]["reservation_id"]
    assert [r["status"] for r in final["reservations"]] == ["released", "out_of_stock"]
    assert final["payment"]["status"] == "voided"
    assert "decision" not in final or final["decision"] is None  # nothing after the join ran
    books = _books_agree(demo, order, fulfilled=False)
    assert [r["status"] for r in books["reservations"]] == ["released"]


async def test_a_declined_payment_releases_every_reservation(
    client: LangGraphClient, demo: DemoSystemsProcess
) -> None:
    order = _order()
    demo.faults({"endpoint": "payments.authorize", "order_id": order["order_id"], "decline": True})
    final = await finished(client, await _start(client, order))

    assert final["status"] == "cancelled"
    assert final["reason"] == "payment declined: card declined"
    assert [c["action"] for c in final["compensations"]] == ["release_reservation"] * 2
    # Reverse order of completion (ties: the later journal entry first).
    done = sorted(enumerate(final["done"]), key=lambda e: (e[1]["at"], e[0]), reverse=True)
    assert [c["reservation_id"] for c in final["compensations"]] == [d["reservation_id"] for _, d in done]
    assert final["payment"]["status"] == "declined"
    books = _books_agree(demo, order, fulfilled=False)
    assert [p["status"] for p in books["payments"]] == ["declined"]


async def test_the_model_rejects_a_risky_order(client: LangGraphClient, demo: DemoSystemsProcess) -> None:
    order = _order(customer="c-013")  # two chargebacks: the fraud check says reject
    final = await finished(client, await _start(client, order))

    assert final["fraud"]["level"] == "high" and final["fraud"]["suggestion"] == "reject"
    assert final["decision"]["chosen"] == "reject" and final["decision"]["method"] == "llm"
    assert final["status"] == "cancelled"
    assert final["reason"].startswith("rejected by the risk decision")
    actions = [c["action"] for c in final["compensations"]]
    assert sorted(actions) == ["release_reservation", "release_reservation", "void_payment"]
    _books_agree(demo, order, fulfilled=False)


async def test_a_reviewer_rejects_through_the_approvals_api(
    client: LangGraphClient, http: httpx.AsyncClient, demo: DemoSystemsProcess
) -> None:
    order = _order(amount=2000.0)  # medium risk: the fraud check suggests review
    tid = await _start(client, order)
    state = await waiting(client, tid, "review")
    assert state["values"]["route"] == "review"
    [approval] = await _approvals_of(http, tid)
    assert approval["action"] == "capture_payment" and approval["amount"] == 2000.0
    answer = await http.post(
        f"/approvals/{approval['approval_id']}/decision",
        json={"decision": "reject", "comment": "address looks odd"},
    )
    assert answer.status_code == 200, answer.text

    final = await finished(client, tid)
    assert final["status"] == "cancelled"
    assert final["reason"].startswith("rejected in review by") and "address looks odd" in final["reason"]
    assert sorted(c["action"] for c in final["compensations"]) == [
        "release_reservation",
        "release_reservation",
        "void_payment",
    ]
    _books_agree(demo, order, fulfilled=False)


async def test_a_reviewer_approves_and_the_order_ships(
    client: LangGraphClient, http: httpx.AsyncClient, demo: DemoSystemsProcess
) -> None:
    order = _order(amount=1500.0)
    tid = await _start(client, order)
    await waiting(client, tid, "review")
    [approval] = await _approvals_of(http, tid)
    answer = await http.post(f"/approvals/{approval['approval_id']}/decision", json={"decision": "approve"})
    assert answer.status_code == 200, answer.text
    final = await finished(client, tid)
    assert final["status"] == "fulfilled"
    _books_agree(demo, order, fulfilled=True)


async def test_a_settlement_that_never_comes_is_compensated_by_reconcile(
    client: LangGraphClient, demo: DemoSystemsProcess
) -> None:
    demo.settlement(mode="never")
    order = _order()
    tid = await _start(client, order, settlement_deadline_s=1)
    state = await waiting(client, tid, "await_settlement")
    [wait] = state["interrupts"]
    assert wait["value"]["type"] == "event" and wait["value"]["event"] == "payment.settled"
    assert wait["value"]["key"] == state["values"]["payment"]["payment_id"]
    assert wait["value"]["deadline_s"] == 1

    early = await client.runs.wait(None, "reconcile_payments", input={})
    assert isinstance(early, dict)
    assert tid not in [r["thread_id"] for r in early["resumed"]]  # its deadline has not passed yet
    await asyncio.sleep(1.2)
    sweep = await client.runs.wait(None, "reconcile_payments", input={})
    assert isinstance(sweep, dict)
    assert tid in [r["thread_id"] for r in sweep["resumed"]], sweep

    final = await finished(client, tid)
    assert final["status"] == "failed"
    assert "not settled within 1 s" in final["reason"]
    actions = [c["action"] for c in final["compensations"]]
    assert actions[0] == "refund_payment" and sorted(actions[1:]) == ["release_reservation"] * 2
    assert final["payment"]["status"] == "refunded"
    books = _books_agree(demo, order, fulfilled=False)
    assert [p["status"] for p in books["payments"]] == ["refunded"]

    again = await client.runs.wait(None, "reconcile_payments", input={})
    assert isinstance(again, dict)
    assert tid not in [r["thread_id"] for r in again["resumed"]]


async def test_the_scheduled_reconcile_compensates_a_stuck_order(
    client: LangGraphClient, demo: DemoSystemsProcess, redis_client: aredis.Redis, service: ServiceProcess
) -> None:
    """The cron line the README gives, fired through the cron scheduler (made due now)."""
    demo.settlement(mode="never")
    order = _order(items=[{"sku": "sku-cap", "qty": 1}])
    tid = await _start(client, order, settlement_deadline_s=0.5)
    await waiting(client, tid, "await_settlement")
    cron: Any = await client.crons.create("reconcile_payments", schedule="*/5 * * * *", input={})
    try:
        await asyncio.sleep(0.6)
        crons = CronStore(redis_client, prefix=service.env["INTERLOCK_KEY_PREFIX"])
        await crons.client.zadd(crons.due_key, {cron["cron_id"]: now_ms()}, xx=True)
        final = await finished(client, tid)
    finally:
        await client.crons.delete(cron["cron_id"])
    assert final["status"] == "failed" and final["settlement"]["status"] == "missed"
    assert [c["action"] for c in final["compensations"]] == ["refund_payment", "release_reservation"]
    _books_agree(demo, order, fulfilled=False)


async def test_a_settlement_delivered_twice_resumes_the_order_once(
    client: LangGraphClient, demo: DemoSystemsProcess
) -> None:
    demo.settlement(mode="twice", delay_s=0.2)
    order = _order()
    tid = await _start(client, order)
    final = await finished(client, tid)
    assert final["status"] == "fulfilled"
    await asyncio.sleep(0.5)  # the second delivery has come by now
    pid = final["payment"]["payment_id"]
    deliveries = [d for d in demo.state()["deliveries"] if d["event_id"] == f"evt-settled-{pid}"]
    assert [d["status"] for d in deliveries] == [202, 202]
    assert len(await client.runs.list(tid)) == 2
    _books_agree(demo, order, fulfilled=True)


async def test_transient_errors_succeed_on_retry_without_applying_twice(
    client: LangGraphClient, demo: DemoSystemsProcess
) -> None:
    order = _order(items=[{"sku": "sku-pen", "qty": 5}])
    demo.faults(
        {"endpoint": "inventory.reserve", "order_id": order["order_id"], "errors": 2, "error_status": 503},
        {"endpoint": "payments.capture", "order_id": order["order_id"], "errors": 1, "error_status": 500},
    )
    final = await finished(client, await _start(client, order))
    assert final["status"] == "fulfilled"
    books = _books_agree(demo, order, fulfilled=True)
    counts = {e["endpoint"]: (e["requests"], e["applied"]) for e in books["idempotency"].values()}
    assert counts["inventory.reserve"] == (3, 1)
    assert counts["payments.capture"] == (2, 1)


async def test_a_timeout_is_retried_with_the_same_key(
    client: LangGraphClient, demo: DemoSystemsProcess
) -> None:
    order = _order()
    # The payment system authorizes, then hangs past the step's 2 s timeout.
    demo.faults(
        {"endpoint": "payments.authorize", "order_id": order["order_id"], "timeouts": 1, "timeout_s": 5}
    )
    final = await finished(client, await _start(client, order))
    assert final["status"] == "fulfilled"
    books = _books_agree(demo, order, fulfilled=True)
    [authorize] = [e for e in books["idempotency"].values() if e["endpoint"] == "payments.authorize"]
    assert (authorize["requests"], authorize["applied"]) == (2, 1)  # one payment, answered twice


async def test_a_system_that_stays_down_fails_the_order_and_leaves_nothing_behind(
    client: LangGraphClient, demo: DemoSystemsProcess
) -> None:
    order = _order(items=[{"sku": "sku-cap", "qty": 1}])
    # More failures than the step's 4 attempts: the outcome is unknown. The compensation
    # replays the call with the same key (the 6th attempt gets through and reserves) and
    # then releases what that reserved.
    demo.faults({"endpoint": "inventory.reserve", "order_id": order["order_id"], "errors": 5})
    final = await finished(client, await _start(client, order))
    assert final["status"] == "failed"
    assert final["reason"].startswith("a system could not be used: sku-cap: http 503")
    assert sorted(c["action"] for c in final["compensations"]) == ["release_reservation", "void_payment"]
    books = _books_agree(demo, order, fulfilled=False)
    assert [r["status"] for r in books["reservations"]] == ["released"]


async def test_an_invalid_order_is_refused_before_anything_happens(
    client: LangGraphClient, demo: DemoSystemsProcess, http: httpx.AsyncClient
) -> None:
    order = _order(items=[{"sku": "sku-mug", "qty": 0}])
    final = await finished(client, await _start(client, order))
    assert final["status"] == "cancelled"
    assert final["reason"] == "invalid order: sku-mug: quantity must be positive"
    assert final["compensations"] == []
    assert demo.order(order["order_id"])["reservations"] == []
    # Input that does not fit the schema at all is a 422 before any run.
    thread = await http.post("/threads", json={})
    bad = await http.post(
        f"/threads/{thread.json()['thread_id']}/runs",
        json={"assistant_id": "order_fulfillment", "input": {"order_id": "x", "items": "many"}},
    )
    assert bad.status_code == 422, bad.text
