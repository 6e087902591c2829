"""The console's pages: login, the approvals inbox, an approval with its context and the
form to decide it, recent runs and a run with its path, timings and decisions.

Everything a page shows comes from the same functions the JSON API uses
(``api/routes/approvals.py``, ``api/graph_path.py``, the stores); deciding goes through
``decide()``, exactly like ``POST /approvals/{id}/decision``. Pages are authenticated
from the session cookie (``api/auth.py``); forms that change something also carry the
session's CSRF token and must come from this origin.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api.auth import DEV_PRINCIPAL, Access, Authenticator, Principal, PrincipalDep
from api.console import graph_svg
from api.console.render import page, session_of
from api.console.session import COOKIE, FLASH_COOKIE, MAX_AGE_S, PATH, Session, decode_flash, encode_flash
from api.deps import EngineDep
from api.graph_path import graph_path
from api.routes.approvals import (
    DecisionBody,
    approval_detail,
    approval_routes,
    approval_view,
    decide,
    find_approvals,
    require_approval,
)
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.ids import now_ms
from runs.compile import CompiledGraph
from runs.engine import Engine

router = APIRouter(prefix=PATH, include_in_schema=False)

VERBS = {"approve": "Approved", "reject": "Rejected", "edit": "Edited and approved"}
RUN_STATUSES = ("pending", "running", "interrupted", "success", "error", "timeout")


# --- forms and sessions ---------------------------------------------------------------


async def _form(request: Request) -> dict[str, str]:
    """An HTML form's fields (``application/x-www-form-urlencoded``, what every browser
    sends for a form without files)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise InvalidInput("send the console's form (application/x-www-form-urlencoded)")
    body = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True, max_num_fields=200))


def _same_origin(request: Request) -> None:
    """Refuse a form posted from another site (browsers send ``Origin`` with every POST)."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"a console form was posted from another site ({origin}); nothing was done")


def _local(target: str | None) -> str:
    """Where to go after logging in: a console page of this site, never anywhere else."""
    if target and target.startswith(PATH) and not target.startswith("//") and "\\" not in target:
        return target
    return PATH


def _cookie(response: Response, name: str, value: str, request: Request, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.get("/login")
async def login_form(request: Request, next: str = PATH) -> Response:
    auth: Authenticator = request.app.state.auth
    session = session_of(request)
    if session is not None and (not auth.enabled or await auth.principal(session.key) is not None):
        return RedirectResponse(_local(next), status_code=303)
    return page(request, "login.html", {"next": _local(next), "error": None, "auth_off": not auth.enabled})


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key like any request's; on success the session cookie holds it."""
    _same_origin(request)
    form = await _form(request)
    key = form.get("key", "").strip()
    auth: Authenticator = request.app.state.auth
    principal = DEV_PRINCIPAL if not auth.enabled else await auth.principal(key) if key else None
    if principal is None:
        error = "That API key is unknown or revoked." if key else "Enter an API key."
        context = {"next": _local(form.get("next")), "error": error, "auth_off": False}
        return page(request, "login.html", context, status=401)
    response = RedirectResponse(_local(form.get("next")), status_code=303)
    _cookie(response, COOKIE, Session.new(key).encode(), request, MAX_AGE_S)
    return response


@router.api_route("/logout", methods=["GET", "POST"])
async def logout(request: Request) -> Response:
    response = RedirectResponse(f"{PATH}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PATH)
    response.delete_cookie(FLASH_COOKIE, path=PATH)
    return response


# --- the inbox ----------------------------------------------------------------------


def _may_decide(principal: Principal, approval: dict[str, Any]) -> bool:
    return principal.can(Access.ANSWER) and principal.may_decide(approval["assignee"])


def _row(principal: Principal, approval: dict[str, Any]) -> dict[str, Any]:
    return {**approval_view(approval), "may_decide": _may_decide(principal, approval)}


async def _waiting_for_me(engine: Engine, principal: Principal) -> int:
    """The header's count: pending approvals this person may decide."""
    return len(await find_approvals(engine, principal, mine=True)) if principal.can(Access.ANSWER) else 0


@router.get("")
async def inbox(
    request: Request,
    engine: EngineDep,
    principal: PrincipalDep,
    sort: Literal["deadline", "newest"] = "deadline",
    mine: bool = False,
) -> Response:
    """Pending approvals, most urgent (or newest) first, and the latest decided ones."""
    found = await find_approvals(engine, principal, status="all", mine=mine, sort=sort)
    pending = [_row(principal, a) for a in found if a["status"] == "pending"]
    decided = sorted(
        (a for a in found if a["status"] != "pending"), key=lambda a: a["decided_at"] or 0, reverse=True
    )
    flash = decode_flash(request.cookies.get(FLASH_COOKIE))
    response = page(
        request,
        "inbox.html",
        {
            "pending": pending,
            "decided": [_row(principal, a) for a in decided[:8]],
            "sort": sort,
            "mine": mine,
            "flash": flash,
            "nav": "inbox",
            "waiting_for_me": sum(1 for a in pending if a["may_decide"]),
        },
        principal=principal,
    )
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=PATH)
    return response


