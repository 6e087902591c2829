"""Runs on a thread: create (background, streamed, or waited for), read, join.

Creating a run is one atomic Redis step (record + enqueue) before any answer, so a 2xx
means the run exists and a worker will execute it. Streaming and waiting read the run's
event stream in Redis with blocking reads: any API instance can serve any run, and a
client that reconnects with ``Last-Event-ID`` gets exactly the events it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request
from opentelemetry import propagate, trace
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response, StreamingResponse

from api.answers import answered_approvals
from api.auth import Access, Principal, PrincipalDep
from api.deps import EngineDep
from api.responses import JSONResponse
from api.routes.assistants import resolve_assistant_async, run_settings
from api.routes.threads import delete_thread_and_checkpoints, get_thread_admin, require_thread
from api.schemas import MAX_OFFSET, RunCreate, RunsCancel, iso
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import is_stream_id, new_id
from core.tracing import CONVERSATION_ID, SESSION_ID
from runs.engine import Engine
from runs.payload import RunPayload, SegmentLink, StreamMode
from store.approvals import Answering
from store.runs import END_EVENT, TERMINAL_STATUSES

log = logging.getLogger("interlock.api")
router = APIRouter(tags=["runs"])

HEARTBEAT_MS = 5_000
"""Idle streams get a ``: heartbeat`` comment this often, so proxies keep them open."""


def run_view(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": record["run_id"],
        "thread_id": record["thread_id"],
        "assistant_id": record["assistant_id"],
        "created_at": iso(record["created_at"]),
        "updated_at": iso(record["updated_at"]),
        "status": record["status"],
        "metadata": record["metadata"],
        "multitask_strategy": record["multitask_strategy"],
        "kwargs": record["kwargs"],
        **({"webhook_delivery": record["webhook_delivery"]} if "webhook_delivery" in record else {}),
    }


_adapters: dict[Any, TypeAdapter[Any] | None] = {}


def _input_adapter(graph_id: str, schema: Any) -> TypeAdapter[Any] | None:
    """Built once per input schema, and a failure is kept too: building a TypeAdapter
    costs far more than validating. None when pydantic cannot build one (say a
    ``typing.TypedDict`` before Python 3.12): the graph itself then judges its input."""
    try:
        return _adapters[schema]
    except KeyError:
        pass
    try:
        adapter: TypeAdapter[Any] | None = TypeAdapter(schema)
    except Exception as e:
        log.warning("graph '%s': its input is not checked before runs start (%s)", graph_id, e)
        adapter = None
    _adapters[schema] = adapter
    return adapter


def check_input(engine: Engine, graph_id: str, value: dict[str, Any]) -> None:
    adapter = _input_adapter(graph_id, engine.registry.get(graph_id).builder.input_schema)
    if adapter is None:
        return
    try:
        adapter.validate_python(value)
    except ValidationError as e:
        problems = "; ".join(
            f"input.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise InvalidInput(f"input does not match graph '{graph_id}': {problems}") from None
    except Exception:
        return  # a schema pydantic cannot check (user graph): the graph itself will judge


def _check_resume(record: dict[str, Any], resume: Any) -> None:
    """Refuse a resume that answers no pending interrupt (langgraph would ignore it)."""
    if resume == {}:
        # LangGraph reads an object as a map {interrupt_id: value}: {} answers nothing.
        raise InvalidInput("command.resume is an empty object, which answers no interrupt; send a value")
    if record.get("active_run") or record["status"] != "interrupted":
        return  # queued behind an active run, or nothing pending (the store refuses that)
    pending = [i["id"] for group in record["interrupts"].values() for i in group]
    if isinstance(resume, dict) and resume and any(k in pending for k in resume):
        unknown = sorted(set(resume) - set(pending))
        if unknown:
            raise Conflict(
                f"interrupt(s) {unknown} are not pending on thread {record['thread_id']}; pending: {pending}"
            )
    elif len(pending) > 1:
        raise Conflict(
            f"{len(pending)} interrupts are pending on thread {record['thread_id']} ({pending}); "
            "resume with a map {interrupt_id: value}"
        )


def _continues(record: dict[str, Any]) -> SegmentLink | None:
    """The paused segment a resume continues (its trace links to it), from the thread
    record just read; None when nothing is paused now (the resume waits behind a run)."""
    if record["status"] != "interrupted" or record.get("active_run"):
        return None
    pending = sum(len(group) for group in record["interrupts"].values())
    return SegmentLink.model_validate(
        {**(record.get("trace") or {}), "interrupts": pending, "interrupted_at": record["updated_at"]}
    )


async def submit_run(
    engine: Engine,
    request: Request | None,
    principal: Principal,
    thread_id: str,
    body: RunCreate,
    publish: list[StreamMode],
    *,
    run_id: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Validate, then record and enqueue the run. Returns ``(run_id, record)``, the record
    as written (``store.create_run``).

    ``request`` carries the trace context to continue (None for runs the service starts
    itself, such as crons). ``run_id``: the id to give the run (a new one by default); a
    run of that id that exists already is a Conflict, and nothing is written.
    """
    if not principal.can(Access.WRITE):
        # An approver may answer a pending interrupt, and do nothing else.
        answers_only = body.input is None and body.command is not None and body.command.resume is not None
        if not answers_only or body.command is None or body.command.goto or body.command.update:
            principal.require(Access.WRITE, "starting a run (other than answering an interrupt)")
    assistant = await resolve_assistant_async(engine, body.assistant_id, principal.tenant)
    config, context = run_settings(assistant, body.config, body.context)
    graph_id = assistant["graph_id"]
    if body.input is None and body.command is None:
        raise InvalidInput("send 'input' to start the graph or 'command' to resume it")
    if body.input is not None:
        check_input(engine, graph_id, body.input)
    is_resume = body.command is not None and body.command.resume is not None
    answering: list[Answering] = []
    continues: SegmentLink | None = None
    if is_resume:
        assert body.command is not None
        record = await engine.store.get_thread(thread_id, principal.tenant)
        if record is not None:
            _check_resume(record, body.command.resume)
            continues = _continues(record)
        resume, answering = await answered_approvals(engine, principal, record, body.command.resume)
        if answering:
            body = body.model_copy(update={"command": body.command.model_copy(update={"resume": resume})})
    carrier: dict[str, str] = {}
    if request is not None:
        # Under the request's own span when the API traces (FastAPI opens one, itself a
        # child of the request's ``traceparent``), else straight under that header.
        span = trace.get_current_span()
        here = span.get_span_context().is_valid
        if span.is_recording():
            span.set_attributes({SESSION_ID: thread_id, CONVERSATION_ID: thread_id})
        propagate.inject(carrier, context=None if here else propagate.extract(request.headers))
    checkpoint_id = body.checkpoint_id or (body.checkpoint or {}).get("checkpoint_id")
    if checkpoint_id is not None and not isinstance(checkpoint_id, str):
        raise InvalidInput("checkpoint.checkpoint_id must be a string (a checkpoint id)")
    payload = RunPayload(
        graph_id=graph_id,
        assistant_id=assistant["assistant_id"],
        input=body.input,
        command=body.command,
        config=config,
        context=context,
        metadata=body.metadata or {},
        stream_mode=publish,
        stream_subgraphs=body.stream_subgraphs,
        interrupt_before=body.interrupt_before,
        interrupt_after=body.interrupt_after,
        checkpoint_id=checkpoint_id,
        durability=body.durability,
        trace_context=carrier,
        continues=continues,
        tenant=principal.tenant,
        webhook=body.webhook,
    )
    run_id = run_id or new_id()
    record = await engine.store.create_run(
        run_id=run_id,
        thread_id=thread_id,
        graph_id=graph_id,
        assistant_id=assistant["assistant_id"],
        metadata=body.metadata or {},
        payload=payload.model_dump(mode="json", exclude_defaults=True),
        strategy=body.multitask_strategy,
        if_not_exists=body.if_not_exists,
        is_resume=is_resume,
        tenant=principal.tenant,
        answering=answering,
        audit_key=engine.approvals.audit_key(principal.tenant),
        due_key=engine.approvals.due_key,
    )
    return run_id, record


