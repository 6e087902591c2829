"""The FastAPI application: ``create_app(settings)`` wires routes, errors and the
lifespan that owns every resource (Redis, graphs, workers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Authenticator, authenticate
from api.console import routes as console
from api.console.render import STATIC as CONSOLE_STATIC
from api.deadlines import enforce_deadlines
from api.errors import error_response, install_error_handlers
from api.responses import JSONResponse
from api.routes import approvals, assistants, crons, decisions, meta, runs, threads, triggers
from api.scheduler import CronScheduler
from core.metrics import configure_metrics, shutdown_metrics
from core.processes import freeze_startup_heap
from core.settings import Settings
from core.tracing import SERVICE_NAME, configure_tracing, shutdown_tracing
from runs.engine import Engine, open_engine
from runs.processes import WorkerProcesses
from store.apikeys import ApiKeyStore

log = logging.getLogger("interlock.api")


class BodyLimit:
    """Refuse request bodies above ``limit`` bytes with 413, before reading them whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and int(value or 0) > self.limit:
                await self._refuse(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "PayloadTooLarge",
            f"request body is larger than {self.limit} bytes (INTERLOCK_MAX_BODY_BYTES)",
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


async def _authenticator(settings: Settings, engine: Engine) -> Authenticator:
    auth = Authenticator(settings, ApiKeyStore(engine.redis, prefix=settings.key_prefix))
    if not settings.auth:
        log.warning(
            "AUTHENTICATION IS OFF (INTERLOCK_AUTH=off): anyone who can reach this port is an "
            "admin. Use this for local development only."
        )
    elif not await auth.has_keys():
        # First start: make an admin key so the service is usable, and say where it is.
        key, record = await auth.keys.create(tenant="default", roles=["admin"], name="bootstrap")
        path = settings.data_dir / "admin-key"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(key + "\n")
        log.warning(
            "no API keys existed: made admin key %s for tenant 'default', written to %s. "
            "Make more with `interlock keys create`.",
            record["id"],
            path.resolve(),
        )
    return auth


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Metrics first: with OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true the span
        # processor counts what it drops into the meter provider it finds at creation.
        configure_metrics(SERVICE_NAME, prometheus=settings.metrics)
        configure_tracing()
        async with open_engine(settings, workers=settings.workers) as engine:
            app.state.engine = engine
            app.state.auth = await _authenticator(settings, engine)
            children = None
            if settings.worker_processes:
                children = WorkerProcesses(
                    settings,
                    settings.worker_processes,
                    redis_url=engine.redis_url,
                    llm_base_url=engine.context.llm.base_url,
                )
                children.start()
            app.state.worker_processes = children
            # Crons and approval deadlines: in every API process unless INTERLOCK_SCHEDULER=false.
            scheduler = CronScheduler(engine) if settings.scheduler else None
            deadlines = None
            if scheduler is not None:
                scheduler.start()
                deadlines = asyncio.create_task(enforce_deadlines(engine), name="approval deadlines")
            log.info(
                "interlock ready: redis %s, graphs %s, %d in-process worker(s), %d worker "
                "process(es), cron scheduler %s",
                engine.redis_url,
                engine.registry.ids(),
                len(engine.workers),
                settings.worker_processes,
                "on" if scheduler is not None else "off (INTERLOCK_SCHEDULER=false)",
            )
            freeze_startup_heap()
            try:
                yield
            finally:
                if children is not None:
                    await children.stop()
                if scheduler is not None:
                    await scheduler.stop()
                if deadlines is not None:
                    deadlines.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await deadlines
        shutdown_tracing()  # flush the spans of the last runs
        shutdown_metrics()

    app = FastAPI(
        title="Interlock",
        version=meta.VERSION,
        description="Durable AI-agent workflows over the LangGraph Agent Server protocol.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        dependencies=[Depends(authenticate)],
        # FastAPI's own spans (active only when a tracer provider is installed): one per
        # request, under the request's traceparent and over the runs it starts; not one
        # per dependency and endpoint besides, which tripled the spans of a run.
        telemetry={"operation_spans": False},
    )
    install_error_handlers(app)
    for module in (meta, assistants, threads, runs, crons, decisions, approvals, console, triggers):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=CONSOLE_STATIC), name="console-static")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
