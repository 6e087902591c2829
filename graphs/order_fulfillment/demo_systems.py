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
import hashlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core import jsonutil

log = logging.getLogger("interlock.demo_systems")

Endpoint = Literal[
    "inventory.reserve",
    "inventory.release",
    "payments.history",
    "payments.authorize",
    "payments.capture",
    "payments.void",
    "payments.refund",
    "shipping.create",
]

SIGNATURE_HEADER = "X-Interlock-Signature"
DEFAULT_STOCK = {sku: 10_000 for sku in ("sku-mug", "sku-tee", "sku-cap", "sku-pen", "sku-bag", "sku-hat")}
CARD_LIMIT = 10_000.0
"""Authorizations above this amount are declined."""


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Fault(BaseModel):
    """A fault switch on one endpoint."""

    endpoint: Endpoint
    order_id: str | None = None
    """Only requests about this order (None: all)."""
    latency_ms: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    """Answer ``error_status`` to this many requests, applying nothing."""
    error_status: Literal[429, 500, 502, 503, 504] = 503
    timeouts: int = Field(default=0, ge=0)
    """Apply this many requests, then hang ``timeout_s`` before answering."""
    timeout_s: float = Field(default=30.0, ge=0)
    decline: bool = False
    """``payments.authorize``: decline the card."""


class SettlementSwitch(BaseModel):
    mode: Literal["once", "twice", "never"] | None = None
    delay_s: float | None = Field(default=None, ge=0)
    url: str | None = None
    """Where settlement events go (an Interlock trigger URL)."""
    secret: str | None = None
    """The trigger's secret, to sign them with."""


class ReserveBody(BaseModel):
    order_id: str
    sku: str
    qty: int = Field(gt=0)


class AuthorizeBody(BaseModel):
    order_id: str
    customer_id: str
    amount: float = Field(gt=0)


class ShipBody(BaseModel):
    order_id: str
    items: list[dict[str, Any]]
    reservation_ids: list[str] = []


def customer_history(customer_id: str) -> dict[str, Any]:
    """A customer's history as the payment system knows it (deterministic fixtures):
    ``c-001`` … ``c-020`` are known, ``c-013`` and ``c-017`` have had chargebacks."""
    number = customer_id.removeprefix("c-")
    if not (customer_id.startswith("c-") and number.isdigit() and 1 <= int(number) <= 20):
        return {"customer_id": customer_id, "known": False, "orders": 0, "chargebacks": 0}
    n = int(number)
    return {
        "customer_id": customer_id,
        "known": True,
        "orders": 3 + n % 9,
        "chargebacks": 2 if n in (13, 17) else 0,
        "customer_since": f"20{18 + n % 6}-0{1 + n % 9}-15",
    }


def _fresh(stock: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "stock": dict(stock or DEFAULT_STOCK),
        "out_of_stock": [],
        "reservations": {},
        "payments": {},
        "shipments": {},
        "idempotency": {},
        "faults": [],
        "settlement": {"mode": "once", "delay_s": 0.2, "url": None, "secret": None},
        "outbox": [],
        "deliveries": [],
        "seq": 0,
    }