# --- one approval -------------------------------------------------------------------


async def _picture(
    graph: CompiledGraph | None,
    steps: list[dict[str, Any]],
    waiting: list[str],
    *,
    finished: bool,
    here: str | None = None,
    title: str,
) -> tuple[str | None, dict[str, str]]:
    """The graph's picture with the path, and each node's kind (step, approval…)."""
    if graph is None:
        return None, {}
    try:
        drawable = await graph.aget_graph()
    except NotImplementedError:
        return None, {}
    picture = graph_svg.picture_of(drawable)
    visited, taken = graph_svg.taken_edges(picture, steps, waiting, finished)
    svg = graph_svg.render(picture, visited=visited, taken=taken, waiting=waiting, here=here, title=title)
    return svg, dict(picture.nodes)


def _edit_fields(detail: dict[str, Any], form: dict[str, str] | None) -> list[dict[str, Any]]:
    """The editable fields of an approval as form inputs, pre-filled with the current
    values (or with what was just submitted, when it was not accepted)."""
    schema = detail.get("edit_schema") or {}
    current = detail.get("editable") or {}
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        kind = _json_type(prop)
        value = form.get(f"edit.{name}") if form is not None else None
        if value is None:
            value = current.get(name, prop.get("default"))
        fields.append(
            {
                "name": name,
                "label": prop.get("title") or name.replace("_", " ").capitalize(),
                "type": kind,
                "enum": prop.get("enum"),
                "value": "" if value is None else str(value).lower() if kind == "boolean" else value,
                "min": prop.get("minimum", prop.get("exclusiveMinimum")),
                "max": prop.get("maximum", prop.get("exclusiveMaximum")),
                "description": prop.get("description"),
                "required": name in (schema.get("required") or []),
            }
        )
    return fields


def _json_type(prop: dict[str, Any]) -> str:
    if "type" in prop:
        return str(prop["type"])
    for option in prop.get("anyOf", []):  # Optional[...] fields
        if option.get("type") not in (None, "null"):
            return str(option["type"])
    return "string"


