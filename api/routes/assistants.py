"""Assistants: a graph plus the config, context and metadata its runs start from.

Each registered graph has a read-only default assistant whose id is ``uuid5(graph_id)``
(as in the Agent Server); the graph id is accepted as its id too. Assistants created over
the API are stored in Redis (``store/assistants.py``) and versioned: every PATCH writes a
new version, ``POST /assistants/{id}/latest`` makes an older one current again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from langgraph.pregel import Pregel
from starlette.responses import PlainTextResponse

from api.auth import PrincipalDep
from api.deps import EngineDep
from api.graph_schemas import graph_schemas, subgraph_schemas
from api.routes.threads import delete_threads_of_assistant
from api.schemas import (
    AssistantCount,
    AssistantCreate,
    AssistantLatest,
    AssistantPatch,
    AssistantSearch,
    AssistantVersionsSearch,
    iso,
    page_headers,
    selected,
)
from core.errors import Conflict, InvalidInput, NotFound
from core.ids import default_assistant_id, is_uuid, new_id
from runs.engine import Engine
from store.assistants import AssistantStore, contains

router = APIRouter(tags=["assistants"])

_EPOCH_MS = 0


def get_assistants(engine: Engine, tenant: str) -> AssistantStore:
    return AssistantStore(engine.redis, prefix=engine.settings.key_prefix, tenant=tenant)


async def _assistants_dep(engine: EngineDep, principal: PrincipalDep) -> AssistantStore:
    return get_assistants(engine, principal.tenant)  # async: sync dependencies run in a thread pool


AssistantsDep = Annotated[AssistantStore, Depends(_assistants_dep)]


def _default_doc(engine: Engine, graph_id: str) -> dict[str, Any]:
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
        "created_at": _EPOCH_MS,
        "updated_at": _EPOCH_MS,
    }


def default_assistant(engine: Engine, graph_id: str) -> dict[str, Any]:
    return assistant_view(_default_doc(engine, graph_id))


def assistant_view(doc: dict[str, Any]) -> dict[str, Any]:
    """An assistant (or a version) as the protocol shows it: ISO timestamps."""
    view = dict(doc)
    view.pop("tenant", None)
    for field in ("created_at", "updated_at"):
        if field in view:
            view[field] = iso(view[field])
    return view


def _default_graph(engine: Engine, assistant_id: str) -> str | None:
    """The graph whose default assistant ``assistant_id`` names (by graph id or uuid5)."""
    if assistant_id in engine.registry:
        return assistant_id
    return next((g for g in engine.registry.ids() if default_assistant_id(g) == assistant_id), None)


def _not_found(engine: Engine, assistant_id: str) -> NotFound:
    return NotFound(
        f"assistant '{assistant_id}' not found; use a graph id ({', '.join(engine.registry.ids())}) "
        "or an assistant id from POST /assistants/search"
    )


def resolve_assistant(engine: Engine, assistant_id: str) -> dict[str, Any]:
    """The default assistant named by an assistant id or a graph id; NotFound otherwise.

    Only knows the defaults: use :func:`resolve_assistant_async` to find stored ones too."""
    graph_id = _default_graph(engine, assistant_id)
    if graph_id is None:
        raise _not_found(engine, assistant_id)
    return default_assistant(engine, graph_id)


async def _find(engine: Engine, store: AssistantStore, assistant_id: str) -> dict[str, Any] | None:
    """A default or stored assistant as the protocol shows it, or None."""
    graph_id = _default_graph(engine, assistant_id)
    if graph_id is not None:
        return default_assistant(engine, graph_id)
    doc = await store.get(assistant_id)
    return assistant_view(doc) if doc else None


async def resolve_assistant_async(engine: Engine, assistant_id: str, tenant: str) -> dict[str, Any]:
    """The assistant a run names (graph id, default assistant id or the tenant's stored
    assistant id), with a graph this service can run; NotFound otherwise."""
    found = await _find(engine, get_assistants(engine, tenant), assistant_id)
    if found is None:
        raise _not_found(engine, assistant_id)
    if found["graph_id"] not in engine.registry:
        raise NotFound(
            f"assistant {assistant_id} uses graph '{found['graph_id']}', which is not registered here "
            f"({', '.join(engine.registry.ids())})"
        )
    return found


def run_settings(
    assistant: dict[str, Any], config: dict[str, Any] | None, context: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A run's ``(config, context)``: the assistant's, with the run's own merged over them
    (``configurable`` and ``metadata`` key by key, ``tags`` added)."""
    base: dict[str, Any] = assistant.get("config") or {}
    own = config or {}
    merged = {**base, **own}
    for field in ("configurable", "metadata"):
        if field in base or field in own:
            merged[field] = {**(base.get(field) or {}), **(own.get(field) or {})}
    if "tags" in base or "tags" in own:
        merged["tags"] = list(dict.fromkeys([*(base.get("tags") or []), *(own.get("tags") or [])]))
    merged_context = {**(assistant.get("context") or {}), **(context or {})}
    return merged, (merged_context or context)