class DemoSystems:
    """The systems' state, its file, and the rules that change it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = asyncio.Lock()
        self.data = jsonutil.loads(path.read_bytes()) if path.exists() else _fresh()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(jsonutil.dumps(self.data))
        os.replace(tmp, self.path)  # atomic: a reader or a crash sees the old file or the new

    def next_id(self, kind: str) -> str:
        self.data["seq"] += 1
        return f"{kind}-{self.data['seq']:06d}"

    def fault(self, endpoint: Endpoint, order_id: str | None) -> dict[str, Any] | None:
        for fault in self.data["faults"]:
            if fault["endpoint"] == endpoint and fault["order_id"] in (None, order_id):
                return dict(fault)
        return None

    def spend(self, endpoint: Endpoint, order_id: str | None, counter: str) -> bool:
        for fault in self.data["faults"]:
            if fault["endpoint"] == endpoint and fault["order_id"] in (None, order_id) and fault[counter] > 0:
                fault[counter] -= 1
                return True
        return False

    async def call(
        self,
        request: Request,
        endpoint: Endpoint,
        order_id: str | None,
        apply: Callable[[], tuple[int, dict[str, Any]]],
    ) -> JSONResponse:
        """Answer one request that changes something: latency, then (under the lock) the
        idempotency check, injected errors, the change itself and its record, then an
        injected hang."""
        key = request.headers.get("idempotency-key")
        fault = self.fault(endpoint, order_id)
        if fault and fault["latency_ms"]:
            await asyncio.sleep(fault["latency_ms"] / 1000)
        hang = 0.0
        async with self.lock:
            seen: dict[str, Any] | None = self.data["idempotency"].get(key) if key else None
            if seen is not None:
                seen["requests"] += 1
                if seen["endpoint"] != endpoint:
                    self.save()
                    return JSONResponse(
                        {"error": "idempotency_key_reused", "detail": f"key was used for {seen['endpoint']}"},
                        status_code=422,
                    )
                if seen["applied"]:
                    self.save()
                    return JSONResponse(seen["body"], status_code=seen["status"])
            elif key:
                seen = {"endpoint": endpoint, "order_id": order_id, "requests": 1, "applied": 0}
                self.data["idempotency"][key] = seen
            if self.spend(endpoint, order_id, "errors"):
                self.save()
                status = fault["error_status"] if fault else 503
                return JSONResponse({"error": "injected", "detail": "fault switch"}, status_code=status)
            status, body = apply()
            if seen is not None:
                seen.update(applied=seen["applied"] + 1, status=status, body=body)
            if self.spend(endpoint, order_id, "timeouts"):
                hang = fault["timeout_s"] if fault else 30.0
            self.save()
        if hang:
            await asyncio.sleep(hang)
        return JSONResponse(body, status_code=status)

    # --- the systems' rules (called under the lock) ---

    def reserve(self, body: ReserveBody) -> tuple[int, dict[str, Any]]:
        available = int(self.data["stock"].get(body.sku, 0))
        if body.sku in self.data["out_of_stock"] or available < body.qty:
            return 409, {"error": "out_of_stock", "sku": body.sku, "available": available}
        self.data["stock"][body.sku] = available - body.qty
        rid = self.next_id("res")
        record = {"reservation_id": rid, **body.model_dump(), "status": "held", "at": time.time()}
        self.data["reservations"][rid] = record
        return 201, record

    def release(self, rid: str) -> tuple[int, dict[str, Any]]:
        record = self.data["reservations"].get(rid)
        if record is None:
            return 404, {"error": "not_found", "reservation_id": rid}
        if record["status"] == "shipped":
            return 409, {"error": "shipped", "reservation_id": rid}
        if record["status"] == "held":
            record["status"] = "released"
            self.data["stock"][record["sku"]] = self.data["stock"].get(record["sku"], 0) + record["qty"]
        return 200, record

    def authorize(self, body: AuthorizeBody, declined: bool) -> tuple[int, dict[str, Any]]:
        pid = self.next_id("pay")
        if declined or body.amount > CARD_LIMIT:
            record = {"payment_id": pid, **body.model_dump(), "status": "declined"}
            self.data["payments"][pid] = record
            reason = "card declined" if declined else f"amount above the card limit {CARD_LIMIT:.0f}"
            return 402, {"error": "declined", "reason": reason, "payment_id": pid}
        record = {"payment_id": pid, **body.model_dump(), "status": "authorized", "settled": False}
        self.data["payments"][pid] = record
        return 201, record

    def capture(self, pid: str) -> tuple[int, dict[str, Any]]:
        record = self.data["payments"].get(pid)
        if record is None:
            return 404, {"error": "not_found", "payment_id": pid}
        if record["status"] == "captured":
            return 200, record
        if record["status"] != "authorized":
            return 409, {"error": record["status"], "payment_id": pid}
        record["status"] = "captured"
        record["captured_at"] = time.time()
        self._schedule_settlement(record)
        return 200, record

    def void(self, pid: str) -> tuple[int, dict[str, Any]]:
        record = self.data["payments"].get(pid)
        if record is None:
            return 404, {"error": "not_found", "payment_id": pid}
        if record["status"] in ("authorized", "voided"):
            record["status"] = "voided"
            return 200, record
        return 409, {
            "error": record["status"],
            "payment_id": pid,
            "detail": "only an authorization can be voided",
        }

    def refund(self, pid: str) -> tuple[int, dict[str, Any]]:
        record = self.data["payments"].get(pid)
        if record is None:
            return 404, {"error": "not_found", "payment_id": pid}
        if record["status"] in ("captured", "refunded"):
            record["status"] = "refunded"
            return 200, record
        return 409, {"error": record["status"], "payment_id": pid, "detail": "only a capture can be refunded"}

    def ship(self, body: ShipBody) -> tuple[int, dict[str, Any]]:
        held = [self.data["reservations"].get(r) for r in body.reservation_ids]
        if any(r is None or r["status"] != "held" or r["order_id"] != body.order_id for r in held):
            return 409, {"error": "reservations_not_held", "reservation_ids": body.reservation_ids}
        for record in held:
            assert record is not None
            record["status"] = "shipped"
        sid = self.next_id("shp")
        record = {"shipment_id": sid, **body.model_dump(), "status": "created", "at": time.time()}
        self.data["shipments"][sid] = record
        return 201, record

    def _schedule_settlement(self, payment: dict[str, Any]) -> None:
        switch = self.data["settlement"]
        if switch["mode"] == "never":
            return
        due = time.time() + float(switch["delay_s"])
        event = {
            "id": f"evt-settled-{payment['payment_id']}",
            "type": "payment.settled",
            "data": {
                "payment_id": payment["payment_id"],
                "order_id": payment["order_id"],
                "amount": payment["amount"],
            },
        }
        copies = 2 if switch["mode"] == "twice" else 1
        for i in range(copies):
            self.data["outbox"].append({"event": event, "due": due + 0.15 * i, "attempts": 0})

    def order(self, order_id: str) -> dict[str, Any]:
        def mine(kind: str) -> list[dict[str, Any]]:
            return [r for r in self.data[kind].values() if r.get("order_id") == order_id]

        return {
            "order_id": order_id,
            "reservations": mine("reservations"),
            "payments": mine("payments"),
            "shipments": mine("shipments"),
            "idempotency": {
                k: v for k, v in self.data["idempotency"].items() if v.get("order_id") == order_id
            },
        }


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
            systems.data = _fresh(stock)
            systems.data["settlement"].update(url=kept["url"], secret=kept["secret"])
            systems.save()
        return {"reset": True}

    return app
