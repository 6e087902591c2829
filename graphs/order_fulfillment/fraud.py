"""The fraud score: deterministic rules over the order and the customer's history.

Same inputs, same score — so a re-executed step, a replayed test and an audit all agree.
The score's level suggests a branch to the ``risk_decision`` model, which may overrule it
when amount and history say otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

Level = Literal["low", "medium", "high"]

SUGGESTION: dict[Level, str] = {"low": "approve", "medium": "review", "high": "reject"}


def score(amount: float, items: list[dict[str, Any]], history: dict[str, Any]) -> dict[str, Any]:
    """``{"score": 0..1, "level", "suggestion", "reasons": [...]}``."""
    total = 0.05
    reasons: list[str] = []
    if not history.get("known"):
        total += 0.35
        reasons.append("new customer")
    elif int(history.get("orders", 0)) < 3:
        total += 0.1
        reasons.append("few previous orders")
    chargebacks = int(history.get("chargebacks", 0))
    if chargebacks:
        total += 0.4 * chargebacks
        reasons.append(f"{chargebacks} chargeback(s)")
    if amount > 1000:
        total += 0.25
        reasons.append("amount above 1000")
    if amount > 5000:
        total += 0.25
        reasons.append("amount above 5000")
    if sum(int(i.get("qty", 0)) for i in items) > 20:
        total += 0.1
        reasons.append("many units")
    value = round(min(1.0, total), 2)
    level: Level = "low" if value < 0.3 else "medium" if value < 0.7 else "high"
    return {"score": value, "level": level, "suggestion": SUGGESTION[level], "reasons": reasons}
