"""Threads, their state and their history; search, change, copy and delete them.

Thread records and runs live in ``store/runs.py``; the administrative writes (metadata,
delete, copy, recording a state changed outside a run) in ``store/threads.py``. A thread
with an active run cannot be deleted or have its state changed (409): a run owns its
thread until it ends.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from langgraph.errors import InvalidUpdateError
from langgraph.types import StateSnapshot

from api.auth import PrincipalDep
from api.deps import EngineDep
from api.schemas import (
    HistoryRequest,
    StateAtCheckpoint,
    ThreadCount,
    ThreadCreate,
    ThreadPatch,
    ThreadPrune,
    ThreadSearch,
    ThreadStateUpdate,
    iso,
    page_headers,
    selected,
)
from core.errors import FENCE_CONFIG_KEY, Conflict, FencedOut, InvalidInput, NotFound
from core.ids import is_uuid, new_id
from runs.compile import CompiledGraph
from runs.engine import Engine
from store.threads import ThreadAdmin, ThreadFilter

router = APIRouter(tags=["threads"])


def get_thread_admin(engine: EngineDep) -> ThreadAdmin:
    return ThreadAdmin(engine.redis, prefix=engine.settings.key_prefix)


async def _thread_admin_dep(engine: EngineDep) -> ThreadAdmin:
    return get_thread_admin(engine)  # async: sync dependencies run in a thread pool


ThreadAdminDep = Annotated[ThreadAdmin, Depends(_thread_admin_dep)]


def thread_view(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "thread_id": record["thread_id"],
        "created_at": iso(record["created_at"]),
        "updated_at": iso(record["updated_at"]),
        "metadata": record["metadata"],
        "status": record["status"],
        "values": record["values"],
        "interrupts": record["interrupts"],
    }


async def require_thread(engine: Engine, thread_id: str, tenant: str) -> dict[str, Any]:
    """The tenant's thread; another tenant's answers 404 exactly like a missing one."""
    record = await engine.store.get_thread(thread_id, tenant)
    if record is None:
        raise NotFound(f"thread {thread_id} not found")
    return record


def _checkpoint(config: Any) -> dict[str, Any] | None:
    if not config:
        return None
    conf = config["configurable"]
    return {
        "thread_id": conf["thread_id"],
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "checkpoint_id": conf.get("checkpoint_id"),
        "checkpoint_map": conf.get("checkpoint_map"),
    }


def state_view(snapshot: StateSnapshot) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [
        {
            "id": t.id,
            "name": t.name,
            "error": repr(t.error) if t.error else None,
            "interrupts": [{"value": i.value, "id": i.id} for i in t.interrupts],
            "checkpoint": None,
            "state": None,
            "result": t.result,
        }
        for t in snapshot.tasks
    ]
    return {
        "values": snapshot.values,
        "next": list(snapshot.next),
        "checkpoint": _checkpoint(snapshot.config),
        "metadata": snapshot.metadata,
        "created_at": snapshot.created_at,
        "parent_checkpoint": _checkpoint(snapshot.parent_config),
        "tasks": tasks,
        "interrupts": [i for t in tasks for i in t["interrupts"]],
    }


def _empty_state(thread_id: str) -> dict[str, Any]:
    return {
        "values": {},
        "next": [],
        "checkpoint": {
            "thread_id": thread_id,
            "checkpoint_ns": "",
            "checkpoint_id": None,
            "checkpoint_map": None,
        },
        "metadata": {},
        "created_at": None,
        "parent_checkpoint": None,
        "tasks": [],
        "interrupts": [],
    }


def _graph_of(engine: Engine, record: dict[str, Any]) -> CompiledGraph | None:
    graph_id = record.get("graph_id")
    return engine.graphs.get(graph_id) if graph_id else None


@router.post("/threads")
async def create_thread(body: ThreadCreate, engine: EngineDep, principal: PrincipalDep) -> dict[str, Any]:
    thread_id = body.thread_id or new_id()
    if not is_uuid(thread_id):
        raise InvalidInput(f"thread_id must be a UUID, got '{thread_id}'")
    record = await engine.store.create_thread(
        thread_id, body.metadata, if_exists=body.if_exists, tenant=principal.tenant
    )
    return thread_view(record)


@router.get("/threads/{thread_id}")
async def get_thread(thread_id: str, engine: EngineDep, principal: PrincipalDep) -> dict[str, Any]:
    return thread_view(await require_thread(engine, thread_id, principal.tenant))


async def _state(engine: Engine, thread_id: str, checkpoint_id: str | None, tenant: str) -> dict[str, Any]:
    record = await require_thread(engine, thread_id, tenant)
    graph = _graph_of(engine, record)
    if graph is None:
        if checkpoint_id:
            raise NotFound(f"checkpoint {checkpoint_id} not found on thread {thread_id}")
        return _empty_state(thread_id)
    configurable = {"thread_id": thread_id}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    snapshot = await graph.aget_state({"configurable": configurable})
    if checkpoint_id and snapshot.created_at is None:
        raise NotFound(f"checkpoint {checkpoint_id} not found on thread {thread_id}")
    return state_view(snapshot) if snapshot.config else _empty_state(thread_id)


@router.get("/threads/{thread_id}/state")
async def get_state(thread_id: str, engine: EngineDep, principal: PrincipalDep) -> dict[str, Any]:
    return await _state(engine, thread_id, None, principal.tenant)


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
async def get_state_at(
    thread_id: str, checkpoint_id: str, engine: EngineDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await _state(engine, thread_id, checkpoint_id, principal.tenant)


@router.post("/threads/{thread_id}/state/checkpoint")
async def get_state_at_checkpoint(
    thread_id: str, body: StateAtCheckpoint, engine: EngineDep, principal: PrincipalDep
) -> dict[str, Any]:
    """The state at ``body.checkpoint`` (how the SDK asks when given a checkpoint object)."""
    return await _state(engine, thread_id, body.checkpoint.checkpoint_id, principal.tenant)


async def _history(engine: Engine, thread_id: str, body: HistoryRequest, tenant: str) -> list[dict[str, Any]]:
    record = await require_thread(engine, thread_id, tenant)
    graph = _graph_of(engine, record)
    if graph is None:
        return []
    before: dict[str, Any] | None = None
    if isinstance(body.before, str):
        before = {"configurable": {"thread_id": thread_id, "checkpoint_id": body.before}}
    elif isinstance(body.before, dict):
        nested = body.before.get("configurable")
        cp_id = body.before.get("checkpoint_id") or (
            nested.get("checkpoint_id") if isinstance(nested, dict) else None
        )
        if not isinstance(cp_id, str) or not cp_id:
            raise InvalidInput("'before' must be a checkpoint id or an object with 'checkpoint_id'")
        before = {"configurable": {"thread_id": thread_id, "checkpoint_id": cp_id}}
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if body.checkpoint:
        configurable["checkpoint_ns"] = body.checkpoint.checkpoint_ns
        if body.checkpoint.checkpoint_id:
            configurable["checkpoint_id"] = body.checkpoint.checkpoint_id
    return [
        state_view(s)
        async for s in graph.aget_state_history(
            {"configurable": configurable},
            filter=body.metadata or None,
            before=before,  # type: ignore[arg-type]
            limit=body.limit,
        )
    ]


@router.post("/threads/{thread_id}/history")
async def post_history(
    thread_id: str, body: HistoryRequest, engine: EngineDep, principal: PrincipalDep
) -> list[dict[str, Any]]:
    return await _history(engine, thread_id, body, principal.tenant)


@router.get("/threads/{thread_id}/history")
async def get_history(
    thread_id: str,
    engine: EngineDep,
    principal: PrincipalDep,
    limit: int = Query(10, ge=1, le=1000),
    before: str | None = None,
) -> list[dict[str, Any]]:
    return await _history(engine, thread_id, HistoryRequest(limit=limit, before=before), principal.tenant)


# --- search, change, copy, delete -------------------------------------------------------


def _filter(body: ThreadCount, tenant: str, ids: list[str] | None = None) -> ThreadFilter:
    return ThreadFilter(
        ids=ids, metadata=body.metadata, values=body.values, status=body.status, tenant=tenant
    )


@router.post("/threads/search")
async def search_threads(
    body: ThreadSearch, admin: ThreadAdminDep, response: Response, principal: PrincipalDep
) -> list[dict[str, Any]]:
    page, total = await admin.search(
        _filter(body, principal.tenant, body.ids),
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )
    page_headers(response, total=total, offset=body.offset, limit=body.limit)
    return selected([thread_view(r) for r in page], body.select)


@router.post("/threads/count")
async def count_threads(body: ThreadCount, admin: ThreadAdminDep, principal: PrincipalDep) -> int:
    return await admin.count(_filter(body, principal.tenant))


@router.patch("/threads/{thread_id}", response_model=None)
async def patch_thread(
    thread_id: str,
    body: ThreadPatch,
    engine: EngineDep,
    admin: ThreadAdminDep,
    principal: PrincipalDep,
    prefer: str | None = Header(default=None),
) -> dict[str, Any] | Response:
    await require_thread(engine, thread_id, principal.tenant)
    await admin.merge_metadata(thread_id, body.metadata)
    if prefer and "return=minimal" in prefer:
        return Response(status_code=204)
    return thread_view(await require_thread(engine, thread_id, principal.tenant))


async def _delete(engine: Engine, admin: ThreadAdmin, thread_id: str, tenant: str) -> None:
    await require_thread(engine, thread_id, tenant)
    # The checkpoints and approvals go in the same atomic step: they carry the thread's
    # hash tag. The approvals' index entries go after (the tenant's audit stream stays).
    approvals = await engine.approvals.thread_keys(thread_id)
    await admin.delete(thread_id, [*engine.saver.thread_keys(thread_id), *approvals], tenant=tenant)
    ids = [k.rsplit(":", 1)[1] for k in approvals[1::2]]
    await engine.approvals.forget(thread_id, tenant, ids)


async def delete_thread_and_checkpoints(engine: Engine, thread_id: str, tenant: str) -> None:
    """Delete a thread with everything it owns (refused while it has an active run)."""
    await _delete(engine, get_thread_admin(engine), thread_id, tenant)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(
    thread_id: str, engine: EngineDep, admin: ThreadAdminDep, principal: PrincipalDep
) -> Response:
    await _delete(engine, admin, thread_id, principal.tenant)
    return Response(status_code=204)


async def delete_threads_of_assistant(engine: Engine, assistant_id: str, tenant: str) -> int:
    """Delete every thread of ``tenant`` whose runs used ``assistant_id``; refuses
    (writing nothing) while any of them has an active run. Returns how many were deleted."""
    admin = get_thread_admin(engine)
    found, _ = await admin.search(
        ThreadFilter(metadata={"assistant_id": assistant_id}, tenant=tenant), limit=10**9, offset=0
    )
    busy = [r["thread_id"] for r in found if r["active_run"]]
    if busy:
        raise Conflict(f"threads {busy} of assistant {assistant_id} have active runs; nothing was deleted")
    for record in found:
        await _delete(engine, admin, record["thread_id"], tenant)
    return len(found)


@router.post("/threads/prune")
async def prune_threads(
    body: ThreadPrune, engine: EngineDep, admin: ThreadAdminDep, principal: PrincipalDep
) -> dict[str, int]:
    """``delete``: delete the threads; ``keep_latest``: keep only their latest checkpoint.
    Unknown threads and threads with an active run are skipped; the count says how many
    were pruned."""
    pruned = 0
    for thread_id in dict.fromkeys(body.thread_ids):
        try:
            if body.strategy == "delete":
                await _delete(engine, admin, thread_id, principal.tenant)
            else:
                record = await require_thread(engine, thread_id, principal.tenant)
                if record["active_run"]:
                    continue
                await engine.saver.aprune([thread_id], strategy="keep_latest")
        except (NotFound, Conflict):
            continue
        pruned += 1
    return {"pruned_count": pruned}


def _interrupts(snapshot: StateSnapshot) -> dict[str, list[dict[str, Any]]]:
    """Pending interrupts by task id, as the thread record keeps them."""
    return {
        t.id: [{"value": i.value, "id": i.id} for i in t.interrupts] for t in snapshot.tasks if t.interrupts
    }


@router.post("/threads/{thread_id}/copy")
async def copy_thread(
    thread_id: str, engine: EngineDep, admin: ThreadAdminDep, principal: PrincipalDep
) -> dict[str, Any]:
    """A new thread with the same checkpoints and metadata. Its status is ``idle``, or
    ``interrupted`` when the copied state waits on an interrupt (so it can be resumed)."""
    record = await require_thread(engine, thread_id, principal.tenant)
    source = await admin.raw(thread_id)
    if source is None:
        raise NotFound(f"thread {thread_id} not found")
    copy_id = new_id()
    await engine.saver.acopy_thread(thread_id, copy_id)
    try:
        graph = _graph_of(engine, record)
        values: Any = None
        interrupts: dict[str, list[dict[str, Any]]] = {}
        if graph is not None:
            snapshot = await graph.aget_state({"configurable": {"thread_id": copy_id}})
            if snapshot.config:
                values, interrupts = snapshot.values, _interrupts(snapshot)
        await admin.create_copy(
            source,
            copy_id,
            status="interrupted" if interrupts else "idle",
            values=values,
            interrupts=interrupts,
            tenant=principal.tenant,
        )
    except BaseException:
        await engine.saver.adelete_thread(copy_id)  # no record: leave no orphan checkpoints
        raise
    return thread_view(await require_thread(engine, copy_id, principal.tenant))


def _check_update_keys(graph: CompiledGraph, values: Any) -> None:
    if not isinstance(values, dict):
        return
    channels = {c for c in graph.channels if not c.startswith(("__", "branch:"))}
    unknown = sorted(set(values) - channels)
    if unknown:
        raise InvalidInput(
            f"values: {unknown} are not keys of the graph's state ({', '.join(sorted(channels))})"
        )


@router.post("/threads/{thread_id}/state")
async def update_state(
    thread_id: str,
    body: ThreadStateUpdate,
    engine: EngineDep,
    admin: ThreadAdminDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Write a new checkpoint as if ``as_node`` had returned ``values`` (from the latest
    checkpoint, or from ``checkpoint_id`` to fork); answers ``{"checkpoint": …}``."""
    record = await require_thread(engine, thread_id, principal.tenant)
    if record["active_run"]:
        raise Conflict(
            f"thread {thread_id} has an active run ({record['active_run']}); update its state after it ends"
        )
    graph_id = record["graph_id"] or record["metadata"].get("graph_id")
    if not graph_id:
        raise Conflict(
            f"thread {thread_id} has no graph yet: run it once, or create it with metadata.graph_id"
        )
    graph = engine.graphs.get(graph_id)
    if graph is None:
        raise InvalidInput(f"thread {thread_id} names graph '{graph_id}', which is not registered here")
    configurable: dict[str, Any] = {
        "thread_id": thread_id,
        "checkpoint_ns": body.checkpoint_ns,
    }
    if checkpoint_id := body.target_checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
        # langgraph would silently start from an empty state: refuse an unknown checkpoint.
        if await engine.saver.aget_tuple({"configurable": configurable}) is None:
            raise NotFound(f"checkpoint {checkpoint_id} not found on thread {thread_id}")
    _check_update_keys(graph, body.values)
    async with admin.state_change(thread_id) as change:
        config: Any = {"configurable": {**configurable, FENCE_CONFIG_KEY: change.fence}}
        try:
            written = await graph.aupdate_state(config, body.values, as_node=body.as_node)
        except FencedOut:
            raise Conflict(
                f"a run started on thread {thread_id} while its state was being updated; nothing was written"
            ) from None
        except (InvalidUpdateError, KeyError, ValueError, TypeError) as e:
            raise InvalidInput(f"the graph refused the update: {type(e).__name__}: {e}") from None
        snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        interrupts = _interrupts(snapshot)
        await admin.record_state(
            change,
            graph_id=graph_id,
            status="interrupted" if interrupts else "idle",
            values=snapshot.values,
            interrupts=interrupts,
        )
    return {"checkpoint": _checkpoint(written)}
