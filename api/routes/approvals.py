"""Approvals: the human approval steps runs wait on, across threads, for the people who
decide them. Beside the LangGraph protocol, tenant-scoped like everything else.

Deciding (``POST /approvals/{id}/decision``) creates the run that resumes the thread with
the answer, through the durable queue, and marks the approval decided in the same atomic
step; a second answer is a 409 and writes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from agents.approval import ROUTES_METADATA_KEY, SPEC_METADATA_KEY, ApprovalDecision, ApprovalSpec
from api.auth import Access, Principal, PrincipalDep
from api.deps import EngineDep
from api.graph_path import graph_path
from api.routes.runs import run_view, submit_run
from api.routes.threads import thread_view
from api.schemas import MAX_OFFSET, RunCreate, iso, page_headers
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.ids import STREAM_ID, is_stream_id, now_ms
from runs.engine import Engine

router = APIRouter(tags=["approvals"])


class DecisionBody(BaseModel):
    """Body of ``POST /approvals/{id}/decision``."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject", "edit"]
    comment: str = Field(default="", max_length=4000)
    edits: dict[str, Any] | None = None


def approval_view(a: dict[str, Any]) -> dict[str, Any]:
    request = a["request"]
    deadline = a.get("deadline_at")
    return {
        "approval_id": a["id"],
        "status": a["status"],
        "thread_id": a["thread_id"],
        "run_id": a["run_id"],
        "graph_id": a["graph_id"],
        "assistant_id": a["assistant_id"],
        "node": a["node"],
        "action": request.get("action"),
        "summary": request.get("summary"),
        "amount": request.get("amount"),
        "details": request.get("details", {}),
        "options": request.get("options", ["approve", "reject"]),
        "edit_schema": request.get("edit_schema"),
        "editable": request.get("editable"),
        "suggestion": request.get("suggestion"),
        "assignee": a["assignee"],
        "escalations": a["escalations"],
        "on_timeout": request.get("on_timeout", "reject"),
        "requested_at": iso(a["requested_at"]),
        "deadline_at": iso(deadline) if deadline is not None else None,
        "overdue": a["status"] == "pending" and deadline is not None and deadline < now_ms(),
        "decision": a["decision"],
        "decided_at": iso(a["decided_at"]) if a["decided_at"] else None,
        "resume_run_id": a["resume_run"],
    }


async def require_approval(engine: Engine, approval_id: str, tenant: str) -> dict[str, Any]:
    found = await engine.approvals.get(approval_id, tenant)
    if found is None:
        raise NotFound(f"approval {approval_id} not found")
    return found


def _node_metadata(engine: Engine, approval: dict[str, Any]) -> dict[str, Any]:
    if approval["graph_id"] not in engine.registry:
        return {}
    node = engine.registry.get(approval["graph_id"]).builder.nodes.get(approval["node"])
    return dict(node.metadata or {}) if node is not None else {}


def approval_routes(engine: Engine, approval: dict[str, Any]) -> dict[str, str]:
    """Where each answer leads: ``{"approve": "<node>", …}`` (empty when not declared)."""
    return dict(_node_metadata(engine, approval).get(ROUTES_METADATA_KEY, {}))


def _check_edits(schema: dict[str, Any] | None, edits: dict[str, Any] | None) -> None:
    """For steps without a declared model: the edited fields must be in the request's
    schema, and within its ``enum`` where it has one (the step validates fully)."""
    if not edits:
        return
    fields = (schema or {}).get("properties", {})
    for name, value in edits.items():
        if name not in fields:
            raise ValueError(f"edits.{name} is not editable here ({', '.join(fields) or 'nothing is'})")
        allowed = fields[name].get("enum")
        if allowed is not None and value not in allowed:
            raise ValueError(f"edits.{name} must be one of {allowed}, got {value!r}")


