"""``order_fulfillment``: take an order through inventory, payments and shipping, and
undo what was done when it cannot be fulfilled.

```
START -> validate_order -> {reserve_item × items (Send) + fraud_score + authorize_payment
                            | compensate (invalid order)}
  reserve_item, fraud_score, authorize_payment -> join      (fan-in: all of them finished)
  join            -> {risk_decision | compensate (out of stock, declined, system down)}
  risk_decision   -> {capture_payment (approve) | review (review) | compensate (reject)}
  review          -> {capture_payment (approve) | compensate (reject)}
  capture_payment -> {await_settlement | compensate (capture refused)}
  await_settlement-> {create_shipment (payment.settled) | compensate (deadline passed)}
  create_shipment -> notify -> END
  compensate      -> notify -> END
```

Every call to an outside system goes through ``agents/http_step.py`` (timeouts, retries
on transient failures only, an idempotency key per task, a span). Failures are branches,
not exceptions: an item out of stock, a declined card, a rejection (by the model or the
reviewer) or a settlement that misses its deadline all lead to ``compensate``, which
undoes what was done in reverse order (release each reservation, void the authorization
or refund the capture), each undo idempotent and retried. A call whose outcome is
unknown (the system never answered) is replayed with its own idempotency key first, to
learn whether there is something to undo.

``risk_decision`` is an LLM decision node (fallback: ``review``); ``review`` is an approval
step (role ``approver``, 24 h, then rejected). ``await_settlement`` pauses the run until
the payment system's ``payment.settled`` event for this payment arrives through a trigger
(``POST /triggers/payment-settled``); ``reconcile_payments`` resumes orders whose deadline
(``configurable.settlement_deadline_s``, default 1 h) passed, and they compensate.

Final state: ``status`` (``fulfilled`` | ``cancelled`` — the order could not or should not
go ahead | ``failed`` — a system or the settlement let it down), ``reservations``,
``payment``, ``shipment``, ``compensations`` (the undo actions performed, in order),
``reason`` when not fulfilled, and ``branches``: start and end (ms) of each parallel branch.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy, Send

from agents.approval import ApprovalSpec, add_approval
from agents.context import Context
from agents.decision import Branch, DecisionSpec, Example
from agents.events import DEADLINE_EVENT, wait_for_event
from agents.http_step import Retry, SystemUnavailable, http_read, http_step
from agents.nodes import add_decision
from graphs.order_fulfillment import fraud
from graphs.order_fulfillment.compensation import UNDO_POLICY, compensate
from graphs.order_fulfillment.state import Input, Line, State, error_of, now_ms

SETTLEMENT_EVENT = "payment.settled"
SETTLEMENT_DEADLINE_S = 3600.0
"""How long a captured payment may take to settle (``configurable.settlement_deadline_s``)."""

CALLS = Retry(attempts=4, timeout_s=2.0, backoff_s=0.1, max_backoff_s=1.0)
SHIP_POLICY = RetryPolicy(
    retry_on=SystemUnavailable, max_attempts=4, initial_interval=1.0, backoff_factor=2.0, max_interval=8.0
)
"""Once paid and settled an order goes forward: shipping being down is waited out."""


# --- validate, then three branches in parallel ---


async def validate_order(state: State) -> State:
    problems = []
    if not state["order_id"].strip():
        problems.append("order_id is empty")
    if not state["items"]:
        problems.append("the order has no items")
    for item in state["items"]:
        if not item["sku"].strip():
            problems.append("an item has no SKU")
        if item["qty"] <= 0:
            problems.append(f"{item['sku']}: quantity must be positive")
    if state["amount"] <= 0:
        problems.append("amount must be positive")
    return {"problems": problems, "status": "processing"}


def fan_out(state: State) -> list[Send | str]:
    """One ``reserve_item`` task per line, fraud scoring and the authorization: all at once."""
    if state.get("problems"):
        return ["compensate"]
    lines = [
        Send("reserve_item", Line(order_id=state["order_id"], line=i, sku=item["sku"], qty=item["qty"]))
        for i, item in enumerate(state["items"])
    ]
    return [*lines, "fraud_score", "authorize_payment"]


async def reserve_item(line: Line, runtime: Runtime[Context]) -> State:
    started = now_ms()
    request = {"order_id": line["order_id"], "sku": line["sku"], "qty": line["qty"]}
    base = {"line": line["line"], "sku": line["sku"], "qty": line["qty"]}
    done: list[dict[str, Any]] = []
    try:
        answer = await http_step(
            runtime, "reserve_item", "POST", "/inventory/reservations", json=request, retry=CALLS
        )
    except SystemUnavailable as e:
        result = {**base, "status": "unknown", "error": e.reason}
        done.append({"action": "reserve", "line": line["line"], "uncertain": True, "key": e.idempotency_key,
                     "request": request, "at": now_ms()})  # fmt: skip
    else:
        if answer.ok:
            result = {**base, "status": "held", "reservation_id": answer.body["reservation_id"]}
            done.append({"action": "reserve", "line": line["line"], "reservation_id": answer.body["reservation_id"],
                         "at": now_ms()})  # fmt: skip
        elif answer.body.get("error") == "out_of_stock":
            result = {**base, "status": "out_of_stock", "available": answer.body.get("available")}
        else:
            result = {**base, "status": "refused", "error": error_of(answer)}
    ended = now_ms()
    return {
        "reservations": [result],
        "done": done,
        "branches": [{"branch": f"reserve_item[{line['line']}]", "started_at": started, "ended_at": ended}],
    }


async def fraud_score(state: State, runtime: Runtime[Context]) -> State:
    started = now_ms()
    customer_id = state["customer_id"]
    try:
        answer = await http_read(
            runtime, "customer_history", f"/payments/customers/{customer_id}", retry=CALLS
        )
        history = answer.body if answer.ok else {"customer_id": customer_id, "known": False}
    except SystemUnavailable:
        history = {"customer_id": customer_id, "known": False, "unavailable": True}
    result = fraud.score(float(state["amount"]), [dict(i) for i in state["items"]], history)
    return {
        "fraud": result,
        "customer_history": history,
        "branches": [{"branch": "fraud_score", "started_at": started, "ended_at": now_ms()}],
    }


async def authorize_payment(state: State, runtime: Runtime[Context]) -> State:
    started = now_ms()
    request = {"order_id": state["order_id"], "customer_id": state["customer_id"], "amount": state["amount"]}
    done: list[dict[str, Any]] = []
    try:
        answer = await http_step(
            runtime, "authorize_payment", "POST", "/payments/authorizations", json=request, retry=CALLS
        )
    except SystemUnavailable as e:
        payment: dict[str, Any] = {"status": "unknown", "amount": state["amount"], "error": e.reason}
        done.append({"action": "authorize", "uncertain": True, "key": e.idempotency_key, "request": request,
                     "at": now_ms()})  # fmt: skip
    else:
        if answer.ok:
            payment = {
                "payment_id": answer.body["payment_id"],
                "status": "authorized",
                "amount": state["amount"],
            }
            done.append({"action": "authorize", "payment_id": payment["payment_id"], "at": now_ms()})
        elif answer.status == 402:
            payment = {
                "payment_id": answer.body.get("payment_id"),
                "status": "declined",
                "reason": error_of(answer),
            }
        else:
            payment = {"status": "refused", "error": error_of(answer)}
    return {
        "payment": payment,
        "done": done,
        "branches": [{"branch": "authorize_payment", "started_at": started, "ended_at": now_ms()}],
    }


async def join(state: State) -> State:
    return {"joined_at": now_ms()}


def after_join(state: State) -> Literal["risk_decision", "compensate"]:
    held = [r for r in state.get("reservations") or [] if r["status"] == "held"]
    authorized = (state.get("payment") or {}).get("status") == "authorized"
    return "risk_decision" if authorized and len(held) == len(state["items"]) else "compensate"


# --- decide, maybe review ---

RISK = DecisionSpec(
    name="risk_decision",
    instructions=(
        "You decide whether an online shop should go ahead with an order. You see the fraud "
        "check (a rule-based score from 0 to 1 with its suggestion and reasons), the amount, "
        "and the customer's history with the payment provider. Follow the fraud check unless "
        "the amount and history clearly say otherwise."
    ),
    branches=[
        Branch(name="approve", description="low risk: capture the payment and ship"),
        Branch(name="review", description="unclear risk: a person looks at the order first"),
        Branch(name="reject", description="high risk or likely fraud: cancel the order"),
    ],
    fallback="review",
    inputs=["fraud", "amount", "customer_history"],
    examples=[
        Example(
            input={
                "fraud": {"score": 0.05, "level": "low", "suggestion": "approve", "reasons": []},
                "amount": 80.0,
                "customer_history": {"known": True, "orders": 9, "chargebacks": 0},
            },
            branch="approve",
        ),
        Example(
            input={
                "fraud": {
                    "score": 0.4,
                    "level": "medium",
                    "suggestion": "review",
                    "reasons": ["new customer"],
                },
                "amount": 450.0,
                "customer_history": {"known": False, "orders": 0, "chargebacks": 0},
            },
            branch="review",
        ),
        Example(
            input={
                "fraud": {
                    "score": 0.85,
                    "level": "high",
                    "suggestion": "reject",
                    "reasons": ["2 chargeback(s)"],
                },
                "amount": 900.0,
                "customer_history": {"known": True, "orders": 4, "chargebacks": 2},
            },
            branch="reject",
        ),
    ],
)


def _review_summary(state: State) -> str:
    score = state["fraud"]
    return (
        f"Order {state['order_id']}: {float(state['amount']):.2f} from customer {state['customer_id']} "
        f"(fraud score {score['score']:.2f}, {score['level']})"
    )


REVIEW = ApprovalSpec(
    name="review",
    action="capture_payment",
    summary=_review_summary,
    details=lambda state: {
        "order_id": state["order_id"],
        "items": state["items"],
        "fraud": state["fraud"],
        "customer_history": state.get("customer_history"),
        "model": {k: (state.get("decision") or {}).get(k) for k in ("chosen", "method", "confidence")},
    },
    amount=lambda state: float(state["amount"]),
    options=("approve", "reject"),
    assignee="approver",
    deadline_s=24 * 3600,
    on_timeout="reject",
)


# --- capture, wait for settlement, ship ---


async def capture_payment(state: State, runtime: Runtime[Context]) -> State:
    payment = dict(state["payment"] or {})
    pid = payment["payment_id"]
    try:
        answer = await http_step(runtime, "capture_payment", "POST", f"/payments/{pid}/capture", retry=CALLS)
    except SystemUnavailable as e:
        return {
            "payment": {**payment, "capture": "unknown"},
            "done": [{"action": "capture", "payment_id": pid, "uncertain": True, "at": now_ms()}],
            "failure": f"payment capture failed: {e.reason}",
        }
    if not answer.ok:
        return {"failure": f"payment capture refused: {error_of(answer)}"}
    return {
        "payment": {**payment, "status": "captured"},
        "done": [{"action": "capture", "payment_id": pid, "at": now_ms()}],
    }


def after_capture(state: State) -> Literal["await_settlement", "compensate"]:
    return "await_settlement" if (state.get("payment") or {}).get("status") == "captured" else "compensate"


async def await_settlement(state: State, config: RunnableConfig, *, runtime: Runtime[Context]) -> State:
    payment = dict(state["payment"] or {})
    deadline_s = float((config.get("configurable") or {}).get("settlement_deadline_s", SETTLEMENT_DEADLINE_S))
    value = await wait_for_event(
        runtime.context.redis,
        runtime.context.key_prefix,
        config,
        event=SETTLEMENT_EVENT,
        key=payment["payment_id"],
        deadline_s=deadline_s,
        details={"order_id": state["order_id"], "amount": state["amount"]},
    )
    if value["event"] == DEADLINE_EVENT:
        return {
            "settlement": {"status": "missed", "deadline_s": deadline_s, "noticed_by": value.get("by")},
            "failure": f"payment {payment['payment_id']} not settled within {deadline_s:g} s",
        }
    return {
        "settlement": {"status": "settled", "event_id": value.get("event_id"), "received_at": now_ms()},
        "payment": {**payment, "settled": True},
    }


def after_settlement(state: State) -> Literal["create_shipment", "compensate"]:
    return "create_shipment" if (state.get("settlement") or {}).get("status") == "settled" else "compensate"


async def create_shipment(state: State, runtime: Runtime[Context]) -> State:
    request = {
        "order_id": state["order_id"],
        "items": state["items"],
        "reservation_ids": [r["reservation_id"] for r in state.get("reservations") or []],
    }
    # SystemUnavailable propagates: the node's retry policy waits shipping out.
    answer = await http_step(
        runtime, "create_shipment", "POST", "/shipping/shipments", json=request, retry=CALLS
    )
    if not answer.ok:
        return {"failure": f"shipment refused: {error_of(answer)}"}
    shipped = [{"line": r["line"], "status": "shipped"} for r in state.get("reservations") or []]
    return {
        "shipment": {"shipment_id": answer.body["shipment_id"], "status": answer.body["status"]},
        "reservations": shipped,
        "status": "fulfilled",
        "reason": None,
    }


def after_shipment(state: State) -> Literal["notify", "compensate"]:
    return "notify" if state.get("shipment") else "compensate"


async def notify(state: State) -> State:
    """Tell the customer (the message is kept in state; a mail system would send it)."""
    order_id = state["order_id"]
    if state.get("status") == "fulfilled":
        shipment = (state.get("shipment") or {}).get("shipment_id")
        message = f"Your order {order_id} is on its way (shipment {shipment})."
    else:
        message = (
            f"We could not fulfil your order {order_id}: {state.get('reason')}. You have not been charged."
        )
    return {"notification": {"to": state["customer_id"], "message": message, "at": now_ms()}}


def build_graph() -> StateGraph[State, Context, Input, State]:
    builder = StateGraph(State, context_schema=Context, input_schema=Input)
    builder.add_node("validate_order", validate_order)
    line_node: Any = reserve_item  # its input is a Line (from Send), not the State
    builder.add_node("reserve_item", line_node)
    builder.add_node("fraud_score", fraud_score)
    builder.add_node("authorize_payment", authorize_payment)
    builder.add_node("join", join)
    builder.add_node("capture_payment", capture_payment)
    node: Any = await_settlement  # langgraph's node protocols cannot express "config and runtime"
    builder.add_node("await_settlement", node)
    builder.add_node("create_shipment", create_shipment, retry_policy=SHIP_POLICY)
    builder.add_node("compensate", compensate, retry_policy=UNDO_POLICY)
    builder.add_node("notify", notify)

    builder.add_edge(START, "validate_order")
    builder.add_conditional_edges(
        "validate_order", fan_out, ["reserve_item", "fraud_score", "authorize_payment", "compensate"]
    )
    builder.add_edge(["reserve_item", "fraud_score", "authorize_payment"], "join")
    builder.add_conditional_edges("join", after_join)
    add_decision(builder, RISK, {"approve": "capture_payment", "review": "review", "reject": "compensate"})
    add_approval(builder, REVIEW, {"approve": "capture_payment", "reject": "compensate"})
    builder.add_conditional_edges("capture_payment", after_capture)
    builder.add_conditional_edges("await_settlement", after_settlement)
    builder.add_conditional_edges("create_shipment", after_shipment)
    builder.add_edge("compensate", "notify")
    builder.add_edge("notify", END)
    return builder
