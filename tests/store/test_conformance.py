"""AsyncRedisSaver passes langgraph-checkpoint-conformance, every capability included."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aredis
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from store.checkpoint import AsyncRedisSaver


async def test_conformance_is_full(redis_client: aredis.Redis, key_prefix: str) -> None:
    @checkpointer_test(name="interlock.AsyncRedisSaver")
    async def factory() -> AsyncIterator[AsyncRedisSaver]:
        yield AsyncRedisSaver(redis_client, prefix=key_prefix)

    report = await validate(factory)

    failures = "\n".join(f"{name}: {failure}" for name, r in report.results.items() for failure in r.failures)
    assert {name for name, r in report.results.items() if r.detected} == {
        c.value for c in ALL_CAPABILITIES
    }, report.to_dict()
    assert all(r.passed for r in report.results.values()), failures
    assert report.conformance_level() == "FULL", failures
