"""``reconcile_payments``: find orders whose payment did not settle by its deadline, and
make them compensate.

```
START -> reconcile -> END
```

Meant to run on a schedule (a cron: ``*/5 * * * *``), or as a normal run. For each of the
tenant's runs waiting for ``payment.settled`` past its deadline it delivers a
``deadline.passed`` event to that run: the order resumes and takes its compensation
branch (refund the capture, release the reservations). A wait answered meanwhile — the
settlement came after all — is left alone: each wait is answered exactly once, by whoever
comes first. Input (all optional): ``{"event": "payment.settled", "limit": 100}``.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from agents.context import Context
from agents.events import DEADLINE_EVENT, overdue
from graphs.order_fulfillment import SETTLEMENT_EVENT

ACTOR = "reconcile_payments"


class Input(TypedDict, total=False):
    event: str
    limit: int


class State(TypedDict, total=False):
    event: str
    limit: int
    checked_at: int
    resumed: list[dict[str, Any]]
    """``{"key", "deadline_at", "thread_id", "run_id"}`` of each order resumed."""
    skipped: list[dict[str, Any]]
    """Overdue waits that needed nothing (answered meanwhile, or their run is gone)."""


async def reconcile(state: State, config: RunnableConfig, *, runtime: Runtime[Context]) -> State:
    ctx = runtime.context
    tenant = str((config.get("metadata") or {}).get("tenant") or "default")
    event = state.get("event") or SETTLEMENT_EVENT
    resumed: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for name, key, deadline_at in await overdue(
        ctx.redis, ctx.key_prefix, tenant, event=event, limit=state.get("limit") or 100
    ):
        value = {
            "event": DEADLINE_EVENT,
            "key": key,
            "event_id": f"deadline:{name}:{key}",
            "deadline_at": deadline_at,
            "by": ACTOR,
        }
        result = await ctx.events.deliver(tenant, name, key, value, actor=ACTOR, keep_early=False)
        entry = {"key": key, "deadline_at": deadline_at, **result}
        (resumed if result["outcome"] == "resumed" else skipped).append(entry)
    return {"event": event, "checked_at": time.time_ns() // 1_000_000, "resumed": resumed, "skipped": skipped}


def build_graph() -> StateGraph[State, Context, Input, State]:
    builder = StateGraph(State, context_schema=Context, input_schema=Input)
    node: Any = reconcile  # langgraph's node protocols cannot express "config and runtime"
    builder.add_node("reconcile", node)
    builder.add_edge(START, "reconcile")
    builder.add_edge("reconcile", END)
    return builder
