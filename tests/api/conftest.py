"""A real service process per test module, on the session's Redis and fake LLM."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.fakes.openai_server import FakeOpenAI, start_fake_openai
from tests.service import ServiceProcess


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeOpenAI]:
    fake = start_fake_openai()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def service(
    redis_url: str, fake_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    logs = tmp_path_factory.mktemp("service")
    proc = ServiceProcess(
        {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
            "INTERLOCK_LLM_BASE_URL": fake_llm.base_url,
            "INTERLOCK_LLM_TIMEOUT_S": "2",
            # The fake model ignores examples: no need to load the embedding model.
            "INTERLOCK_NEAREST_EXAMPLES": "false",
            "INTERLOCK_DATA_DIR": str(logs / "data"),
        },
        Path(logs / "service.log"),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def client(service: ServiceProcess) -> AsyncIterator[LangGraphClient]:
    async with get_client(url=service.url, api_key=service.api_key) as c:
        yield c


@pytest.fixture
async def http(service: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client on the service, for what the SDK hides (status codes, bodies)."""
    async with httpx.AsyncClient(base_url=service.url, headers={"x-api-key": service.api_key}) as c:
        yield c


@pytest.fixture
def prefix(service: ServiceProcess) -> str:
    """The service's Redis key prefix."""
    return service.env["INTERLOCK_KEY_PREFIX"]
