"""Arize Phoenix for the module, the session's fake LLM, and the ``phoenix`` marker's
rule: skipped where Phoenix's virtualenv is missing, a failure under CI."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAI, start_fake_openai
from tests.tracing.phoenix_backend import PhoenixProcess, phoenix_python


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeOpenAI]:
    fake = start_fake_openai()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixProcess]:
    python = phoenix_python()
    if python is None:
        reason = "Arize Phoenix is not installed: make phoenix-venv (or set INTERLOCK_PHOENIX_PYTHON)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the Phoenix tests; {reason}")
        pytest.skip(reason)
    server = PhoenixProcess(python, tmp_path_factory.mktemp("phoenix"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
