"""Node factories that turn declared building blocks into LangGraph nodes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from langgraph.runtime import Runtime

from agents.context import Context
from agents.decision import DecisionSpec, decide


class Node(Protocol):
    """A LangGraph node that receives the runtime (and so its dependencies) by keyword."""

    def __call__(self, state: Any, *, runtime: Runtime[Context]) -> Awaitable[dict[str, Any]]: ...


def decision_node(spec: DecisionSpec, *, route_field: str = "route", record_field: str = "decision") -> Node:
    """A node that lets the LLM choose one of ``spec.branches``.

    It writes the chosen branch to ``route_field`` (route on it with
    ``add_conditional_edges``) and the full :class:`~agents.decision.Decision` record to
    ``record_field``. Model trouble never fails the node: the spec's fallback is taken.
    """

    async def node(state: Any, *, runtime: Runtime[Context]) -> dict[str, Any]:
        inputs = {name: state[name] for name in spec.inputs if name in state}
        decision = await decide(spec, inputs, runtime.context.llm)
        return {route_field: decision.chosen, record_field: decision.model_dump(mode="json")}

    node.__name__ = spec.name
    return node
