"""The books of the demo systems (``demo_systems.py``): stock and reservations, payments,
shipments, idempotency records, fault switches and the settlement outbox — in one JSON
document, rewritten atomically after every change — and the rules that change them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core import jsonutil

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
    """The signature header's value for ``body`` as Interlock's triggers check it (the
    scheme of its webhooks): ``t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


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


def fresh(stock: dict[str, int] | None = None) -> dict[str, Any]:
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
        self.data = jsonutil.loads(path.read_bytes()) if path.exists() else fresh()

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
