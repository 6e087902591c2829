"""The state of ``order_fulfillment`` and the small helpers its nodes share."""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any, Literal

from typing_extensions import TypedDict

from agents.http_step import HttpAnswer


class Item(TypedDict):
    sku: str
    qty: int


class Input(TypedDict):
    order_id: str
    customer_id: str
    items: list[Item]
    amount: float


def by_line(left: list[dict[str, Any]] | None, right: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Reservations keyed by order line: a later write about a line updates it."""
    merged = {r["line"]: r for r in left or []}
    for r in right or []:
        merged[r["line"]] = {**merged.get(r["line"], {}), **r}
    return [merged[k] for k in sorted(merged)]


class State(TypedDict, total=False):
    order_id: str
    customer_id: str
    items: list[Item]
    amount: float
    problems: list[str]
    reservations: Annotated[list[dict[str, Any]], by_line]
    fraud: dict[str, Any]
    customer_history: dict[str, Any]
    payment: dict[str, Any] | None
    branches: Annotated[list[dict[str, Any]], operator.add]
    """``{"branch", "started_at", "ended_at"}`` (ms since the epoch) per parallel branch."""
    joined_at: int
    route: str | None
    decision: dict[str, Any] | None
    approval: dict[str, Any] | None
    settlement: dict[str, Any] | None
    shipment: dict[str, Any] | None
    done: Annotated[list[dict[str, Any]], operator.add]
    """What was done that may need undoing, as it finished."""
    failure: str | None
    compensations: Annotated[list[dict[str, Any]], operator.add]
    notification: dict[str, Any] | None
    status: Literal["processing", "fulfilled", "cancelled", "failed"]
    reason: str | None


class Line(TypedDict):
    """What one ``reserve_item`` task gets (``Send``)."""

    order_id: str
    line: int
    sku: str
    qty: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def error_of(answer: HttpAnswer) -> str:
    body = answer.body if isinstance(answer.body, dict) else {}
    return str(body.get("reason") or body.get("error") or f"http {answer.status}")
