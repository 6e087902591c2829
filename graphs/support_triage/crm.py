"""The demo CRM, issue tracker and refund desk ``support_triage`` talks to.

Customers and orders are read-only fixture data (``crm.json``). Refunds, issues and
hand-offs are real side effects recorded in Redis ledgers, applied at most once per
idempotency key (``HSETNX``), so a re-executed step never refunds twice.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from agents.context import Context
from core import jsonutil

_ORDER_ID = re.compile(r"\bo-\d+\b", re.IGNORECASE)


@functools.cache
def _customers() -> dict[str, dict[str, Any]]:
    data = jsonutil.loads((Path(__file__).parent / "crm.json").read_bytes())
    return dict(data["customers"])


def customer(customer_id: str) -> dict[str, Any] | None:
    """The customer record, or None for an id the CRM does not know."""
    return _customers().get(customer_id)


def order_for_ticket(customer: dict[str, Any], ticket: str) -> dict[str, Any] | None:
    """The order the ticket names, else the customer's most recent one.

    An order id that is not this customer's is not honoured (None).
    """
    orders: list[dict[str, Any]] = customer["orders"]
    if named := _ORDER_ID.search(ticket):
        wanted = named.group(0).lower()
        return next((o for o in orders if o["order_id"] == wanted), None)
    return max(orders, key=lambda o: o["placed_at"], default=None)


async def _record_once(ctx: Context, ledger: str, key: str, record: dict[str, Any]) -> dict[str, Any]:
    name = f"{ctx.key_prefix}demo:{ledger}"
    if await ctx.redis.hsetnx(name, key, jsonutil.dumps(record)):
        return record
    existing: Any = await ctx.redis.hget(name, key)
    return dict(jsonutil.loads(existing))


async def issue_refund(ctx: Context, key: str, order_id: str, amount: float) -> dict[str, Any]:
    return await _record_once(
        ctx, "refunds", key, {"order_id": order_id, "amount": amount, "status": "issued"}
    )


async def open_issue(ctx: Context, key: str, customer_id: str, ticket: str) -> dict[str, Any]:
    issue_id = "ISS-" + key.rsplit(":", 2)[-2][:8].upper()
    return await _record_once(
        ctx,
        "issues",
        key,
        {"issue_id": issue_id, "customer_id": customer_id, "summary": ticket[:200]},
    )


async def hand_off(ctx: Context, key: str, customer_id: str, ticket: str) -> dict[str, Any]:
    case_id = "CASE-" + key.rsplit(":", 2)[-2][:8].upper()
    return await _record_once(
        ctx,
        "handoffs",
        key,
        {"case_id": case_id, "customer_id": customer_id, "summary": ticket[:200]},
    )


_FAQ = [
    (
        ("ship", "deliver", "arrive", "tracking"),
        "orders ship within 2 working days; the tracking link is in your confirmation email.",
    ),
    (("return",), "you can return any item within 30 days from your account page, free of charge."),
    (
        ("password", "login", "account", "email"),
        "you can reset your password from the sign-in page; the link is valid for one hour.",
    ),
    (("invoice", "receipt", "vat"), "invoices are under Orders → Details in your account."),
]


def draft_answer(ticket: str) -> str:
    """A reply drafted from the FAQ (deterministic; a later version may use the LLM)."""
    text = ticket.lower()
    for words, answer in _FAQ:
        if any(w in text for w in words):
            return "Thanks for asking: " + answer
    return "Thanks for your question: a colleague will answer within one working day."
