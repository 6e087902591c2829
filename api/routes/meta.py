"""Liveness and server information."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from api.deps import EngineDep
from core import metrics
from core.errors import NotFound

router = APIRouter(tags=["meta"])

VERSION = "0.1.0"


@router.get("/ok")
async def ok() -> dict[str, bool]:
    return {"ok": True}


@router.get("/info")
async def info(engine: EngineDep) -> dict[str, Any]:
    return {
        "version": VERSION,
        "server": "interlock",
        "graphs": engine.registry.ids(),
        "flags": {"assistants": True, "crons": False, "langsmith": False},
        # Resuming an interrupt that is not pending is refused, never ignored.
        "strict_resume": True,
    }


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def prometheus_metrics() -> Response:
    """This process's metrics in the Prometheus text format: runs, nodes, queue wait,
    decisions, interrupts, tokens of the API process and its in-process workers (separate
    ``interlock worker`` processes export theirs over OTLP). Public, like ``/ok``: it
    carries counts by graph, node and branch, never ids or content."""
    body = metrics.prometheus_text()
    if body is None:
        raise NotFound("metrics are off in this process (INTERLOCK_METRICS=false)")
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
