"""Resources injected into routes; all created by the app's lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from runs.engine import Engine


async def get_engine(request: Request) -> Engine:
    """Async on purpose: FastAPI runs sync dependencies in a thread pool, per request."""
    engine: Engine = request.app.state.engine
    return engine


EngineDep = Annotated[Engine, Depends(get_engine)]
