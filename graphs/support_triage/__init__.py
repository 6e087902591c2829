"""``support_triage``: route a customer's support ticket and act on it.

```
START -> load_customer -> triage -> {refund | answer | technical | escalate}
  refund    -> lookup_order -> {issue_refund (amount <= 50)
                                | approval (amount > 50) -> {issue_refund (approve, edit)
                                                              | deny_refund (reject)}
                                | respond (no such order)}
  answer    -> draft_answer
  technical -> open_ticket
  escalate  -> handoff
  issue_refund | deny_refund | draft_answer | open_ticket | handoff -> respond -> END
```

``triage`` is an LLM decision node (fallback: ``escalate``); ``approval`` is an approval
step: a person with role ``approver`` approves, rejects, or edits the amount (a partial
refund); unanswered after 24 h it escalates to the group ``support-leads``. Customer data comes from a small demo CRM
(``crm.json``: customers ``c-001`` … ``c-020``); an unknown customer is not an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from agents.approval import ApprovalSpec, add_approval
from agents.context import Context
from agents.decision import Branch, DecisionSpec, Example
from agents.nodes import add_decision
from agents.tools import effect_once
from graphs.support_triage import crm

REFUND_APPROVAL_THRESHOLD = 50.0
"""Refunds above this amount wait for a person."""


class Input(TypedDict):
    ticket: str
    customer_id: str


class State(TypedDict, total=False):
    ticket: str
    customer_id: str
    customer: dict[str, Any] | None
    order: dict[str, Any] | None
    route: str | None
    decision: dict[str, Any] | None
    approval: dict[str, Any] | None
    refund: dict[str, Any] | None
    ticket_ref: str | None
    resolution: str | None


TRIAGE = DecisionSpec(
    name="triage",
    instructions=(
        "You route customer support tickets for an online shop. "
        "Read the ticket and choose exactly one branch."
    ),
    branches=[
        Branch(name="refund", description="the customer wants money back for an order"),
        Branch(name="answer", description="a question about orders, shipping, accounts or policy"),
        Branch(name="technical", description="a product or the website/app does not work"),
        Branch(name="escalate", description="angry, legal threat, safety issue, or anything unclear"),
    ],
    fallback="escalate",
    inputs=["ticket"],
    # The dev split of the eval dataset (evals/datasets/support_triage.triage), as
    # labelled cases to pick the 4 nearest few-shot examples from; `examples` below are
    # used when the embedding model (interlock[fewshot]) is not installed.
    example_pool=str(Path(__file__).parent / "triage_examples.jsonl"),
    nearest_examples=4,
    examples=[
        Example(input={"ticket": "The blender arrived broken, I want my money back."}, branch="refund"),
        Example(input={"ticket": "How long does shipping to Austria take?"}, branch="answer"),
        Example(
            input={"ticket": "The app crashes every time I open my order history."},
            branch="technical",
        ),
        Example(
            input={"ticket": "This is the third time. My lawyer will contact you."},
            branch="escalate",
        ),
    ],
)


async def load_customer(state: State) -> State:
    return {"customer": crm.customer(state["customer_id"])}


async def lookup_order(state: State) -> State:
    customer = state.get("customer")
    order = crm.order_for_ticket(customer, state["ticket"]) if customer else None
    if order is None:
        who = "you" if customer else f"customer {state['customer_id']}"
        return {
            "order": None,
            "refund": None,
            "resolution": f"We could not find an order for {who} to refund; a colleague will follow up.",
        }
    return {"order": order}


def after_lookup(state: State) -> Literal["issue_refund", "approval", "respond"]:
    order = state.get("order")
    if order is None:
        return "respond"
    return "issue_refund" if order["amount"] <= REFUND_APPROVAL_THRESHOLD else "approval"


class RefundEdit(BaseModel):
    """What an approver may change: the amount (a partial refund)."""

    amount: float = Field(gt=0, description="amount to refund")


def _summary(state: State) -> str:
    order = state["order"]
    assert order is not None
    return (
        f"Refund {order['amount']:.2f} {order['currency']} for order {order['order_id']} "
        f"({order['item']}) to customer {state['customer_id']}"
    )


def _details(state: State) -> dict[str, Any]:
    customer = state.get("customer") or {}
    return {
        "ticket": state["ticket"],
        "order": state.get("order"),
        "customer": {k: customer.get(k) for k in ("customer_id", "name", "tier") if k in customer},
        "triage": (state.get("decision") or {}).get("chosen"),
    }


APPROVAL = ApprovalSpec(
    name="approval",
    action="issue_refund",
    summary=_summary,
    details=_details,
    amount=lambda state: state["order"]["amount"],
    options=("approve", "reject", "edit"),
    editable=RefundEdit,
    current=lambda state: {"amount": state["order"]["amount"]},
    assignee="approver",
    deadline_s=24 * 3600,
    on_timeout="escalate",
    escalate_to="group:support-leads",
)


def _refund_amount(state: State) -> float:
    order = state["order"]
    assert order is not None
    approval = state.get("approval") or {}
    if approval.get("decision") == "edit":
        return min(float(approval["edits"]["amount"]), float(order["amount"]))
    return float(order["amount"])


async def issue_refund(state: State, runtime: Runtime[Context]) -> State:
    order = state["order"]
    assert order is not None
    amount = _refund_amount(state)
    refund = await effect_once(
        runtime,
        "issue_refund",
        lambda key: crm.issue_refund(runtime.context, key, order["order_id"], amount),
    )
    return {
        "refund": refund,
        "resolution": f"We refunded {refund['amount']:.2f} for order {refund['order_id']}.",
    }


async def deny_refund(state: State) -> State:
    order = state["order"]
    assert order is not None
    comment = (state.get("approval") or {}).get("comment") or "it does not meet our refund policy"
    return {
        "refund": {"order_id": order["order_id"], "amount": order["amount"], "status": "denied"},
        "resolution": f"We cannot refund order {order['order_id']}: {comment}.",
    }


async def draft_answer(state: State) -> State:
    return {"resolution": crm.draft_answer(state["ticket"])}


async def open_ticket(state: State, runtime: Runtime[Context]) -> State:
    issue = await effect_once(
        runtime,
        "open_ticket",
        lambda key: crm.open_issue(runtime.context, key, state["customer_id"], state["ticket"]),
    )
    return {
        "ticket_ref": issue["issue_id"],
        "resolution": f"Our engineers are on it: ticket {issue['issue_id']}.",
    }


async def handoff(state: State, runtime: Runtime[Context]) -> State:
    queued = await effect_once(
        runtime,
        "handoff",
        lambda key: crm.hand_off(runtime.context, key, state["customer_id"], state["ticket"]),
    )
    return {"resolution": f"A member of our team will contact you personally (case {queued['case_id']})."}


async def respond(state: State) -> State:
    customer = state.get("customer")
    greeting = f"Hello {customer['name'].split()[0]}, " if customer else "Hello, "
    resolution = state.get("resolution") or "we have received your message."
    return {
        "resolution": greeting + resolution[0].lower() + resolution[1:],
        "refund": state.get("refund"),
    }


def build_graph() -> StateGraph[State, Context, Input, State]:
    builder = StateGraph(State, context_schema=Context, input_schema=Input)
    builder.add_node("load_customer", load_customer)
    builder.add_node("lookup_order", lookup_order)
    builder.add_node("issue_refund", issue_refund)
    builder.add_node("deny_refund", deny_refund)
    builder.add_node("draft_answer", draft_answer)
    builder.add_node("open_ticket", open_ticket)
    builder.add_node("handoff", handoff)
    builder.add_node("respond", respond)

    builder.add_edge(START, "load_customer")
    builder.add_edge("load_customer", "triage")
    add_decision(
        builder,
        TRIAGE,
        {
            "refund": "lookup_order",
            "answer": "draft_answer",
            "technical": "open_ticket",
            "escalate": "handoff",
        },
    )
    builder.add_conditional_edges("lookup_order", after_lookup)
    add_approval(
        builder, APPROVAL, {"approve": "issue_refund", "edit": "issue_refund", "reject": "deny_refund"}
    )
    for node in ("issue_refund", "deny_refund", "draft_answer", "open_ticket", "handoff"):
        builder.add_edge(node, "respond")
    builder.add_edge("respond", END)
    return builder
