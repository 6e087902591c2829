"""The runtime context every Interlock graph node receives (``runtime.context``).

Nodes take their dependencies from here, never from globals, so tests and workers can
hand in real or local ones (langgraph ``Runtime[Context]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aredis

from agents.llm import LLMClient


@dataclass(frozen=True)
class Context:
    """Dependencies of a running graph, built once per worker process."""

    llm: LLMClient
    """The OpenAI-compatible endpoint decision nodes call."""

    redis: aredis.Redis
    """Where tool steps record their side effects (idempotency ledger)."""

    key_prefix: str = "il:"
