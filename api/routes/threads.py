"""Threads, their state and their history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from langgraph.types import StateSnapshot

from api.deps import EngineDep
from api.schemas import HistoryRequest, ThreadCreate, iso
from core.errors import InvalidInput, NotFound
from core.ids import is_uuid, new_id
from runs.compile import CompiledGraph
from runs.engine import Engine

router = APIRouter(tags=["threads"])


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


async def require_thread(engine: Engine, thread_id: str) -> dict[str, Any]:
    record = await engine.store.get_thread(thread_id)
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
async def create_thread(body: ThreadCreate, engine: EngineDep) -> dict[str, Any]:
    thread_id = body.thread_id or new_id()
    if not is_uuid(thread_id):
        raise InvalidInput(f"thread_id must be a UUID, got '{thread_id}'")
    record = await engine.store.create_thread(thread_id, body.metadata, if_exists=body.if_exists)
    return thread_view(record)


@router.get("/threads/{thread_id}")
async def get_thread(thread_id: str, engine: EngineDep) -> dict[str, Any]:
    return thread_view(await require_thread(engine, thread_id))


async def _state(engine: Engine, thread_id: str, checkpoint_id: str | None) -> dict[str, Any]:
    record = await require_thread(engine, thread_id)
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
async def get_state(thread_id: str, engine: EngineDep) -> dict[str, Any]:
    return await _state(engine, thread_id, None)


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
async def get_state_at(thread_id: str, checkpoint_id: str, engine: EngineDep) -> dict[str, Any]:
    return await _state(engine, thread_id, checkpoint_id)


async def _history(engine: Engine, thread_id: str, body: HistoryRequest) -> list[dict[str, Any]]:
    record = await require_thread(engine, thread_id)
    graph = _graph_of(engine, record)
    if graph is None:
        return []
    before: dict[str, Any] | None = None
    if isinstance(body.before, str):
        before = {"configurable": {"thread_id": thread_id, "checkpoint_id": body.before}}
    elif isinstance(body.before, dict):
        cp_id = body.before.get("checkpoint_id") or (body.before.get("configurable") or {}).get(
            "checkpoint_id"
        )
        if not cp_id:
            raise InvalidInput("'before' must be a checkpoint id or an object with 'checkpoint_id'")
        before = {"configurable": {"thread_id": thread_id, "checkpoint_id": cp_id}}
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if body.checkpoint:
        configurable.update(
            {k: v for k, v in body.checkpoint.items() if k in ("checkpoint_ns", "checkpoint_id")}
        )
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
async def post_history(thread_id: str, body: HistoryRequest, engine: EngineDep) -> list[dict[str, Any]]:
    return await _history(engine, thread_id, body)


@router.get("/threads/{thread_id}/history")
async def get_history(
    thread_id: str,
    engine: EngineDep,
    limit: int = Query(10, ge=1, le=1000),
    before: str | None = None,
) -> list[dict[str, Any]]:
    return await _history(engine, thread_id, HistoryRequest(limit=limit, before=before))