async def _require(engine: Engine, store: AssistantStore, assistant_id: str) -> dict[str, Any]:
    found = await _find(engine, store, assistant_id)
    if found is None:
        raise NotFound(f"assistant {assistant_id} not found")
    return found


def _refuse_default(engine: Engine, assistant_id: str, action: str) -> None:
    graph_id = _default_graph(engine, assistant_id)
    if graph_id is not None:
        raise Conflict(
            f"assistant {assistant_id} is the default assistant of graph '{graph_id}' and cannot be "
            f"{action}; create your own with POST /assistants"
        )


def _check_graph(engine: Engine, graph_id: str) -> None:
    if graph_id not in engine.registry:
        raise NotFound(
            f"graph '{graph_id}' is not registered; registered: {', '.join(engine.registry.ids())}"
        )


@router.post("/assistants")
async def create_assistant(body: AssistantCreate, engine: EngineDep, store: AssistantsDep) -> dict[str, Any]:
    _check_graph(engine, body.graph_id)
    assistant_id = body.assistant_id or new_id()
    if not is_uuid(assistant_id):
        raise InvalidInput(f"assistant_id must be a UUID, got '{assistant_id}'")
    if _default_graph(engine, assistant_id) is not None:
        if body.if_exists == "do_nothing":
            return resolve_assistant(engine, assistant_id)
        raise Conflict(f"assistant {assistant_id} already exists (the default assistant of a graph)")
    doc = await store.create(
        assistant_id,
        graph_id=body.graph_id,
        name=body.name or "Untitled",
        description=body.description,
        config=body.config or {},
        context=body.context or {},
        metadata=body.metadata or {},
        if_exists=body.if_exists,
    )
    return assistant_view(doc)


async def _matching(engine: Engine, store: AssistantStore, body: AssistantCount) -> list[dict[str, Any]]:
    found = [_default_doc(engine, g) for g in engine.registry.ids()]
    found += await store.all()
    if body.graph_id is not None:
        found = [a for a in found if a["graph_id"] == body.graph_id]
    if body.name:
        wanted = body.name.lower()
        found = [a for a in found if wanted in (a["name"] or "").lower()]
    if body.metadata:
        found = [a for a in found if contains(a["metadata"], body.metadata)]
    return found


@router.post("/assistants/search")
async def search_assistants(
    body: AssistantSearch, engine: EngineDep, store: AssistantsDep, response: Response
) -> list[dict[str, Any]]:
    found = await _matching(engine, store, body)
    fold = body.sort_by in ("name", "graph_id")
    found.sort(
        key=lambda a: (str(a[body.sort_by] or "").lower() if fold else a[body.sort_by], a["assistant_id"]),
        reverse=body.sort_order == "desc",
    )
    page = found[body.offset : body.offset + body.limit]
    page_headers(response, total=len(found), offset=body.offset, limit=body.limit)
    return selected([assistant_view(a) for a in page], body.select)


@router.post("/assistants/count")
async def count_assistants(body: AssistantCount, engine: EngineDep, store: AssistantsDep) -> int:
    return len(await _matching(engine, store, body))


@router.get("/assistants/{assistant_id}")
async def get_assistant(assistant_id: str, engine: EngineDep, store: AssistantsDep) -> dict[str, Any]:
    return await _require(engine, store, assistant_id)


@router.patch("/assistants/{assistant_id}")
async def patch_assistant(
    assistant_id: str, body: AssistantPatch, engine: EngineDep, store: AssistantsDep
) -> dict[str, Any]:
    _refuse_default(engine, assistant_id, "changed")
    if body.graph_id is not None:
        _check_graph(engine, body.graph_id)
    changes = body.model_dump(exclude_none=True)
    return assistant_view(await store.patch(assistant_id, changes))


@router.delete("/assistants/{assistant_id}", status_code=204)
async def delete_assistant(
    assistant_id: str, engine: EngineDep, store: AssistantsDep, delete_threads: bool = False
) -> Response:
    _refuse_default(engine, assistant_id, "deleted")
    if await store.get(assistant_id) is None:
        raise NotFound(f"assistant {assistant_id} not found")
    if delete_threads:
        await delete_threads_of_assistant(engine, assistant_id, store.tenant)
    if not await store.delete(assistant_id):
        raise NotFound(f"assistant {assistant_id} not found")
    return Response(status_code=204)


