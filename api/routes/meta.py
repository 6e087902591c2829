"""Liveness and server information."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import EngineDep

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
