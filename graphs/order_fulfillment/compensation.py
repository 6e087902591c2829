"""Undoing an order: what ``compensate`` does, and why the order ended as it did."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from agents.context import Context
from agents.http_step import HttpAnswer, Retry, SystemUnavailable, http_step
from graphs.order_fulfillment.state import State, now_ms

UNDO = Retry(attempts=6, timeout_s=2.0, backoff_s=0.2, max_backoff_s=2.0)
"""Compensations try harder; when even that fails the node is retried (``UNDO_POLICY``)."""
UNDO_POLICY = RetryPolicy(
    retry_on=SystemUnavailable, max_attempts=5, initial_interval=1.0, backoff_factor=2.0, max_interval=8.0
)


def why(state: State) -> tuple[Literal["cancelled", "failed"], str]:
    """The order's outcome and the reason, from what happened."""
    if problems := state.get("problems"):
        return "cancelled", "invalid order: " + "; ".join(problems)
    reservations = state.get("reservations") or []
    if missing := [r["sku"] for r in reservations if r["status"] == "out_of_stock"]:
        return "cancelled", "out of stock: " + ", ".join(missing)
    payment = state.get("payment") or {}
    if payment.get("status") == "declined":
        return "cancelled", f"payment declined: {payment.get('reason')}"
    broken = [f"{r['sku']}: {r.get('error')}" for r in reservations if r["status"] in ("unknown", "refused")]
    if payment.get("status") in ("unknown", "refused"):
        broken.append(f"payment: {payment.get('error')}")
    if broken:
        return "failed", "a system could not be used: " + "; ".join(broken)
    if failure := state.get("failure"):
        return "failed", failure
    approval = state.get("approval") or {}
    if state.get("route") == "review" and approval.get("decision") in ("reject", "timeout"):
        who = approval.get("decided_by") or "the reviewer"
        comment = f": {approval['comment']}" if approval.get("comment") else ""
        return "cancelled", f"rejected in review by {who}{comment}"
    score = (state.get("fraud") or {}).get("score")
    return "cancelled", f"rejected by the risk decision (fraud score {score})"


async def _undo_payment(runtime: Runtime[Context], pid: str, captured: bool) -> dict[str, Any] | None:
    """Refund a capture or void an authorization — whichever the payment needs now."""
    first, then = ("refund", "void") if captured else ("void", "refund")
    for action in (first, then):
        answer = await http_step(runtime, f"{action}:{pid}", "POST", f"/payments/{pid}/{action}", retry=UNDO)
        if answer.ok:
            verb = "refund_payment" if action == "refund" else "void_payment"
            return {"action": verb, "payment_id": pid, "status": answer.body["status"], "at": now_ms()}
        if answer.body.get("error") in ("voided", "refunded", "declined", "not_found"):
            return None  # nothing (left) to undo
    return None


async def _replay(runtime: Runtime[Context], step: dict[str, Any], path: str, name: str) -> HttpAnswer:
    """Send an uncertain call again with its own key: the system answers as it did."""
    return await http_step(runtime, name, "POST", path, json=step["request"], key=step["key"], retry=UNDO)


async def compensate(state: State, runtime: Runtime[Context]) -> State:
    """Undo what was done, last first; each undo is recorded once per key and retried."""
    status, reason = why(state)
    performed: list[dict[str, Any]] = []
    released: list[dict[str, Any]] = []
    payment = dict(state.get("payment") or {})
    journal = sorted(enumerate(state.get("done") or []), key=lambda e: (e[1]["at"], e[0]), reverse=True)
    captured = any(step["action"] == "capture" for _, step in journal)
    payment_undone = False
    for _, step in journal:
        if step["action"] == "reserve":
            rid = step.get("reservation_id")
            if step.get("uncertain"):
                found = await _replay(
                    runtime, step, "/inventory/reservations", f"replay_reserve:{step['line']}"
                )
                rid = found.body.get("reservation_id") if found.ok else None
            if rid is None:
                continue
            answer = await http_step(
                runtime, f"release:{rid}", "POST", f"/inventory/reservations/{rid}/release", retry=UNDO
            )
            if answer.ok:
                performed.append({"action": "release_reservation", "reservation_id": rid, "at": now_ms()})
                released.append({"line": step["line"], "status": "released"})
        elif step["action"] in ("capture", "authorize") and not payment_undone:
            pid = step.get("payment_id")
            if step.get("uncertain") and step["action"] == "authorize":
                found = await _replay(runtime, step, "/payments/authorizations", "replay_authorize")
                pid = found.body.get("payment_id") if found.ok else None
            if pid is None:
                continue
            payment_undone = True
            if undo := await _undo_payment(runtime, pid, captured):
                performed.append(undo)
                payment = {**payment, "payment_id": pid, "status": undo["status"]}
    return {
        "compensations": performed,
        "reservations": released,
        "payment": payment or None,
        "status": status,
        "reason": reason,
    }
