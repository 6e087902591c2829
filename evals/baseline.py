"""Committed baselines and the regression gate.

``evals/baselines/<node>.json`` holds, per split, the accuracy a known-good run reached
and with what (model, prompt_version, dataset_version, date), plus a ``tolerance``. A run
of the whole split fails when its accuracy is more than ``tolerance`` below the baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigurationError
from evals.models import EvalRun, GateOutcome

__all__ = [
    "BASELINES_DIR",
    "DEFAULT_TOLERANCE",
    "Baseline",
    "SplitBaseline",
    "baseline_path",
    "check_baseline",
    "load_baseline",
    "save_baseline",
    "updated_baseline",
]

BASELINES_DIR = Path(__file__).resolve().parent / "baselines"

DEFAULT_TOLERANCE = 0.05
"""Five points of accuracy: on ~70-100 cases one case is 1-1.5 points, and a small local
model's answers shift with runtime and thread count even at temperature 0."""

_EPSILON = 1e-9
"""So that a drop of exactly ``tolerance`` passes despite float rounding."""


class SplitBaseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accuracy: float = Field(ge=0, le=1)
    cases: int
    model: str
    prompt_version: str
    dataset_version: str
    date: str


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str
    tolerance: float = Field(default=DEFAULT_TOLERANCE, ge=0, le=1)
    """How far below the baseline accuracy a run may fall before it fails."""
    splits: dict[str, SplitBaseline] = {}


def baseline_path(node: str, root: Path = BASELINES_DIR) -> Path:
    return root / f"{node}.json"


def load_baseline(node: str, root: Path = BASELINES_DIR) -> Baseline | None:
    path = baseline_path(node, root)
    if not path.is_file():
        return None
    try:
        return Baseline.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise ConfigurationError(f"{path} is not a valid baseline: {exc}") from exc


def save_baseline(baseline: Baseline, root: Path = BASELINES_DIR) -> Path:
    path = baseline_path(baseline.node, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(baseline.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def updated_baseline(current: Baseline | None, run: EvalRun) -> Baseline:
    """``current`` with this run's split replaced by the run's numbers (tolerance kept)."""
    baseline = current or Baseline(node=run.node)
    splits = dict(baseline.splits)
    splits[run.split] = SplitBaseline(
        accuracy=round(run.metrics.accuracy, 4),
        cases=run.metrics.cases,
        model=", ".join(run.served_models) or run.model,
        prompt_version=run.prompt_version,
        dataset_version=run.dataset_version,
        date=run.started_at[:10],
    )
    return baseline.model_copy(update={"splits": splits})


def check_baseline(baseline: Baseline | None, run: EvalRun) -> GateOutcome:
    """Compare a run of a whole split with the baseline for that split."""
    if baseline is None or run.split not in baseline.splits:
        return GateOutcome(
            passed=True,
            reasons=[],
            notes=[f"no baseline for {run.node} {run.split}: not gated (record one with --update-baseline)"],
        )
    base = baseline.splits[run.split]
    accuracy = run.metrics.accuracy
    floor = base.accuracy - baseline.tolerance
    notes: list[str] = []
    for what, then, now in (
        ("prompt_version", base.prompt_version, run.prompt_version),
        ("dataset_version", base.dataset_version, run.dataset_version),
        ("model", base.model, ", ".join(run.served_models) or run.model),
    ):
        if then != now:
            notes.append(f"baseline was measured with {what} {then}, this run used {now}")
    reasons: list[str] = []
    if accuracy < floor - _EPSILON:
        reasons.append(
            f"accuracy {accuracy:.3f} is {base.accuracy - accuracy:.3f} below the baseline "
            f"{base.accuracy:.3f} ({base.date}), more than the tolerance {baseline.tolerance:.3f}"
        )
    else:
        notes.append(
            f"accuracy {accuracy:.3f} vs baseline {base.accuracy:.3f} (tolerance {baseline.tolerance:.3f}): ok"
        )
    return GateOutcome(
        passed=not reasons,
        reasons=reasons,
        notes=notes,
        baseline_accuracy=base.accuracy,
        tolerance=baseline.tolerance,
    )
