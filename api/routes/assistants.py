"""Assistants. Each registered graph has a default assistant whose id is
``uuid5(graph_id)`` (as in the Agent Server); the graph id is accepted as its id too."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import EngineDep
from api.schemas import AssistantSearch, iso
from core.errors import NotFound
from core.ids import default_assistant_id
from runs.engine import Engine

router = APIRouter(tags=["assistants"])

_EPOCH_MS = 0


def default_assistant(engine: Engine, graph_id: str) -> dict[str, Any]:
    entry = engine.registry.get(graph_id)
    return {
        "assistant_id": default_assistant_id(graph_id),
        "graph_id": graph_id,
        "name": graph_id,
        "description": entry.description,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "version": 1,
        "created_at": iso(_EPOCH_MS),
        "updated_at": iso(_EPOCH_MS),
    }


def resolve_assistant(engine: Engine, assistant_id: str) -> dict[str, Any]:
    """The assistant named by an assistant id or a graph id; NotFound otherwise."""
    if assistant_id in engine.registry:
        return default_assistant(engine, assistant_id)
    for graph_id in engine.registry.ids():
        if default_assistant_id(graph_id) == assistant_id:
            return default_assistant(engine, graph_id)
    raise NotFound(
        f"assistant '{assistant_id}' not found; use a graph id ({', '.join(engine.registry.ids())}) "
        "or an assistant id from POST /assistants/search"
    )


@router.post("/assistants/search")
async def search_assistants(body: AssistantSearch, engine: EngineDep) -> list[dict[str, Any]]:
    found = [default_assistant(engine, gid) for gid in engine.registry.ids()]
    if body.graph_id is not None:
        found = [a for a in found if a["graph_id"] == body.graph_id]
    if body.name is not None:
        found = [a for a in found if a["name"] == body.name]
    if body.metadata:
        found = [a for a in found if all(a["metadata"].get(k) == v for k, v in body.metadata.items())]
    return found[body.offset : body.offset + body.limit]


@router.get("/assistants/{assistant_id}")
async def get_assistant(assistant_id: str, engine: EngineDep) -> dict[str, Any]:
    return resolve_assistant(engine, assistant_id)