def _edits(detail: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """The submitted edits, typed by the approval's edit schema."""
    edits: dict[str, Any] = {}
    for field in _edit_fields(detail, None):
        raw = form.get(f"edit.{field['name']}", "").strip()
        if raw == "":
            continue
        try:
            if field["type"] == "number":
                edits[field["name"]] = float(raw)
            elif field["type"] == "integer":
                edits[field["name"]] = int(raw)
            elif field["type"] == "boolean":
                edits[field["name"]] = raw.lower() in ("true", "on", "1", "yes")
            else:
                edits[field["name"]] = raw
        except ValueError:
            raise InvalidInput(f"{field['label']} must be a {field['type']}, got '{raw}'") from None
    return edits


async def _approval_page(
    request: Request,
    engine: Engine,
    principal: Principal,
    approval_id: str,
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    detail = await approval_detail(engine, principal, approval_id)
    path = detail["path"]
    thread_status = (detail.get("thread") or {}).get("status")
    picture, _ = await _picture(
        engine.graphs.get(detail["graph_id"]),
        path["steps"],
        path["waiting"],
        finished=thread_status == "idle",
        here=detail["node"],
        title=f"{detail['graph_id']}: the path this thread took",
    )
    audit = await engine.approvals.audit(detail["thread_id"], approval_id)
    return page(
        request,
        "approval.html",
        {
            "a": detail,
            "picture": picture,
            "audit": audit,
            "fields": _edit_fields(detail, form),
            "comment": (form or {}).get("comment", ""),
            "chosen": (form or {}).get("decision"),
            "error": error,
            "nav": "inbox",
            "waiting_for_me": await _waiting_for_me(engine, principal),
        },
        principal=principal,
        status=status,
    )


@router.get("/approvals/{approval_id}")
async def approval_page(
    approval_id: str, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    return await _approval_page(request, engine, principal, approval_id)


@router.post("/approvals/{approval_id}/decision")
async def decide_in_console(
    approval_id: str, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    """The decide form: the same checks and the same decision as the JSON API; then back
    to the inbox with what happens next, or the page again with what was wrong."""
    _same_origin(request)
    form = await _form(request)
    session = session_of(request)
    if session is None or not session.check_csrf(form.get("csrf")):
        raise Forbidden(
            "this form has expired or did not come from the console: reload the page and decide again"
        )
    approval = await require_approval(engine, approval_id, principal.tenant)
    view = approval_view(approval)
    try:
        edits = _edits(view, form) if form.get("decision") == "edit" else None
        body = DecisionBody.model_validate(
            {"decision": form.get("decision"), "comment": form.get("comment", ""), "edits": edits}
        )
        thread = await engine.store.get_thread(approval["thread_id"], principal.tenant)
        busy = bool(thread and thread.get("active_run"))
        result = await decide(engine, request, principal, approval_id, body)
    except ValidationError as e:
        message = "; ".join(str(err["msg"]) for err in e.errors())
        return await _approval_page(
            request,
            engine,
            principal,
            approval_id,
            error=f"answer not accepted: {message}",
            form=form,
            status=422,
        )
    except InvalidInput as e:
        return await _approval_page(
            request, engine, principal, approval_id, error=e.message, form=form, status=422
        )
    except Conflict as e:
        return await _approval_page(request, engine, principal, approval_id, error=e.message, status=409)
    run = result["run"]
    target = approval_routes(engine, approval).get(body.decision)
    text = f"The run resumes at '{approval['node']}' with '{body.decision}'"
    text += f" and continues with '{target}'." if target else "."
    if busy:
        text += " It starts once the thread's active run ends."
    flash = {
        "title": f"{VERBS[body.decision]}: {view['summary'] or view['action']}",
        "text": text,
        "link": f"{PATH}/threads/{quote(run['thread_id'])}/runs/{quote(run['run_id'])}",
        "kind": "reject" if body.decision == "reject" else "approve",
    }
    response = RedirectResponse(PATH, status_code=303)
    _cookie(response, FLASH_COOKIE, encode_flash(flash), request, 120)
    return response


# --- runs -----------------------------------------------------------------------------


def _run_row(record: dict[str, Any]) -> dict[str, Any]:
    ended = record["status"] not in ("pending", "running")
    until = record["updated_at"] if ended else now_ms()
    return {**record, "duration_ms": max(0, until - record["created_at"]), "ended": ended}


@router.get("/runs")
async def runs_page(
    request: Request,
    engine: EngineDep,
    principal: PrincipalDep,
    status: str | None = Query(None, pattern="^(" + "|".join(RUN_STATUSES) + ")$"),
    offset: int = Query(0, ge=0),
) -> Response:
    page_size = 50
    records = await engine.store.recent_runs(principal.tenant, limit=page_size, offset=offset)
    rows = [_run_row(r) for r in records if status is None or r["status"] == status]
    return page(
        request,
        "runs.html",
        {
            "runs": rows,
            "status": status,
            "statuses": RUN_STATUSES,
            "offset": offset,
            "more": len(records) == page_size,
            "page_size": page_size,
            "nav": "runs",
            "waiting_for_me": await _waiting_for_me(engine, principal),
        },
        principal=principal,
    )


def _timeline(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each step with where its bar starts and ends, as a share of the run's span."""
    spans = []
    for step in steps:
        with contextlib.suppress(TypeError, ValueError):
            end = datetime.fromisoformat(step["finished_at"]).timestamp() * 1000
            spans.append((step, end - (step["duration_ms"] or 0), end))
    if not spans:
        return [{**s, "bar": None} for s in steps]
    t0 = min(s for _, s, _ in spans)
    total = max(max(e for _, _, e in spans) - t0, 1e-3)
    return [
        {**step, "bar": ((start - t0) / total * 100, max((end - start) / total * 100, 0.6))}
        for step, start, end in spans
    ]


def trace_link(template: str | None, thread_id: str, run_id: str) -> str | None:
    if not template:
        return None
    return template.replace("{thread_id}", quote(thread_id, safe="")).replace(
        "{run_id}", quote(run_id, safe="")
    )


@router.get("/threads/{thread_id}/runs/{run_id}")
async def run_page(
    thread_id: str, run_id: str, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    record = await engine.store.get_run(thread_id, run_id, principal.tenant)
    if record is None:
        raise NotFound(f"run {run_id} not found on thread {thread_id}")
    run = _run_row(record)
    graph = engine.graphs.get(record["graph_id"])
    path = await graph_path(graph, thread_id, run_id) if graph is not None else {"steps": [], "waiting": []}
    thread_runs = await engine.store.list_runs(thread_id, limit=20)
    latest = bool(thread_runs) and thread_runs[0]["run_id"] == run_id
    waiting = path["waiting"] if record["status"] == "interrupted" and latest else []
    picture, kinds = await _picture(
        graph,
        path["steps"],
        waiting,
        finished=record["status"] == "success",
        title=f"{record['graph_id']}: the path run {run_id[:8]} took",
    )
    decisions = await engine.decisions.search(thread_id=thread_id, tenant=principal.tenant, limit=50)
    approvals = await find_approvals(engine, principal, status="all", thread_id=thread_id, sort="oldest")
    return page(
        request,
        "run.html",
        {
            "run": run,
            "picture": picture,
            "steps": _timeline(path["steps"]),
            "kinds": kinds,
            "waiting": waiting,
            "decisions": decisions,
            "approvals": [_row(principal, a) for a in approvals],
            "thread_runs": [_run_row(r) for r in thread_runs],
            "trace_url": trace_link(engine.settings.trace_ui_url, thread_id, run_id),
            "nav": "runs",
            "waiting_for_me": await _waiting_for_me(engine, principal),
        },
        principal=principal,
    )
