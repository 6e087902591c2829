"""The outside systems ``order_fulfillment`` calls — inventory, payments, shipping — as one
small HTTP service of their own: ``interlock demo-systems [--port 8125] [--data FILE]``.

It behaves like the real thing where it matters to a workflow:

- **State that outlives it**: stock, reservations, payments, shipments, the fault switches
  and the settlement outbox live in one JSON file, rewritten atomically (temporary file +
  rename) after every change and read back at start. ``GET /state`` shows all of it,
  ``GET /orders/{order_id}`` one order's part.
- **Idempotency keys**: a request with an ``Idempotency-Key`` it has answered before gets
  the first answer again and changes nothing. Every key's requests and applications are
  counted (``GET /_control/idempotency``), so a test can prove nothing was applied twice.
- **A settlement callback**: after a capture, the payment system settles the payment and
  posts a signed ``payment.settled`` event to the configured URL (an Interlock trigger):
  after ``delay_s``, once, twice (a duplicate delivery) or never, as switched. Deliveries
  are retried while the receiver is unreachable.
- **Fault switches** per endpoint (optionally only for one order), over HTTP
  (``POST /_control/faults``): added latency, n answers of 5xx (nothing applied), n
  timeouts (the change is applied, then the answer hangs past any client's timeout), a
  declined card; ``POST /_control/out-of-stock`` makes SKUs unavailable.

Endpoints (names used by the fault switches in brackets)::

    POST /inventory/reservations               {order_id, sku, qty}   [inventory.reserve]
    POST /inventory/reservations/{id}/release                         [inventory.release]
    GET  /payments/customers/{customer_id}     order history          [payments.history]
    POST /payments/authorizations              {order_id, customer_id, amount} [payments.authorize]
    POST /payments/{id}/capture | /void | /refund       [payments.capture|void|refund]
    POST /shipping/shipments                   {order_id, items, reservation_ids} [shipping.create]
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core import jsonutil
from graphs.order_fulfillment.demo_books import (
    SIGNATURE_HEADER,
    AuthorizeBody,
    DemoSystems,
    Endpoint,
    Fault,
    ReserveBody,
    SettlementSwitch,
    ShipBody,
    customer_history,
    fresh,
    sign,
)

__all__ = ["SIGNATURE_HEADER", "create_app", "sign"]

log = logging.getLogger("interlock.demo_systems")


async def _deliver_settlements(systems: DemoSystems) -> None:
    """Send due settlement events, retrying (with backoff) while the receiver is away."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            await asyncio.sleep(0.05)
            now = time.time()
            due = [item for item in systems.data["outbox"] if item["due"] <= now]
            for item in due:
                switch = systems.data["settlement"]
                event = item["event"]
                async with systems.lock:
                    payment = systems.data["payments"].get(event["data"]["payment_id"])
                    if payment is not None and not payment.get("settled"):
                        payment.update(settled=True, settled_at=now)
                        systems.save()
                if not switch.get("url"):
                    status: int | str = "no url"
                else:
                    body = jsonutil.dumps(event)
                    headers = {"content-type": "application/json"}
                    if switch.get("secret"):
                        headers[SIGNATURE_HEADER] = sign(switch["secret"], body)
                    try:
                        status = (await client.post(switch["url"], content=body, headers=headers)).status_code
                    except httpx.HTTPError as e:
                        status = f"{type(e).__name__}"
                async with systems.lock:
                    done = status == "no url" or (isinstance(status, int) and status < 500)
                    item["attempts"] += 1
                    systems.data["deliveries"].append(
                        {
                            "event_id": event["id"],
                            "status": status,
                            "at": time.time(),
                            "attempt": item["attempts"],
                        }
                    )
                    if done or item["attempts"] >= 30:
                        with contextlib.suppress(ValueError):
                            systems.data["outbox"].remove(item)
                    else:
                        item["due"] = time.time() + min(5.0, 0.2 * 2 ** item["attempts"])
                    systems.save()