def _run_headers(thread_id: str, run_id: str, location: str) -> dict[str, str]:
    base = f"/threads/{thread_id}/runs/{run_id}"
    return {"Content-Location": base, "Location": base + location}


async def _sse(engine: Engine, thread_id: str, run_id: str, after: str) -> AsyncIterator[bytes]:
    last = after
    while True:
        batch = await engine.store.read_events(thread_id, run_id, last, block_ms=HEARTBEAT_MS)
        if not batch:
            run = await engine.store.get_run(thread_id, run_id)
            if run is None or run["status"] in TERMINAL_STATUSES:
                return  # deleted, or ended and its events expired
            yield b": heartbeat\n\n"
            continue
        for event_id, name, data in batch:
            last = event_id
            if name == END_EVENT:
                return
            yield (b"event: " + name.encode() + b"\ndata: " + data + b"\nid: " + event_id.encode() + b"\n\n")


async def _outcome(engine: Engine, thread_id: str, run_id: str) -> Any:
    # Callers have checked the run is the caller tenant's (or just created it).
    """Block until the run ends; the body ``/wait`` and ``/join`` return."""
    end = await engine.store.wait_for_end(thread_id, run_id, block_ms=HEARTBEAT_MS)
    if end is None:
        raise NotFound(f"run {run_id} not found on thread {thread_id}")
    if end["status"] == "error" and "error" in end:
        return {"__error__": end["error"]}
    if end.get("expired") or end.get("cancelled"):
        thread = await engine.store.get_thread(thread_id)
        return thread["values"] if thread else None
    values = end.get("values")
    if end.get("interrupts") and isinstance(values, dict):
        values = {**values, "__interrupt__": end["interrupts"]}
    return values


