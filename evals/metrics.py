"""Metrics of an eval run, computed from the per-case results alone (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from evals.models import BranchStats, CaseResult, CoveragePoint, Metrics

__all__ = ["DEFAULT_MIN_COVERAGE", "compute_metrics", "coverage_curve", "percentile"]

DEFAULT_MIN_COVERAGE = 0.7
"""The best confidence threshold is sought among those that still answer >= 70% of cases."""


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``p``% of values <= it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def coverage_curve(results: Sequence[CaseResult]) -> list[CoveragePoint]:
    """Accuracy on the cases kept at each threshold, from the strictest threshold down.

    Each distinct confidence is a threshold; a case is kept when its confidence is >= the
    threshold. Cases without a confidence (fallbacks, servers without log-probabilities)
    are below every threshold; a final point without a threshold keeps everything.
    """
    n = len(results)
    if n == 0:
        return []
    points: list[CoveragePoint] = []
    thresholds = sorted({r.confidence for r in results if r.confidence is not None}, reverse=True)
    kept_all = False
    for threshold in thresholds:
        kept = [r for r in results if r.confidence is not None and r.confidence >= threshold]
        points.append(_point(threshold, kept, n))
        kept_all = len(kept) == n
    if not kept_all:
        points.append(_point(None, list(results), n))
    return points


def _point(threshold: float | None, kept: Sequence[CaseResult], n: int) -> CoveragePoint:
    right = sum(r.correct for r in kept)
    return CoveragePoint(
        threshold=threshold,
        kept=len(kept),
        coverage=len(kept) / n,
        accuracy=right / len(kept) if kept else None,
    )


def compute_metrics(
    results: Sequence[CaseResult],
    branches: Sequence[str],
    *,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
) -> Metrics:
    """Accuracy, per-branch precision/recall, confusion matrix, fallbacks, latency, coverage."""
    labels = list(branches)
    for r in results:  # a stray label must show up in the matrix, not vanish from it
        for label in (r.expected, r.chosen):
            if label not in labels:
                labels.append(label)
    index = {label: i for i, label in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for r in results:
        confusion[index[r.expected]][index[r.chosen]] += 1

    per_branch: dict[str, BranchStats] = {}
    for label in labels:
        i = index[label]
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        correct = confusion[i][i]
        per_branch[label] = BranchStats(
            support=support,
            predicted=predicted,
            correct=correct,
            precision=correct / predicted if predicted else None,
            recall=correct / support if support else None,
        )

    n = len(results)
    correct_total = sum(r.correct for r in results)
    fallbacks = sum(r.method == "fallback" for r in results)
    latencies = [r.latency_ms for r in results]
    curve = coverage_curve(results)
    candidates = [
        p for p in curve if p.threshold is not None and p.coverage >= min_coverage and p.accuracy is not None
    ]
    # Best accuracy; among equals the one answering more cases.
    best = max(candidates, key=lambda p: (p.accuracy, p.coverage), default=None)
    return Metrics(
        cases=n,
        correct=correct_total,
        accuracy=correct_total / n if n else 0.0,
        labels=labels,
        confusion=confusion,
        per_branch=per_branch,
        fallbacks=fallbacks,
        fallback_rate=fallbacks / n if n else 0.0,
        off_branch=sum(r.chosen not in branches for r in results),
        cases_with_errors=sum(bool(r.errors) for r in results),
        attempts=sum(r.attempts for r in results),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        latency_max_ms=max(latencies, default=None),
        prompt_tokens=sum(r.tokens.prompt for r in results),
        completion_tokens=sum(r.tokens.completion for r in results),
        confidence_available=any(r.confidence is not None for r in results),
        coverage_curve=curve,
        min_coverage=min_coverage,
        best_threshold=best,
    )
