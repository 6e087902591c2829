"""Metrics on hand-made results: numbers you can check on paper."""

from __future__ import annotations

import pytest

from evals.metrics import compute_metrics, coverage_curve, percentile
from evals.models import CaseResult, CoveragePoint, Tokens

BRANCHES = ["refund", "answer", "technical", "escalate"]


def result(
    expected: str,
    chosen: str,
    confidence: float | None = None,
    *,
    method: str = "llm",
    latency_ms: float = 100.0,
    errors: list[str] | None = None,
) -> CaseResult:
    return CaseResult(
        id=f"{expected}->{chosen}:{confidence}",
        expected=expected,
        chosen=chosen,
        correct=expected == chosen,
        method=method,  # type: ignore[arg-type]
        confidence=confidence,
        latency_ms=latency_ms,
        attempts=1 + len(errors or []),
        errors=errors or [],
        tokens=Tokens(prompt=100, completion=8),
        model="m",
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(10, 101, 10)]  # 10, 20, …, 100
    assert percentile(values, 50) == 50.0  # rank ceil(5.0) = 5
    assert percentile(values, 95) == 100.0  # rank ceil(9.5) = 10
    assert percentile(values, 90) == 90.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_accuracy_confusion_precision_recall_fallbacks() -> None:
    results = [
        result("refund", "refund", 0.9),
        result("refund", "refund", 0.8),
        result("refund", "answer", 0.6),
        result("answer", "answer", 0.7),
        result("technical", "escalate", None, method="fallback", errors=["timeout", "timeout"]),
        result("escalate", "escalate", 0.95),
    ]
    m = compute_metrics(results, BRANCHES)
    assert (m.cases, m.correct) == (6, 4)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.labels == BRANCHES
    assert m.confusion == [
        [2, 1, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 0, 1],
        [0, 0, 0, 1],
    ]
    refund, answer, technical, escalate = (m.per_branch[b] for b in BRANCHES)
    assert refund.precision == 1.0
    assert refund.recall == pytest.approx(2 / 3)
    assert (answer.precision, answer.recall) == (0.5, 1.0)
    assert (technical.precision, technical.recall, technical.predicted) == (None, 0.0, 0)
    assert (escalate.precision, escalate.recall) == (0.5, 1.0)
    assert m.fallbacks == 1
    assert m.fallback_rate == pytest.approx(1 / 6)
    assert (m.cases_with_errors, m.attempts) == (1, 8)
    assert (m.prompt_tokens, m.completion_tokens) == (600, 48)
    assert m.off_branch == 0
    assert m.confidence_available


def test_coverage_curve_and_best_threshold() -> None:
    # By falling confidence: right, right, wrong, right, right(tie), then a fallback without one.
    results = [
        result("refund", "refund", 0.9),
        result("answer", "answer", 0.8),
        result("technical", "answer", 0.7),
        result("escalate", "escalate", 0.6),
        result("refund", "refund", 0.6),
        result("technical", "escalate", None, method="fallback"),
    ]
    assert coverage_curve(results) == [
        CoveragePoint(threshold=0.9, kept=1, coverage=1 / 6, accuracy=1.0),
        CoveragePoint(threshold=0.8, kept=2, coverage=2 / 6, accuracy=1.0),
        CoveragePoint(threshold=0.7, kept=3, coverage=3 / 6, accuracy=2 / 3),
        CoveragePoint(threshold=0.6, kept=5, coverage=5 / 6, accuracy=4 / 5),  # ties kept together
        CoveragePoint(threshold=None, kept=6, coverage=1.0, accuracy=4 / 6),
    ]
    m = compute_metrics(results, BRANCHES)
    # Only 0.6 keeps >= 70% of the cases (5/6).
    assert m.best_threshold == CoveragePoint(threshold=0.6, kept=5, coverage=5 / 6, accuracy=0.8)


def test_best_threshold_prefers_more_coverage_at_equal_accuracy() -> None:
    results = [result("refund", "refund", c) for c in (0.9, 0.8, 0.7, 0.6)] + [
        result("answer", "refund", 0.1)
    ]
    m = compute_metrics(results, BRANCHES, min_coverage=0.5)
    assert m.best_threshold is not None
    # 0.9 … 0.6 all have accuracy 1.0 and keep >= 50%; 0.6 keeps the most.
    assert (m.best_threshold.threshold, m.best_threshold.kept) == (0.6, 4)


def test_without_confidences_the_curve_is_one_point() -> None:
    m = compute_metrics([result("refund", "refund"), result("answer", "refund")], BRANCHES)
    assert not m.confidence_available
    assert m.coverage_curve == [CoveragePoint(threshold=None, kept=2, coverage=1.0, accuracy=0.5)]
    assert m.best_threshold is None


def test_latency_percentiles_and_stray_labels() -> None:
    results = [result("refund", "refund", latency_ms=float(ms)) for ms in (120, 80, 100, 400, 90)]
    results.append(result("refund", "bogus"))
    m = compute_metrics(results, BRANCHES)
    assert (m.latency_p50_ms, m.latency_p95_ms, m.latency_max_ms) == (100.0, 400.0, 400.0)
    assert m.labels == [*BRANCHES, "bogus"]  # visible in the matrix, counted as off-branch
    assert m.off_branch == 1
    assert m.confusion[0] == [5, 0, 0, 0, 1]


def test_empty_run() -> None:
    m = compute_metrics([], BRANCHES)
    assert (m.cases, m.accuracy, m.latency_p50_ms, m.coverage_curve) == (0, 0.0, None, [])