async def find_approvals(
    engine: Engine,
    principal: Principal,
    *,
    status: Literal["pending", "decided", "all"] = "pending",
    graph_id: str | None = None,
    assignee: str | None = None,
    thread_id: str | None = None,
    mine: bool = False,
    older_than_s: float | None = None,
    sort: Literal["newest", "oldest", "deadline"] = "newest",
) -> list[dict[str, Any]]:
    """The tenant's approvals (store records) matching the filters, in ``sort`` order;
    ``deadline`` is most urgent first, those without a deadline last."""
    found = await engine.approvals.search(principal.tenant, newest_first=sort != "oldest")
    cutoff = now_ms() - older_than_s * 1000 if older_than_s is not None else None
    found = [
        a
        for a in found
        if (status == "all" or a["status"] == status)
        and (graph_id is None or a["graph_id"] == graph_id)
        and (assignee is None or a["assignee"] == assignee)
        and (thread_id is None or a["thread_id"] == thread_id)
        and (not mine or principal.may_decide(a["assignee"]))
        and (cutoff is None or a["requested_at"] <= cutoff)
    ]
    if sort == "deadline":
        found.sort(
            key=lambda a: (a.get("deadline_at") is None, a.get("deadline_at") or 0, -a["requested_at"])
        )
    return found


