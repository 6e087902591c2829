"""Fixtures for the eval tests: the fake OpenAI server and tiny datasets in a temporary dir."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from evals.datasets import write_manifest
from tests.fakes.openai_server import FakeOpenAI, start_fake_openai

NODE = "support_triage.triage"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = start_fake_openai()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _reset_fake(request: pytest.FixtureRequest) -> None:
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


def llm_settings(base_url: str, **overrides: Any) -> Settings:
    """Settings for one attempt per decision (a scripted fault is then a fallback)."""
    values: dict[str, Any] = {
        "llm_base_url": base_url,
        "llm_max_attempts": 1,
        "llm_timeout_s": 5.0,
        "local_llm": False,
        "nearest_examples": False,  # the fake ignores examples; loading the embedder is slow
        **overrides,
    }
    return Settings(**values)


def case(case_id: str, ticket: str, expected: str) -> dict[str, Any]:
    return {"id": case_id, "input": {"ticket": ticket}, "expected": expected}


def write_dataset(
    root: Path,
    dev: Sequence[dict[str, Any]],
    test: Sequence[dict[str, Any]],
    *,
    node: str = NODE,
    version: str = "test-1",
) -> Path:
    """A dataset for ``node`` under ``root`` (with a manifest); returns ``root``."""
    directory = root / node
    directory.mkdir(parents=True, exist_ok=True)
    for name, cases in (("dev", dev), ("test", test)):
        text = "".join(json.dumps(c) + "\n" for c in cases)
        (directory / f"{name}.jsonl").write_text(text, encoding="utf-8")
    write_manifest(directory, version)
    return root


# The fake answers with the first branch named as a word in the ticket (in the order
# refund, answer, technical, escalate), else "escalate" (the last one).
KEYWORD_DEV = [
    case("k1", "please refund me", "refund"),  # -> refund, right
    case("k2", "I need an answer about shipping", "answer"),  # -> answer, right
    case("k3", "technical problem with the app", "technical"),  # -> technical, right
    case("k4", "my lawyer will call you", "escalate"),  # -> escalate, right
    case("k5", "what is the refund policy? an answer please", "answer"),  # -> refund, wrong
    case("k6", "the app is broken", "technical"),  # -> escalate, wrong
]
"""4 of 6 right; hand-checked confusion below."""

KEYWORD_CONFUSION = [
    # chosen: refund, answer, technical, escalate
    [1, 0, 0, 0],  # expected refund
    [1, 1, 0, 0],  # expected answer
    [0, 0, 1, 1],  # expected technical
    [0, 0, 0, 1],  # expected escalate
]


def keyword_test_split(n: int = 25) -> list[dict[str, Any]]:
    """``n`` held-out cases the fake routes right, cycling through the branches."""
    branches = ["refund", "answer", "technical", "escalate"]
    return [case(f"t{i:02d}", f"case {i}: {branches[i % 4]}", branches[i % 4]) for i in range(n)]
