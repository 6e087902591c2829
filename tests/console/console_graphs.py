"""A graph for the console tests: a purchase request that a person approves before the
order goes out, with a deadline an hour away and the details a person decides on.

``START -> check_budget -> approve_purchase -> {place_order | cancel} -> END``
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from agents.approval import ApprovalSpec, add_approval


class State(TypedDict, total=False):
    vendor: str
    amount: float
    items: list[str]
    budget_left: float
    purchase: dict[str, Any] | None
    result: str


class PurchaseEdit(BaseModel):
    amount: float = Field(gt=0, description="What may be spent, at most.")


PURCHASE = ApprovalSpec(
    name="approve_purchase",
    action="place_order",
    summary=lambda s: f"Buy from {s['vendor']} for {s['amount']:.2f}",
    details=lambda s: {"vendor": s["vendor"], "items": s["items"], "budget left": s["budget_left"]},
    amount=lambda s: s["amount"],
    options=("approve", "reject", "edit"),
    editable=PurchaseEdit,
    current=lambda s: {"amount": s["amount"]},
    deadline_s=3600,
    record_field="purchase",
)


def check_budget(state: State) -> State:
    return {"budget_left": 5000.0 - state["amount"]}


def place_order(state: State) -> State:
    amount = ((state.get("purchase") or {}).get("edits") or {}).get("amount", state["amount"])
    return {"result": f"ordered from {state['vendor']} for {amount:.2f}"}


def purchase() -> StateGraph[State, None, State, State]:
    builder = StateGraph(State)
    builder.add_node("check_budget", check_budget)
    add_approval(builder, PURCHASE, {"approve": "place_order", "edit": "place_order", "reject": "cancel"})
    builder.add_node("place_order", place_order)
    builder.add_node("cancel", lambda s: {"result": "cancelled"})
    builder.add_edge(START, "check_budget")
    builder.add_edge("check_budget", "approve_purchase")
    builder.add_edge("place_order", END)
    builder.add_edge("cancel", END)
    return builder


purchase_graph = purchase()
