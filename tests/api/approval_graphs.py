"""Graphs for the approvals tests.

``contract``: two approval steps on parallel branches (``legal``, assigned to the group
``legal``; ``finance``, assigned to role ``approver``, editable amount), joined.
``escalating``: one approval with a 2 s deadline that escalates to ``group:leads``.
``expiring``: one approval with a 1 s deadline whose timeout takes its own branch.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from agents.approval import ApprovalSpec, add_approval
from agents.context import Context
from agents.decision import Branch, DecisionSpec
from agents.nodes import add_decision


class State(TypedDict, total=False):
    amount: float
    text: str
    route: str | None
    decision: dict[str, Any] | None
    handled_by: str
    legal: dict[str, Any] | None
    finance: dict[str, Any] | None
    sign: dict[str, Any] | None
    result: str


class AmountEdit(BaseModel):
    amount: float = Field(gt=0)


LEGAL = ApprovalSpec(
    name="legal",
    action="sign_contract",
    summary=lambda s: f"Sign the contract worth {s['amount']:.2f}",
    details=lambda s: {"amount": s["amount"]},
    assignee="group:legal",
    record_field="legal",
)
FINANCE = ApprovalSpec(
    name="finance",
    action="pay",
    summary=lambda s: f"Pay {s['amount']:.2f}",
    options=("approve", "reject", "edit"),
    editable=AmountEdit,
    current=lambda s: {"amount": s["amount"]},
    record_field="finance",
)


def join(state: State) -> State:
    legal, finance = state.get("legal") or {}, state.get("finance") or {}
    if legal.get("decision") != "approve" or finance.get("decision") == "reject":
        return {"result": "rejected"}
    amount = (finance.get("edits") or {}).get("amount", state["amount"])
    return {"result": f"signed and paid {amount:.2f}"}


def contract() -> StateGraph[State, None, State, State]:
    builder = StateGraph(State)
    add_approval(builder, LEGAL, {"approve": "join", "reject": "join"})
    add_approval(builder, FINANCE, {"approve": "join", "reject": "join", "edit": "join"})
    builder.add_node("join", join)
    builder.add_edge(START, "legal")
    builder.add_edge(START, "finance")
    builder.add_edge("join", END)
    return builder


def _single(spec: ApprovalSpec, routes: dict[str, str]) -> StateGraph[State, None, State, State]:
    builder = StateGraph(State)
    add_approval(builder, spec, routes)  # type: ignore[arg-type]
    builder.add_node("done", lambda s: {"result": f"done: {(s.get('sign') or {}).get('decision')}"})
    builder.add_node("expired", lambda s: {"result": "expired"})
    builder.add_edge(START, spec.name)
    builder.add_edge("done", END)
    builder.add_edge("expired", END)
    return builder


def escalating() -> StateGraph[State, None, State, State]:
    spec = ApprovalSpec(
        name="sign",
        action="sign",
        summary=lambda s: "Sign",
        record_field="sign",
        deadline_s=2.0,
        on_timeout="escalate",
        escalate_to="group:leads",
    )
    return _single(spec, {"approve": "done", "reject": "done"})


def expiring() -> StateGraph[State, None, State, State]:
    spec = ApprovalSpec(
        name="sign",
        action="sign",
        summary=lambda s: "Sign",
        record_field="sign",
        deadline_s=1.0,
        on_timeout="branch",
    )
    return _single(spec, {"approve": "done", "reject": "done", "timeout": "expired"})


ROUTE = DecisionSpec(
    name="route_it",
    instructions="Route the text.",
    branches=[Branch(name="refund", description="money back"), Branch(name="answer", description="question")],
    fallback="answer",
    inputs=["text"],
    review_below=1.0,  # every decision below certainty waits for a person
    max_attempts=2,
    timeout_s=2,
)


def reviewed() -> StateGraph[State, Context, State, State]:
    """An LLM decision whose every result goes to a person for review."""
    builder = StateGraph(State, context_schema=Context)
    builder.add_node("refund_desk", lambda s: {"handled_by": "refund_desk"})
    builder.add_node("answer_desk", lambda s: {"handled_by": "answer_desk"})
    builder.add_edge(START, "route_it")
    add_decision(builder, ROUTE, {"refund": "refund_desk", "answer": "answer_desk"})
    builder.add_edge("refund_desk", END)
    builder.add_edge("answer_desk", END)
    return builder


contract_graph = contract()
reviewed_graph = reviewed()
escalating_graph = escalating()
expiring_graph = expiring()
