"""The composition root: everything a process needs to accept and execute runs, built
once at start-up from Settings and torn down in reverse order."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aredis

from agents.context import Context
from agents.llm import LLMClient
from core.redis import redis_connection
from core.settings import Settings
from graphs.registry import GraphRegistry
from runs.compile import CompiledGraph, compile_all
from runs.worker import Worker
from store.checkpoint import AsyncRedisSaver
from store.decisions import RedisDecisionLog
from store.runs import RunStore

log = logging.getLogger("interlock")

DEFAULT_LOCAL_LLM_URL = "http://127.0.0.1:8124/v1"
"""Where ``interlock model serve`` listens by default."""


@dataclass
class Engine:
    settings: Settings
    redis: aredis.Redis
    redis_url: str
    store: RunStore
    saver: AsyncRedisSaver
    registry: GraphRegistry
    graphs: Mapping[str, CompiledGraph]
    context: Context
    decisions: RedisDecisionLog
    workers: list[Worker] = field(default_factory=list)


def llm_client(settings: Settings) -> LLMClient:
    if not settings.llm_base_url:
        log.warning(
            "INTERLOCK_LLM_BASE_URL is not set: decision nodes call %s (start it with "
            "`interlock model serve`); while it is down they take their fallback branch",
            DEFAULT_LOCAL_LLM_URL,
        )
        settings = settings.model_copy(update={"llm_base_url": DEFAULT_LOCAL_LLM_URL})
    return LLMClient.from_settings(settings)


@contextlib.asynccontextmanager
async def open_engine(settings: Settings, *, workers: int = 1) -> AsyncIterator[Engine]:
    """Connect (starting the embedded Redis if needed), compile graphs, start workers."""
    registry = GraphRegistry.load(settings.config)
    async with redis_connection(settings.redis_url, settings.data_dir, settings.redis_appendfsync) as (
        client,
        url,
    ):
        store = RunStore(client, prefix=settings.key_prefix)
        await store.setup()
        saver = AsyncRedisSaver(client, prefix=settings.key_prefix)
        llm = llm_client(settings)
        decisions = RedisDecisionLog(client, prefix=settings.key_prefix)
        context = Context(llm=llm, redis=client, key_prefix=settings.key_prefix, decisions=decisions)
        graphs = compile_all(registry, saver)
        engine = Engine(settings, client, url, store, saver, registry, graphs, context, decisions)
        for _ in range(workers):
            worker = Worker(store, graphs, context, concurrency=settings.worker_concurrency)
            worker.start()
            engine.workers.append(worker)
        try:
            yield engine
        finally:
            for worker in engine.workers:
                await worker.stop()
            await llm.aclose()