def _stream_response(engine: Engine, thread_id: str, run_id: str, after: str) -> StreamingResponse:
    return StreamingResponse(
        _sse(engine, thread_id, run_id, after),
        media_type="text/event-stream",
        headers={**_run_headers(thread_id, run_id, "/stream"), "Cache-Control": "no-store"},
    )


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(
    thread_id: str, body: RunCreate, request: Request, engine: EngineDep, principal: PrincipalDep
) -> StreamingResponse:
    run_id, _ = await submit_run(engine, request, principal, thread_id, body, body.stream_modes)
    return _stream_response(engine, thread_id, run_id, "0-0")


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(
    thread_id: str, body: RunCreate, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    run_id, _ = await submit_run(engine, request, principal, thread_id, body, [])
    result = await _outcome(engine, thread_id, run_id)
    return JSONResponse(result, headers=_run_headers(thread_id, run_id, "/join"))


@router.post("/threads/{thread_id}/runs")
async def create_run(
    thread_id: str, body: RunCreate, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    run_id, record = await submit_run(engine, request, principal, thread_id, body, body.stream_modes)
    return JSONResponse(run_view(record), headers=_run_headers(thread_id, run_id, ""))


# Stateless runs: each gets a thread of its own, deleted when the run ends unless
# ``on_completion="keep"``.

_cleanups: set[asyncio.Task[None]] = set()


async def _delete_when_done(engine: Engine, thread_id: str, run_id: str, tenant: str) -> None:
    await engine.store.wait_for_end(thread_id, run_id, block_ms=HEARTBEAT_MS)
    await delete_thread_and_checkpoints(engine, thread_id, tenant)


def _stateless(body: RunCreate) -> tuple[str, RunCreate, bool]:
    body = body.model_copy(update={"if_not_exists": "create"})
    return new_id(), body, body.on_completion != "keep"


@router.post("/runs/wait")
async def stateless_wait(
    body: RunCreate, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    thread_id, body, delete = _stateless(body)
    run_id, _ = await submit_run(engine, request, principal, thread_id, body, [])
    try:
        result = await _outcome(engine, thread_id, run_id)
    finally:
        if delete:
            await delete_thread_and_checkpoints(engine, thread_id, principal.tenant)
    return JSONResponse(result)


@router.post("/runs/stream")
async def stateless_stream(
    body: RunCreate, request: Request, engine: EngineDep, principal: PrincipalDep
) -> StreamingResponse:
    thread_id, body, delete = _stateless(body)
    run_id, _ = await submit_run(engine, request, principal, thread_id, body, body.stream_modes)

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in _sse(engine, thread_id, run_id, "0-0"):
                yield chunk
        finally:
            if delete:
                _spawn_cleanup(engine, thread_id, run_id, principal.tenant)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.post("/runs")
async def stateless_create(
    body: RunCreate, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    thread_id, body, delete = _stateless(body)
    run_id, record = await submit_run(engine, request, principal, thread_id, body, body.stream_modes)
    if delete:
        _spawn_cleanup(engine, thread_id, run_id, principal.tenant)
    return JSONResponse(run_view(record))


@router.post("/runs/batch")
async def stateless_batch(
    bodies: list[RunCreate], request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    """Several stateless background runs. Each is validated before any is created, so a
    bad one refuses the whole batch and nothing is written."""
    if not bodies:
        raise InvalidInput("send a non-empty list of runs")
    for i, body in enumerate(bodies):
        try:
            assistant = await resolve_assistant_async(engine, body.assistant_id, principal.tenant)
            if body.input is not None:
                check_input(engine, assistant["graph_id"], body.input)
        except (NotFound, InvalidInput) as e:
            raise type(e)(f"runs[{i}]: {e.message}") from None
    created = []
    for body in bodies:
        thread_id, body, delete = _stateless(body)
        run_id, record = await submit_run(engine, request, principal, thread_id, body, body.stream_modes)
        if delete:
            _spawn_cleanup(engine, thread_id, run_id, principal.tenant)
        created.append(run_view(record))
    return JSONResponse(created)


def _spawn_cleanup(engine: Engine, thread_id: str, run_id: str, tenant: str) -> None:
    """Delete the thread once the run ends (in this API process: if it restarts first, the
    thread stays, which loses nothing)."""
    task = asyncio.create_task(_delete_when_done(engine, thread_id, run_id, tenant))
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)


@router.get("/runs")
async def recent_runs(
    engine: EngineDep,
    principal: PrincipalDep,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> list[dict[str, Any]]:
    """The tenant's runs across all threads, newest first (not in the LangGraph protocol)."""
    return [run_view(r) for r in await engine.store.recent_runs(principal.tenant, limit=limit, offset=offset)]


@router.get("/threads/{thread_id}/runs")
async def list_runs(
    thread_id: str,
    engine: EngineDep,
    principal: PrincipalDep,
    limit: int = Query(10, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> list[dict[str, Any]]:
    await require_thread(engine, thread_id, principal.tenant)
    return [run_view(r) for r in await engine.store.list_runs(thread_id, limit=limit, offset=offset)]


async def _require_run(engine: Engine, thread_id: str, run_id: str, tenant: str) -> dict[str, Any]:
    record = await engine.store.get_run(thread_id, run_id, tenant)
    if record is None:
        raise NotFound(f"run {run_id} not found on thread {thread_id}")
    return record


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(thread_id: str, run_id: str, engine: EngineDep, principal: PrincipalDep) -> dict[str, Any]:
    return run_view(await _require_run(engine, thread_id, run_id, principal.tenant))


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    thread_id: str,
    run_id: str,
    engine: EngineDep,
    principal: PrincipalDep,
    wait: bool = False,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> Response:
    """Cancel a pending or running run; its worker, wherever it is, is fenced out and
    stops at its next step. ``interrupt`` keeps the state reached so far; ``rollback``
    deletes the run and the checkpoints it wrote, so the thread is as before it (done by a
    worker, through the queue; ``wait`` waits for that too)."""
    await _require_run(engine, thread_id, run_id, principal.tenant)
    await engine.store.cancel_run(thread_id, run_id, action)
    if wait:
        await engine.store.wait_for_end(thread_id, run_id, block_ms=HEARTBEAT_MS)
        if action == "rollback":
            await _rolled_back(engine, thread_id, run_id)
    return Response(
        status_code=204 if not wait else 200,
        content=b"" if not wait else b"null",
        media_type=None if not wait else "application/json",
    )


async def _rolled_back(engine: Engine, thread_id: str, run_id: str) -> None:
    """Wait until the rollback worker deleted the run. A short poll: only rollbacks with
    ``wait`` come here, and the worker needs one round of Redis work."""
    for _ in range(int(engine.settings.lease_ms / 50) * 3):
        if await engine.store.get_run(thread_id, run_id) is None:
            return
        await asyncio.sleep(0.05)


@router.delete("/threads/{thread_id}/runs/{run_id}", status_code=204)
async def delete_run(thread_id: str, run_id: str, engine: EngineDep, principal: PrincipalDep) -> Response:
    """Delete an ended run's record and events (its checkpoints stay: the thread's state
    is the thread's). A pending or running run: 409, cancel it first."""
    await _require_run(engine, thread_id, run_id, principal.tenant)
    await engine.store.delete_run(thread_id, run_id)
    return Response(status_code=204)


@router.post("/runs/cancel", status_code=204)
async def cancel_many(
    body: RunsCancel,
    engine: EngineDep,
    principal: PrincipalDep,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> Response:
    """Cancel several runs: ``run_ids`` on ``thread_id``, every active or pending run of
    ``thread_id``, or (with ``status``) every such run of the tenant."""
    if body.thread_id is not None:
        record = await require_thread(engine, body.thread_id, principal.tenant)
        threads = [record]
    elif body.run_ids:
        raise InvalidInput("run_ids need a thread_id: run ids are looked up on their thread")
    elif body.status is None:
        raise InvalidInput("send a thread_id (with or without run_ids) or a status")
    else:
        threads = await get_thread_admin(engine).busy_threads(principal.tenant)
    for record in threads:
        thread_id = record["thread_id"]
        candidates = await engine.store.active_runs(thread_id)
        for run_id, status in candidates:
            if body.run_ids is not None and run_id not in body.run_ids:
                continue
            if body.status not in (None, "all", status):
                continue
            with contextlib.suppress(NotFound, Conflict):  # it ended meanwhile
                await engine.store.cancel_run(thread_id, run_id, action)
    return Response(status_code=204)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(thread_id: str, run_id: str, engine: EngineDep, principal: PrincipalDep) -> Response:
    await _require_run(engine, thread_id, run_id, principal.tenant)
    return JSONResponse(await _outcome(engine, thread_id, run_id))


@router.get("/threads/{thread_id}/runs/{run_id}/stream")
async def join_stream(
    thread_id: str,
    run_id: str,
    engine: EngineDep,
    principal: PrincipalDep,
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID"),
) -> StreamingResponse:
    await _require_run(engine, thread_id, run_id, principal.tenant)
    if last_event_id and not is_stream_id(last_event_id):
        raise InvalidInput(
            f"Last-Event-ID {last_event_id!r} is not an event id of this stream (<ms>-<seq>, as sent in 'id:')"
        )
    return _stream_response(engine, thread_id, run_id, last_event_id or "0-0")
