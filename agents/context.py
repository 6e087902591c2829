"""The runtime context every Interlock graph node receives (``runtime.context``).

Nodes take their dependencies from here, never from globals, so tests and workers can
hand in real or local ones (langgraph ``Runtime[Context]``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aredis

from agents.examples import ExampleSelector
from agents.llm import LLMClient


class DecisionLog(Protocol):
    """Where decision nodes record every decision (implemented in ``store/decisions.py``,
    handed in by the composition root so agents never import the store)."""

    async def append(self, entry: Mapping[str, Any]) -> str:
        """Record one decision; returns its log id."""
        ...


class NoDecisionLog:
    """A DecisionLog that keeps nothing (for graphs run outside the service)."""

    async def append(self, entry: Mapping[str, Any]) -> str:
        return ""


class EventBus(Protocol):
    """Delivers an outside event to the run waiting for it (``agents/events.py``):
    implemented in ``runs/events.py`` and handed in by the composition root, so graphs
    (``reconcile_payments``) can resume other threads without importing the run store."""

    async def deliver(
        self,
        tenant: str,
        event: str,
        key: str,
        value: Mapping[str, Any],
        *,
        actor: str,
        keep_early: bool = True,
    ) -> dict[str, Any]:
        """Resume the run waiting for ``event`` with correlation ``key`` with ``value``.

        Returns ``{"outcome": "resumed" | "stored" | "already_resolved" | "no_waiter", …}``;
        ``stored``: nobody waits yet and ``keep_early`` is set, so the first run that
        waits for it gets it at once.
        """
        ...


class NoEventBus:
    """An EventBus for graphs run outside the service: delivers nothing."""

    async def deliver(
        self,
        tenant: str,
        event: str,
        key: str,
        value: Mapping[str, Any],
        *,
        actor: str,
        keep_early: bool = True,
    ) -> dict[str, Any]:
        return {"outcome": "no_waiter"}


@dataclass(frozen=True)
class Context:
    """Dependencies of a running graph, built once per worker process."""

    llm: LLMClient
    """The OpenAI-compatible endpoint decision nodes call."""

    redis: aredis.Redis
    """Where tool steps record their side effects (idempotency ledger)."""

    key_prefix: str = "il:"

    decisions: DecisionLog = field(default_factory=NoDecisionLog)

    examples: ExampleSelector | None = None
    """Chooses few-shot examples per input (``agents/examples.py``); None: fixed ones."""
    """The decisions log: inputs, candidates, choice, confidence, model, method."""

    demo_systems_url: str = "http://127.0.0.1:8125"
    """Base URL of the outside systems tool steps call (``INTERLOCK_DEMO_SYSTEMS_URL``)."""

    events: EventBus = field(default_factory=NoEventBus)
    """Resumes runs waiting for outside events (``runs/events.py``)."""

    checkpoints_stored: Callable[[str], Awaitable[None]] | None = None
    """Waits until the checkpoints a thread's run has written so far are stored (the
    worker's saver writes behind, ``store/checkpoint.py``); tool steps call it before they
    act. None: the checkpointer stores every write before the graph moves on."""