@router.post("/assistants/{assistant_id}/versions")
async def list_versions(
    assistant_id: str, body: AssistantVersionsSearch, engine: EngineDep, store: AssistantsDep
) -> list[dict[str, Any]]:
    graph_id = _default_graph(engine, assistant_id)
    if graph_id is not None:
        default = default_assistant(engine, graph_id)
        del default["updated_at"]
        versions = [default]
    else:
        stored = await store.versions(assistant_id)
        if stored is None:
            raise NotFound(f"assistant {assistant_id} not found")
        versions = [assistant_view(v) for v in stored]
    if body.metadata:
        versions = [v for v in versions if contains(v["metadata"], body.metadata)]
    return versions[body.offset : body.offset + body.limit]


@router.post("/assistants/{assistant_id}/latest")
async def set_latest_version(
    assistant_id: str, body: AssistantLatest, engine: EngineDep, store: AssistantsDep
) -> dict[str, Any]:
    graph_id = _default_graph(engine, assistant_id)
    if graph_id is not None:
        if body.version != 1:
            raise NotFound(f"assistant {assistant_id} has no version {body.version} (defaults have only 1)")
        return default_assistant(engine, graph_id)
    return assistant_view(await store.set_latest(assistant_id, body.version))


# --- the graph behind an assistant ----------------------------------------------------


async def _graph(
    engine: Engine, store: AssistantStore, assistant_id: str
) -> tuple[str, Pregel[Any, Any, Any, Any]]:
    """``(graph_id, compiled graph)`` of an assistant."""
    graph_id = (await _require(engine, store, assistant_id))["graph_id"]
    graph = engine.graphs.get(graph_id)
    if graph is None:
        raise NotFound(f"graph '{graph_id}' of assistant {assistant_id} is not registered here")
    return graph_id, graph


def _xray(value: str | None) -> bool | int:
    if value is None or value in ("false", "False"):
        return False
    if value in ("true", "True"):
        return True
    try:
        depth = int(value)
    except ValueError:
        depth = 0
    if depth <= 0:
        raise InvalidInput(f"xray must be true, false or a positive depth, got '{value}'")
    return depth


@router.get("/assistants/{assistant_id}/graph", response_model=None)
async def get_assistant_graph(
    assistant_id: str,
    engine: EngineDep,
    store: AssistantsDep,
    xray: str | None = None,
    format: Literal["json", "mermaid"] = "json",
) -> dict[str, Any] | PlainTextResponse:
    """Nodes and edges like the Agent Server (``?xray=true|<depth>`` draws subgraphs in);
    ``?format=mermaid`` answers a Mermaid flowchart as text."""
    _, graph = await _graph(engine, store, assistant_id)
    try:
        drawable = await graph.aget_graph(xray=_xray(xray))
    except NotImplementedError:
        raise InvalidInput(f"the graph of assistant {assistant_id} cannot be drawn") from None
    if format == "mermaid":
        return PlainTextResponse(drawable.draw_mermaid())
    drawn: dict[str, Any] = drawable.to_json()
    for node in drawn.get("nodes", []):
        if isinstance(node.get("data"), dict):
            node["data"].pop("id", None)  # the runnable's class path: internal detail
        if isinstance(node.get("metadata"), dict):
            # Declared steps keep their spec in node metadata (for the service, not JSON).
            node["metadata"] = {k: v for k, v in node["metadata"].items() if not k.startswith("interlock_")}
    return drawn


@router.get("/assistants/{assistant_id}/schemas")
async def get_assistant_schemas(assistant_id: str, engine: EngineDep, store: AssistantsDep) -> dict[str, Any]:
    graph_id, graph = await _graph(engine, store, assistant_id)
    return {"graph_id": graph_id, **graph_schemas(graph)}


async def _subgraphs(
    engine: Engine, store: AssistantStore, assistant_id: str, namespace: str | None, recurse: bool
) -> dict[str, Any]:
    _, graph = await _graph(engine, store, assistant_id)
    return {
        ns: subgraph_schemas(sub)
        async for ns, sub in graph.aget_subgraphs(namespace=namespace, recurse=recurse)
    }


@router.get("/assistants/{assistant_id}/subgraphs")
async def get_subgraphs(
    assistant_id: str, engine: EngineDep, store: AssistantsDep, recurse: bool = Query(False)
) -> dict[str, Any]:
    return await _subgraphs(engine, store, assistant_id, None, recurse)


@router.get("/assistants/{assistant_id}/subgraphs/{namespace}")
async def get_subgraphs_in(
    assistant_id: str, namespace: str, engine: EngineDep, store: AssistantsDep, recurse: bool = Query(False)
) -> dict[str, Any]:
    return await _subgraphs(engine, store, assistant_id, namespace, recurse)
