"""What an eval run records: one :class:`CaseResult` per case, :class:`Metrics`, the run itself."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["BranchStats", "CaseResult", "CoveragePoint", "EvalRun", "GateOutcome", "Metrics", "Tokens"]


class Tokens(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt: int
    completion: int


class CaseResult(BaseModel):
    """How the decision node handled one case."""

    model_config = ConfigDict(frozen=True)

    id: str
    expected: str
    chosen: str
    correct: bool
    method: Literal["llm", "fallback", "human"]
    """As ``Decision.method``; ``decide`` itself only ever gives ``llm`` or ``fallback``."""
    confidence: float | None
    """As ``Decision.confidence``; None on fallback or when it could not be measured."""
    confidence_method: Literal["logprobs", "agreement"] | None = None
    latency_ms: float
    attempts: int
    errors: list[str]
    tokens: Tokens
    model: str
    """The model that answered, as the server reported it."""


class BranchStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    support: int
    """Cases expecting this branch."""
    predicted: int
    """Cases the node sent to this branch."""
    correct: int
    precision: float | None
    """None when nothing was sent to this branch."""
    recall: float | None
    """None when no case expects this branch."""


class CoveragePoint(BaseModel):
    """Answer only the cases with confidence >= threshold: how many are kept, how many right."""

    model_config = ConfigDict(frozen=True)

    threshold: float | None
    """None: no threshold, every case kept (cases without a confidence included)."""
    kept: int
    coverage: float
    accuracy: float | None
    """On the kept cases; None when none are kept."""


class Metrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    cases: int
    correct: int
    accuracy: float
    """Over every case (full coverage); a fallback counts as whatever branch it chose."""
    labels: list[str]
    """Row and column order of ``confusion``: the node's branches (plus any stray label)."""
    confusion: list[list[int]]
    """``confusion[i][j]``: cases expecting ``labels[i]`` that went to ``labels[j]``."""
    per_branch: dict[str, BranchStats]
    fallbacks: int
    fallback_rate: float
    off_branch: int
    """Answers that are not a declared branch; always 0 unless ``decide`` is broken."""
    cases_with_errors: int
    """Cases where at least one attempt failed (retried or fell back)."""
    attempts: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_max_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    confidence_available: bool
    """Whether any case has a confidence (the server reported log-probabilities)."""
    coverage_curve: list[CoveragePoint]
    """Ordered by rising coverage (falling threshold)."""
    min_coverage: float
    best_threshold: CoveragePoint | None
    """The threshold with the best accuracy among those keeping >= ``min_coverage``."""


class GateOutcome(BaseModel):
    """Whether this run passes: baseline regression check and, for smoke runs, sanity checks."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: list[str]
    """Why it failed (empty when it passed)."""
    notes: list[str]
    """What was checked or skipped, and anything worth knowing (baseline drift)."""
    baseline_accuracy: float | None = None
    tolerance: float | None = None


class EvalRun(BaseModel):
    """One run of a decision node over a dataset split: the JSON result file."""

    node: str
    """``<graph_id>.<node>``."""
    split: str
    dataset_version: str
    dataset_sha256: str
    dataset_manifest_matches: bool
    limit: int | None
    """Only the first ``limit`` cases were run (None: the whole split)."""
    smoke: bool
    total_cases_in_split: int
    model: str
    """The configured model name."""
    served_models: list[str]
    """Model names the server reported in its answers."""
    base_url: str
    structured_output: str
    logprobs: bool
    max_attempts: int
    timeout_s: float
    prompt_version: str
    concurrency: int
    started_at: str
    """UTC, ISO 8601."""
    duration_s: float
    metrics: Metrics
    gate: GateOutcome | None = None
    cases: list[CaseResult]
