"""The decisions log: every LLM decision (and every person's review of one), newest
first, filterable by graph, node, branch, method and thread."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Query

from api.auth import PrincipalDep
from api.deps import EngineDep
from core.errors import NotFound

router = APIRouter(tags=["decisions"])

DECISION_ID = r"^\d{1,20}-\d{1,20}$"
"""Decision ids are the log's stream ids: ``<ms>-<seq>``."""


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
        None, pattern=DECISION_ID, description="a decision id: page from there (exclusive)"
    ),
) -> list[dict[str, Any]]:
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
    found = await engine.decisions.get(decision_id) if re.fullmatch(DECISION_ID, decision_id) else None
    if found is None or found["tenant"] != principal.tenant:
        raise NotFound(f"decision {decision_id} not found")
    return found
