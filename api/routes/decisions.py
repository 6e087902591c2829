"""The decisions log: every LLM decision (and every person's review of one), newest
first, filterable by graph, node, branch, method and thread."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query

from api.auth import PrincipalDep
from api.deps import EngineDep
from core.errors import InvalidInput, NotFound
from core.ids import STREAM_ID, is_stream_id

router = APIRouter(tags=["decisions"])


@router.get("/decisions")
async def search_decisions(
    engine: EngineDep,
    principal: PrincipalDep,
    graph_id: str | None = None,
    node: str | None = None,
    branch: str | None = None,
    method: Literal["llm", "fallback", "human"] | None = None,
    thread_id: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    before: str | None = Query(
        None, pattern=STREAM_ID, description="a decision id: page from there (exclusive)"
    ),
) -> list[dict[str, Any]]:
    if before is not None and not is_stream_id(before):
        raise InvalidInput(f"before={before!r} is not a decision id: its parts must fit 64 bits")
    return await engine.decisions.search(
        graph_id=graph_id,
        node=node,
        branch=branch,
        method=method,
        thread_id=thread_id,
        tenant=principal.tenant,
        limit=limit,
        before=before,
    )


@router.get("/decisions/{decision_id}")
async def get_decision(decision_id: str, engine: EngineDep, principal: PrincipalDep) -> dict[str, Any]:
    found = await engine.decisions.get(decision_id) if is_stream_id(decision_id) else None
    if found is None or found["tenant"] != principal.tenant:
        raise NotFound(f"decision {decision_id} not found")
    return found