def create_app(data: Path, *, callback_url: str | None = None, callback_secret: str | None = None) -> FastAPI:
    """The demo systems' HTTP API over the state in ``data``."""
    systems = DemoSystems(data)
    where = data.resolve()
    if callback_url is not None:
        systems.data["settlement"]["url"] = callback_url
    if callback_secret is not None:
        systems.data["settlement"]["secret"] = callback_secret

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        systems.save()
        sender = asyncio.create_task(_deliver_settlements(systems), name="settlements")
        log.info("demo systems ready; state in %s", where)
        try:
            yield
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    app = FastAPI(title="Interlock demo systems", lifespan=lifespan)
    app.state.systems = systems

    @app.get("/state")
    async def state() -> dict[str, Any]:
        settlement = {
            **systems.data["settlement"],
            "secret": "***" if systems.data["settlement"]["secret"] else None,
        }
        return {**systems.data, "settlement": settlement}

    @app.get("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, Any]:
        return systems.order(order_id)

    @app.get("/inventory/stock")
    async def stock() -> dict[str, Any]:
        return {"stock": systems.data["stock"], "out_of_stock": systems.data["out_of_stock"]}

    @app.post("/inventory/reservations")
    async def reserve(body: ReserveBody, request: Request) -> JSONResponse:
        return await systems.call(request, "inventory.reserve", body.order_id, lambda: systems.reserve(body))

    @app.post("/inventory/reservations/{rid}/release")
    async def release(rid: str, request: Request) -> JSONResponse:
        order_id = (systems.data["reservations"].get(rid) or {}).get("order_id")
        return await systems.call(request, "inventory.release", order_id, lambda: systems.release(rid))

    @app.get("/payments/customers/{customer_id}")
    async def history(customer_id: str) -> JSONResponse:
        fault = systems.fault("payments.history", None)
        if fault and fault["latency_ms"]:
            await asyncio.sleep(fault["latency_ms"] / 1000)
        async with systems.lock:
            if systems.spend("payments.history", None, "errors"):
                systems.save()
                return JSONResponse(
                    {"error": "injected"}, status_code=fault["error_status"] if fault else 503
                )
        return JSONResponse(customer_history(customer_id))

    @app.post("/payments/authorizations")
    async def authorize(body: AuthorizeBody, request: Request) -> JSONResponse:
        fault = systems.fault("payments.authorize", body.order_id)
        declined = bool(fault and fault["decline"])
        return await systems.call(
            request, "payments.authorize", body.order_id, lambda: systems.authorize(body, declined)
        )

    def _payment_route(endpoint: Endpoint, rule: Callable[[str], tuple[int, dict[str, Any]]]) -> Any:
        async def route(pid: str, request: Request) -> JSONResponse:
            order_id = (systems.data["payments"].get(pid) or {}).get("order_id")
            return await systems.call(request, endpoint, order_id, lambda: rule(pid))

        return route

    payment_actions: dict[str, tuple[Endpoint, Callable[[str], tuple[int, dict[str, Any]]]]] = {
        "capture": ("payments.capture", systems.capture),
        "void": ("payments.void", systems.void),
        "refund": ("payments.refund", systems.refund),
    }
    for action, (endpoint, rule) in payment_actions.items():
        app.add_api_route(
            f"/payments/{{pid}}/{action}",
            _payment_route(endpoint, rule),
            methods=["POST"],
            name=f"payments_{action}",
        )

    @app.post("/shipping/shipments")
    async def ship(body: ShipBody, request: Request) -> JSONResponse:
        return await systems.call(request, "shipping.create", body.order_id, lambda: systems.ship(body))

    @app.get("/_control/idempotency")
    async def idempotency() -> dict[str, Any]:
        return dict(systems.data["idempotency"])

    @app.post("/_control/faults")
    async def set_faults(faults: list[Fault]) -> dict[str, Any]:
        async with systems.lock:
            for fault in faults:
                systems.data["faults"] = [
                    f
                    for f in systems.data["faults"]
                    if (f["endpoint"], f["order_id"]) != (fault.endpoint, fault.order_id)
                ]
                systems.data["faults"].append(fault.model_dump())
            systems.save()
        return {"faults": systems.data["faults"]}

    @app.delete("/_control/faults")
    async def clear_faults() -> dict[str, Any]:
        async with systems.lock:
            systems.data["faults"] = []
            systems.data["out_of_stock"] = []
            systems.save()
        return {"faults": []}

    @app.post("/_control/out-of-stock")
    async def out_of_stock(skus: list[str]) -> dict[str, Any]:
        async with systems.lock:
            systems.data["out_of_stock"] = sorted(set(skus))
            systems.save()
        return {"out_of_stock": systems.data["out_of_stock"]}

    @app.post("/_control/settlement")
    async def settlement(switch: SettlementSwitch) -> dict[str, Any]:
        async with systems.lock:
            systems.data["settlement"].update(switch.model_dump(exclude_none=True))
            systems.save()
        return {k: v for k, v in systems.data["settlement"].items() if k != "secret"}

    @app.post("/_control/reset")
    async def reset(stock: dict[str, int] | None = None) -> dict[str, Any]:
        async with systems.lock:
            kept = copy.deepcopy(systems.data["settlement"])
            systems.data = fresh(stock)
            systems.data["settlement"].update(url=kept["url"], secret=kept["secret"])
            systems.save()
        return {"reset": True}

    return app
