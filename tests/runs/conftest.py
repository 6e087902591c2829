"""An in-process engine (graphs compiled with our saver, one worker) on the test Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from runs.engine import Engine, open_engine
from tests.fakes.openai_server import FakeOpenAI, start_fake_openai


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeOpenAI]:
    fake = start_fake_openai()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def settings(redis_url: str, key_prefix: str, fake_llm: FakeOpenAI, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        llm_base_url=fake_llm.base_url,
        llm_timeout_s=2,
        nearest_examples=False,
        data_dir=tmp_path,
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[Engine]:
    async with open_engine(settings, workers=1) as e:
        yield e
