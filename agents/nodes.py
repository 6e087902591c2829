"""Turn a declared decision into LangGraph nodes and edges.

``add_decision(builder, spec, routes)`` adds the decision node ``<name>`` and, when the
spec asks for review (``review_below``), a review step ``<name>_review``::

    <name> -> {routes[chosen]                     (confident)
             | <name>_review -> routes[person's choice]}   (low confidence / fallback)

Every decision — the model's and a reviewer's — is written to the state
(``record_field``) and to the decisions log (``runtime.context.decisions``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Hashable, Mapping
from typing import Any, Literal, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, ValidationError

from agents.context import Context
from agents.decision import Decision, DecisionSpec, decide

DECISION_METADATA_KEY = "interlock_decision"
"""Node metadata marking an LLM decision node (the value is the spec's name), so that
pictures of the graph can show what kind of step a node is."""

REVIEW_METADATA_KEY = "interlock_review"
"""…and a decision's review step."""


class Node(Protocol):
    """A LangGraph node that receives its config and runtime (dependencies) by keyword."""

    def __call__(
        self, state: Any, config: RunnableConfig, *, runtime: Runtime[Context]
    ) -> Awaitable[dict[str, Any]]: ...


class ReviewRequest(BaseModel):
    """What a reviewer sees (the interrupt value of ``<name>_review``): an approval
    request (``/approvals``) to accept the model's branch or change it, with the
    model's choice pre-filled as the suggestion."""

    type: str = "approval"
    action: str
    node: str
    summary: str
    suggestion: dict[str, Any]
    """The model's choice (or the fallback), its confidence and method, pre-filled."""
    confidence: float | None
    method: str
    options: list[str] = ["approve", "edit"]
    """``approve`` the suggested branch, or ``edit`` it to another."""
    edit_schema: dict[str, Any]
    editable: dict[str, Any]
    branches: dict[str, str]
    """Branch name → when to take it."""
    details: dict[str, Any]
    """What the model saw."""
    assignee: str = "approver"
    error: str | None = None


class ReviewAnswer(BaseModel):
    """A reviewer's answer: ``approve`` the suggestion, or ``edit`` with ``edits.branch``;
    the short form ``{"branch": …}`` works too (without a branch the suggestion stands)."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "edit", "timeout", "reject"] | None = None
    edits: dict[str, Any] | None = None
    branch: str | None = None
    comment: str = ""
    decided_by: str | None = None

    @property
    def chosen(self) -> str | None:
        if self.decision == "edit":
            return (self.edits or {}).get("branch")
        return self.branch


def _log_entry(
    decision: Decision, inputs: Mapping[str, Any], config: RunnableConfig, runtime: Runtime[Context]
) -> dict[str, Any]:
    info = runtime.execution_info
    meta = config.get("metadata") or {}
    return {
        **decision.model_dump(mode="json", exclude={"log_id"}),
        "graph_id": meta.get("graph_id"),
        "tenant": meta.get("tenant", "default"),
        "thread_id": info.thread_id if info else None,
        "run_id": meta.get("run_id"),
        "task_id": info.task_id if info else None,
        "inputs": dict(inputs),
        "overrides": None,
        "decided_by": decision.reviewed_by,
        "ts": time.time_ns() // 1_000_000,
    }


def decision_node(spec: DecisionSpec, *, route_field: str = "route", record_field: str = "decision") -> Node:
    """A node that lets the LLM choose one of ``spec.branches``.

    It writes the chosen branch to ``route_field`` and the :class:`Decision` to
    ``record_field``. Model trouble never fails the node: the spec's fallback is taken.
    """

    async def node(state: Any, config: RunnableConfig, *, runtime: Runtime[Context]) -> dict[str, Any]:
        inputs = {name: state[name] for name in spec.inputs if name in state}
        selector = runtime.context.examples
        examples = (
            await asyncio.to_thread(selector.select, spec, inputs)
            if selector is not None and spec.nearest_examples
            else None
        )
        decision = await decide(spec, inputs, runtime.context.llm, examples)
        log_id = await runtime.context.decisions.append(_log_entry(decision, inputs, config, runtime))
        decision = decision.model_copy(update={"log_id": log_id or None})
        return {route_field: decision.chosen, record_field: decision.model_dump(mode="json")}

    node.__name__ = spec.name
    return node


def review_node(spec: DecisionSpec, *, route_field: str = "route", record_field: str = "decision") -> Node:
    """A node that pauses for a person to confirm or change the model's choice."""
    branches = {b.name: b.description for b in spec.branches}

    async def node(state: Any, config: RunnableConfig, *, runtime: Runtime[Context]) -> dict[str, Any]:
        model = Decision.model_validate(state[record_field])
        inputs = {name: state[name] for name in spec.inputs if name in state}
        confidence = "unknown" if model.confidence is None else f"{model.confidence:.0%}"
        request = ReviewRequest(
            action=f"review {spec.name}",
            node=spec.name,
            summary=f"{spec.name}: the model suggests '{model.chosen}' ({model.method}, confidence {confidence})",
            suggestion={"branch": model.chosen, "confidence": model.confidence, "method": model.method},
            confidence=model.confidence,
            method=model.method,
            edit_schema={
                "type": "object",
                "properties": {"branch": {"type": "string", "enum": spec.branch_names}},
                "required": ["branch"],
            },
            editable={"branch": model.chosen},
            branches=branches,
            details=inputs,
        )
        while True:
            raw = interrupt(request.model_dump(exclude_none=True))
            try:
                answer = ReviewAnswer.model_validate(raw or {})
                if answer.decision == "edit" and answer.chosen is None:
                    raise ValueError("decision 'edit' needs edits.branch")
                if answer.chosen is not None and answer.chosen not in branches:
                    raise ValueError(f"branch must be one of {spec.branch_names}, got {answer.chosen!r}")
                break
            except (ValidationError, ValueError) as e:
                request = request.model_copy(update={"error": f"answer not accepted: {e}"})
        human = model.model_copy(
            update={
                "chosen": answer.chosen or model.chosen,
                "method": "human",
                "model_choice": model.chosen,
                "reviewed_by": answer.decided_by,
                "comment": answer.comment or None,
                "needs_review": False,
            }
        )
        entry = {
            **_log_entry(human, inputs, config, runtime),
            "overrides": model.log_id,
            "comment": human.comment,
        }
        log_id = await runtime.context.decisions.append(entry)
        human = human.model_copy(update={"log_id": log_id or None})
        return {route_field: human.chosen, record_field: human.model_dump(mode="json")}

    node.__name__ = f"{spec.name}_review"
    return node


def add_decision(
    builder: StateGraph[Any, Any, Any, Any],
    spec: DecisionSpec,
    routes: Mapping[str, str],
    *,
    route_field: str = "route",
    record_field: str = "decision",
) -> None:
    """Add ``spec`` to ``builder``: the decision node, its review step when the spec asks
    for one, and edges from each branch name to the node in ``routes``."""
    missing = sorted(set(spec.branch_names) - set(routes))
    if missing:
        raise ValueError(f"decision '{spec.name}': no route for branches {missing}")
    # The node protocols langgraph declares cannot express "config and runtime", which
    # it does inject; hence Any.
    decide_node: Any = decision_node(spec, route_field=route_field, record_field=record_field)
    builder.add_node(spec.name, decide_node, metadata={DECISION_METADATA_KEY: spec.name})
    targets: dict[Hashable, str] = {name: node for name, node in routes.items()}
    if spec.review_below is None:
        builder.add_conditional_edges(spec.name, lambda s: s[route_field], targets)
        return
    review = f"{spec.name}_review"
    check_node: Any = review_node(spec, route_field=route_field, record_field=record_field)
    builder.add_node(review, check_node, metadata={REVIEW_METADATA_KEY: spec.name})
    builder.add_conditional_edges(
        spec.name,
        lambda s: "__review__" if s[record_field].get("needs_review") else s[route_field],
        {**targets, "__review__": review},
    )
    builder.add_conditional_edges(review, lambda s: s[route_field], targets)
