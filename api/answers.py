"""Which approvals a resume answers, and whether the caller may answer them.

Both ways of answering an approval meet here: ``POST /approvals/{id}/decision`` and a
LangGraph-protocol resume (``command.resume``) of a thread that waits on one. Either way
the approval is marked decided in the same Lua script that creates the resuming run.
"""

from __future__ import annotations

from typing import Any

from api.auth import Principal
from core.errors import Forbidden
from runs.engine import Engine
from store.approvals import Answering, approval_id


def pending_interrupts(record: dict[str, Any]) -> list[str]:
    return [i["id"] for group in record["interrupts"].values() for i in group]


async def answered_approvals(
    engine: Engine, principal: Principal, record: dict[str, Any] | None, resume: Any
) -> tuple[Any, list[Answering]]:
    """``(resume, answering)``: the resume value with ``decided_by`` set on the answers
    to approvals, and the approvals it answers. Forbidden when the caller may not decide
    one of them."""
    if record is None or record.get("active_run") or record["status"] != "interrupted":
        return resume, []
    pending = pending_interrupts(record)
    as_map = isinstance(resume, dict) and bool(resume) and set(resume) <= set(pending)
    if as_map:
        answers = dict(resume)
    elif len(pending) == 1:
        answers = {pending[0]: resume}
    else:
        return resume, []
    answering: list[Answering] = []
    for interrupt_id, value in list(answers.items()):
        approval = await engine.approvals.get_in(
            record["thread_id"], approval_id(record["thread_id"], interrupt_id)
        )
        if approval is None:
            continue  # an interrupt that is not an approval step (or of a copied thread)
        if not principal.may_decide(approval["assignee"]):
            raise Forbidden(
                f"approval {approval['id']} is assigned to {approval['assignee']}; "
                f"this key ({principal.key_id}) may not decide it"
            )
        if isinstance(value, dict):
            value = {**value, "decided_by": principal.label}
            answers[interrupt_id] = value
        answering.append(engine.approvals.answering(approval, value, principal.label))
    return (answers if as_map else answers[pending[0]]), answering