@router.get("/approvals")
async def list_approvals(
    engine: EngineDep,
    principal: PrincipalDep,
    response: Response,
    status: Literal["pending", "decided", "all"] = "pending",
    graph_id: str | None = None,
    assignee: str | None = Query(None, description="a role or group:<name>"),
    thread_id: str | None = None,
    mine: bool = Query(False, description="only approvals this key may decide"),
    older_than_s: float | None = Query(None, ge=0, description="requested at least this long ago"),
    sort: Literal["newest", "oldest", "deadline"] = "newest",
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> list[dict[str, Any]]:
    found = await find_approvals(
        engine,
        principal,
        status=status,
        graph_id=graph_id,
        assignee=assignee,
        thread_id=thread_id,
        mine=mine,
        older_than_s=older_than_s,
        sort=sort,
    )
    page_headers(response, total=len(found), offset=offset, limit=limit)
    return [approval_view(a) for a in found[offset : offset + limit]]


async def approval_detail(engine: Engine, principal: Principal, approval_id: str) -> dict[str, Any]:
    """The approval with what a person needs to decide it: the thread, the run, the path
    the run took to get here, the decisions that led here, and the state."""
    approval = await require_approval(engine, approval_id, principal.tenant)
    thread = await engine.store.get_thread(approval["thread_id"], principal.tenant)
    run = await engine.store.get_run(approval["thread_id"], approval["run_id"], principal.tenant)
    graph = engine.graphs.get(approval["graph_id"])
    path = (
        await graph_path(graph, approval["thread_id"]) if graph is not None else {"steps": [], "waiting": []}
    )
    decisions = await engine.decisions.search(
        thread_id=approval["thread_id"], tenant=principal.tenant, limit=50
    )
    routes = approval_routes(engine, approval)
    return {
        **approval_view(approval),
        "may_decide": principal.may_decide(approval["assignee"]) and principal.can(Access.ANSWER),
        "routes": routes,
        "thread": thread_view(thread) if thread else None,
        "run": run_view(run) if run else None,
        "path": path,
        "decisions": decisions,
        "state": thread["values"] if thread else None,
    }


@router.get("/approvals/{approval_id}")
async def get_approval(approval_id: str, engine: EngineDep, principal: PrincipalDep) -> dict[str, Any]:
    """The approval with what a person needs to decide it: the thread, the run, the path
    the run took to get here, the decisions that led here, and the state."""
    return await approval_detail(engine, principal, approval_id)


async def decide(
    engine: Engine, request: Request | None, principal: Principal, approval_id: str, body: DecisionBody
) -> dict[str, Any]:
    """Approve, reject or edit an approval: check who answers and the answer, then create
    the run that resumes the thread with it (which marks the approval decided in the same
    atomic step). The JSON route and the console both decide through here.

    Returns ``{"approval", "run", "next"}``: the decided approval, the resuming run, and
    a sentence saying what happens next.

    Raises:
        NotFound: no such approval for this tenant.
        Conflict: it was decided already; nothing was written.
        Forbidden: this principal may not decide it.
        InvalidInput: the answer is not one of the options, or the edits are invalid.
    """
    approval = await require_approval(engine, approval_id, principal.tenant)
    if approval["status"] != "pending":
        who = (approval["decision"] or {}).get("decided_by", "someone")
        raise Conflict(f"approval {approval_id} was already decided by {who}; nothing was written")
    if not principal.may_decide(approval["assignee"]):
        raise Forbidden(
            f"approval {approval_id} is assigned to {approval['assignee']}; this key ({principal.key_id}) may not decide it"
        )
    answer: dict[str, Any] = body.model_dump(exclude_none=True)
    meta = _node_metadata(engine, approval)
    spec: ApprovalSpec | None = meta.get(SPEC_METADATA_KEY)
    try:
        if spec is not None:
            answer = spec.check(answer).model_dump(mode="json", exclude_none=True)
        else:
            checked = ApprovalDecision.model_validate(answer)
            if checked.decision not in approval["request"].get("options", ["approve", "reject"]):
                raise ValueError(f"decision '{checked.decision}' is not an option here")
            _check_edits(approval["request"].get("edit_schema"), checked.edits)
    except ValueError as e:
        raise InvalidInput(f"answer not accepted: {e}") from None
    resume = RunCreate.model_validate(
        {"assistant_id": approval["assistant_id"], "command": {"resume": {approval["interrupt_id"]: answer}}}
    )
    thread = await engine.store.get_thread(approval["thread_id"], principal.tenant)
    queued = bool(thread and thread.get("active_run"))  # the new run waits for that one
    run_id, record = await submit_run(engine, request, principal, approval["thread_id"], resume, [])
    decided = await require_approval(engine, approval_id, principal.tenant)
    routes = meta.get(ROUTES_METADATA_KEY, {})
    target = routes.get(body.decision)
    return {
        "approval": approval_view(decided),
        "run": {"run_id": run_id, "thread_id": approval["thread_id"], "status": record["status"]},
        "next": (
            f"run {run_id} resumes thread {approval['thread_id']} at '{approval['node']}' with "
            f"'{body.decision}'"
            + (f"; the workflow continues with '{target}'" if target else "")
            + (" once the thread's active run ends" if queued else "")
        ),
    }


@router.post("/approvals/{approval_id}/decision")
async def decide_approval(
    approval_id: str, body: DecisionBody, request: Request, engine: EngineDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Approve, reject or edit; the run resumes through the durable queue."""
    return await decide(engine, request, principal, approval_id, body)


@router.get("/approvals/{approval_id}/audit")
async def approval_audit(
    approval_id: str, engine: EngineDep, principal: PrincipalDep
) -> list[dict[str, Any]]:
    """Who requested, who decided, when, what they saw and what they changed."""
    approval = await require_approval(engine, approval_id, principal.tenant)
    return await engine.approvals.audit(approval["thread_id"], approval_id)


@router.get("/audit/export")
async def export_audit(
    engine: EngineDep,
    principal: PrincipalDep,
    after: str = Query("-", pattern=f"^-$|{STREAM_ID}", description="an entry id: export after it"),
) -> StreamingResponse:
    """The tenant's whole approval audit trail as JSON lines, oldest first. Each line has
    an ``entry_id``; pass the last one as ``after`` to continue."""
    if after != "-" and not is_stream_id(after):  # checked before the stream starts
        raise InvalidInput(f"after={after!r} is not an audit entry id: its parts must fit 64 bits")

    async def lines() -> AsyncIterator[bytes]:
        cursor = after
        while True:
            batch = await engine.approvals.export(principal.tenant, after=cursor)
            if not batch:
                return
            for entry_id, data in batch:
                yield b'{"entry_id":"' + entry_id.encode() + b'",' + data[1:] + b"\n"
            cursor = batch[-1][0]

    return StreamingResponse(lines(), media_type="application/x-ndjson")
