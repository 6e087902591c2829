"""Approval deadlines, enforced by every API process and exactly once across them.

Pending approvals with a deadline sit in one sorted set by deadline (``store/approvals.py``).
Reminders (``approval.reminder`` webhooks, three quarters into the deadline) go out from
the same loop. Each API process sleeps until the earliest deadline is due (at most ``MAX_SLEEP_S``, so a new
earlier deadline is seen soon) and then applies the approval's ``on_timeout``:

- ``approve`` / ``reject``: answer it so, as ``system:deadline``;
- ``branch``: answer ``timeout``, which the graph routes to its own branch;
- ``escalate``: hand it to ``escalate_to`` with a fresh deadline of the same length; when
  that one passes too, it is rejected (an approval is never forgotten).

Answers go through the same atomic step as a person's (the approval must still be pending,
so a late person and the deadline cannot both answer); escalation is a compare-and-set on
the deadline. Deadlines live in Redis, so one that passes while every process is down is
enforced by the first process to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from api.auth import Principal
from api.routes.runs import submit_run
from api.schemas import RunCreate
from core.errors import Conflict, NotFound
from core.ids import now_ms
from runs.engine import Engine
from store.approvals import audit_entry

log = logging.getLogger("interlock.deadlines")

MAX_SLEEP_S = 1.0
ACTOR = "system:deadline"


async def enforce_deadlines(engine: Engine) -> None:
    """Run until cancelled."""
    while True:
        try:
            now = now_ms()
            for approval_id, deadline in await engine.approvals.due(now):
                await expire(engine, approval_id, deadline)
            for approval_id in await engine.approvals.reminders_due(now):
                approval = await engine.approvals.get(approval_id)
                if approval is not None and await engine.approvals.remind(approval):
                    log.info("approval %s: reminder sent", approval_id)
            upcoming = await engine.approvals.next_deadline()
            wait = (
                MAX_SLEEP_S if upcoming is None else min(MAX_SLEEP_S, max(0.0, (upcoming - now_ms()) / 1000))
            )
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("enforcing approval deadlines failed; trying again shortly")
            await asyncio.sleep(MAX_SLEEP_S)


async def expire(engine: Engine, approval_id: str, deadline: int) -> None:
    approval = await engine.approvals.get(approval_id)
    if approval is None or approval["status"] != "pending":
        await engine.approvals.drop_due(approval_id)
        return
    request: dict[str, Any] = approval["request"]
    on_timeout = request.get("on_timeout", "reject")
    if on_timeout == "escalate" and approval["escalations"] == 0 and request.get("escalate_to"):
        period_ms = int(float(request.get("deadline_s") or 0) * 1000)
        entry = audit_entry(
            approval,
            "escalated",
            actor=ACTOR,
            from_assignee=approval["assignee"],
            to_assignee=request["escalate_to"],
            deadline_at=deadline + period_ms if period_ms else None,
        )
        if await engine.approvals.escalate(
            approval,
            deadline=deadline,
            assignee=request["escalate_to"],
            new_deadline=now_ms() + period_ms if period_ms else None,
            entry=entry,
        ):
            log.info("approval %s escalated to %s", approval_id, request["escalate_to"])
        return
    thread = await engine.store.get_thread(approval["thread_id"])
    if thread is not None and thread["active_run"]:
        return  # answered once the thread's active run ends: it stays due until then
    decision = {"approve": "approve", "branch": "timeout"}.get(on_timeout, "reject")
    answer = {"decision": decision, "comment": "the deadline passed", "decided_by": ACTOR}
    system = Principal(tenant=approval["tenant"], roles=("admin",), key_id="system", name=ACTOR)
    body = RunCreate.model_validate(
        {"assistant_id": approval["assistant_id"], "command": {"resume": {approval["interrupt_id"]: answer}}}
    )
    try:
        run_id, _ = await submit_run(engine, None, system, approval["thread_id"], body, [])
    except (Conflict, NotFound) as e:  # decided meanwhile, or the thread is gone
        log.info("approval %s: deadline not applied (%s)", approval_id, e.message)
        with contextlib.suppress(Exception):
            await engine.approvals.drop_due(approval_id)
        return
    log.info("approval %s timed out: %s (run %s)", approval_id, decision, run_id)
