"""Run a decision node over a dataset split with the production ``decide`` and grade it.

``execute`` is the whole ``interlock eval`` command: resolve the node, load the split,
run every case through :func:`agents.decision.decide` against the configured model,
compute metrics, write ``<out>/<node>-<split>.json`` and ``.html``, print a summary, and
decide the exit status:

- 0: passed (or a baseline was recorded);
- 1: failed — accuracy fell more than the tolerance below the committed baseline, an
  answer was not a declared branch, or every answer was a fallback (the model is not
  working);
- 2 (raised as ``ConfigurationError``): the node, dataset or LLM endpoint is misconfigured.

Runs of part of a split (``--limit``, ``--smoke``) are not compared with the baseline,
which describes the whole split; their files get a ``-first<N>`` suffix so they never
overwrite a full run's results.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from agents.decision import DecisionSpec, decide
from agents.examples import ExampleSelector, NearestExamples
from agents.llm import LLMClient
from core.settings import Settings
from evals.baseline import BASELINES_DIR, check_baseline, load_baseline, save_baseline, updated_baseline
from evals.datasets import DATASETS_DIR, Case, Dataset, load_split
from evals.endpoint import eval_llm
from evals.metrics import compute_metrics
from evals.models import CaseResult, EvalRun, GateOutcome, Tokens
from evals.nodes import resolve_node
from evals.report import render_html, summary_text

__all__ = [
    "DEFAULT_SMOKE_CASES",
    "RESULTS_DIR",
    "EvalOptions",
    "Progress",
    "execute",
    "result_stem",
    "run_cases",
    "sanity_reasons",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"

DEFAULT_SMOKE_CASES = 20
"""A smoke run takes the first 20 held-out cases: enough to see every branch at least once."""


class Progress:
    """One line on stderr: cases done, running accuracy, ETA.

    On a terminal the line is rewritten in place; otherwise (CI logs) a line is printed at
    every tenth of the run, so logs stay readable.
    """

    def __init__(self, total: int, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and total > 0
        self.done = 0
        self.correct = 0
        self._started = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = 0

    def update(self, correct: bool) -> None:
        self.done += 1
        self.correct += correct
        if not self.enabled:
            return
        if self._tty:
            self.stream.write("\r" + self.line().ljust(72))
            self.stream.flush()
            return
        decile = self.done * 10 // self.total
        if decile > self._last_decile or self.done == self.total:
            self._last_decile = decile
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        elapsed = time.monotonic() - self._started
        accuracy = self.correct / self.done if self.done else 0.0
        remaining = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        width = len(str(self.total))
        return (
            f"[{self.done:>{width}}/{self.total}] accuracy {accuracy:6.1%}  "
            f"elapsed {_duration(elapsed)}  ETA {_duration(remaining)}"
        )

    def finish(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s"


async def run_cases(
    spec: DecisionSpec,
    cases: Sequence[Case],
    llm: LLMClient,
    *,
    concurrency: int = 1,
    progress: Progress | None = None,
    selector: ExampleSelector | None = None,
) -> list[CaseResult]:
    """Decide every case with ``spec``, at most ``concurrency`` at a time; results in case order.

    ``selector`` picks few-shot examples per case exactly as the service does (a case
    never sees itself as an example).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    slots = asyncio.Semaphore(concurrency)
    results: list[CaseResult | None] = [None] * len(cases)

    async def one(i: int, case: Case) -> None:
        async with slots:
            examples = (
                await asyncio.to_thread(selector.select, spec, case.input)
                if selector is not None and spec.nearest_examples
                else None
            )
            decision = await decide(spec, case.input, llm, examples)
        result = CaseResult(
            id=case.id,
            expected=case.expected,
            chosen=decision.chosen,
            correct=decision.chosen == case.expected,
            method=decision.method,
            confidence=decision.confidence,
            confidence_method=decision.confidence_method,
            latency_ms=round(decision.latency_ms, 2),
            attempts=decision.attempts,
            errors=decision.errors,
            tokens=Tokens(prompt=decision.prompt_tokens, completion=decision.completion_tokens),
            model=decision.model,
        )
        results[i] = result
        if progress is not None:
            progress.update(result.correct)

    async with asyncio.TaskGroup() as group:
        for i, case in enumerate(cases):
            group.create_task(one(i, case))
    if progress is not None:
        progress.finish()
    return [r for r in results if r is not None]


def sanity_reasons(run: EvalRun, branches: Sequence[str]) -> list[str]:
    """Failures no baseline is needed for: off-list answers, or nothing but fallbacks."""
    reasons: list[str] = []
    off = [r for r in run.cases if r.chosen not in branches]
    if off:
        shown = ", ".join(f"{r.id}={r.chosen!r}" for r in off[:5])
        reasons.append(f"{len(off)} answer(s) are not declared branches {list(branches)}: {shown}")
    m = run.metrics
    if m.cases and m.fallbacks == m.cases:
        errors = Counter(e for r in run.cases for e in r.errors)
        top = ", ".join(f"{e} ×{n}" for e, n in errors.most_common(3)) or "none recorded"
        reasons.append(
            f"every answer was a fallback ({m.fallbacks}/{m.cases}): the model is not working (errors: {top})"
        )
    return reasons


@dataclass(frozen=True)
class EvalOptions:
    """What ``interlock eval`` was asked to do."""

    node: str
    split: str | None = None
    """None: ``test`` for smoke runs, else ``dev``."""
    limit: int | None = None
    smoke: bool = False
    out_dir: Path = RESULTS_DIR
    update_baseline: bool = False
    concurrency: int = 1
    datasets_dir: Path = DATASETS_DIR
    baselines_dir: Path = BASELINES_DIR
    progress: bool = True
    """Show the progress line on stderr."""


def result_stem(node: str, split: str, limit: int | None) -> str:
    """``<node>-<split>``, with ``-first<N>`` for partial runs."""
    return f"{node}-{split}" if limit is None else f"{node}-{split}-first{limit}"


async def execute(
    options: EvalOptions,
    settings: Settings,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the eval ``options`` describe against the model ``settings`` configure; the exit status.

    Raises:
        ConfigurationError: unknown node, missing or invalid dataset, no LLM endpoint.
        ValueError: contradictory options (``--update-baseline`` with ``--limit``, …).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    split = options.split or ("test" if options.smoke else "dev")
    limit = options.limit
    if options.smoke and limit is None:
        limit = DEFAULT_SMOKE_CASES
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    if options.update_baseline and (limit is not None or options.smoke):
        raise ValueError("--update-baseline needs a run of the whole split (no --limit or --smoke)")

    _graph_id, spec = resolve_node(options.node)
    dataset = load_split(options.node, split, root=options.datasets_dir, spec=spec)
    cases = dataset.cases[:limit] if limit is not None else dataset.cases
    if limit is not None and limit >= len(dataset.cases):
        limit = None  # the whole split after all: comparable with the baseline
    if not dataset.manifest_matches:
        err.write(
            f"warning: {dataset.path} differs from its manifest.json: dataset_version "
            f"{dataset.version} is stale; update the manifest after editing cases\n"
        )

    async with eval_llm(settings) as llm:
        err.write(
            f"{options.node}: {len(cases)} {split} cases, model {llm.model} at {llm.base_url}, "
            f"concurrency {options.concurrency}\n"
        )
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        progress = Progress(len(cases), err, enabled=options.progress)
        selector = (
            NearestExamples.if_installed() if spec.nearest_examples and settings.nearest_examples else None
        )
        if spec.nearest_examples:
            err.write(
                f"few-shot: {spec.nearest_examples} nearest of {spec.example_pool}\n"
                if selector is not None
                else "few-shot: nearest examples off or not installed, fixed examples\n"
            )
        results = await run_cases(
            spec, cases, llm, concurrency=options.concurrency, progress=progress, selector=selector
        )
        duration_s = time.perf_counter() - clock

    run = EvalRun(
        node=options.node,
        split=split,
        dataset_version=dataset.version,
        dataset_sha256=dataset.sha256,
        dataset_manifest_matches=dataset.manifest_matches,
        limit=limit,
        smoke=options.smoke,
        total_cases_in_split=len(dataset.cases),
        model=llm.model,
        served_models=sorted({r.model for r in results if r.method == "llm"}),
        base_url=llm.base_url,
        structured_output=llm.structured_output,
        logprobs=llm.logprobs,
        max_attempts=spec.max_attempts or llm.max_attempts,
        timeout_s=spec.timeout_s or llm.timeout_s,
        prompt_version=spec.prompt_version,
        concurrency=options.concurrency,
        started_at=started_at.isoformat(timespec="seconds"),
        duration_s=round(duration_s, 3),
        metrics=compute_metrics(results, spec.branch_names),
        cases=results,
    )
    gate = _gate(run, spec, dataset, options)
    run = run.model_copy(update={"gate": gate})

    json_path, html_path = write_outputs(run, dataset, options.out_dir)
    out.write(summary_text(run) + "\n")
    out.write(f"wrote {json_path} and {html_path}\n")

    if options.update_baseline:
        if not gate.passed:
            for reason in gate.reasons:
                err.write(f"FAIL: {reason}\n")
            err.write("baseline not updated\n")
            return 1
        baseline = updated_baseline(load_baseline(options.node, options.baselines_dir), run)
        path = save_baseline(baseline, options.baselines_dir)
        out.write(f"baseline for {split} set to accuracy {run.metrics.accuracy:.3f} in {path}\n")
        return 0
    for note in gate.notes:
        out.write(f"note: {note}\n")
    if not gate.passed:
        for reason in gate.reasons:
            err.write(f"FAIL: {reason}\n")
        return 1
    out.write("PASS\n")
    return 0


def _gate(run: EvalRun, spec: DecisionSpec, dataset: Dataset, options: EvalOptions) -> GateOutcome:
    reasons = sanity_reasons(run, spec.branch_names)
    notes = [f"fallbacks: {run.metrics.fallbacks}/{run.metrics.cases}"]
    if not dataset.manifest_matches:
        notes.append("dataset file differs from its manifest: dataset_version is stale")
    if options.update_baseline:
        return GateOutcome(passed=not reasons, reasons=reasons, notes=notes)
    if run.limit is not None:
        notes.append(
            f"baseline gate skipped: partial run ({run.metrics.cases}/{run.total_cases_in_split} cases); "
            "the baseline describes the whole split"
        )
        return GateOutcome(passed=not reasons, reasons=reasons, notes=notes)
    baseline = check_baseline(load_baseline(options.node, options.baselines_dir), run)
    return baseline.model_copy(
        update={
            "passed": baseline.passed and not reasons,
            "reasons": reasons + baseline.reasons,
            "notes": notes + baseline.notes,
        }
    )


def write_outputs(run: EvalRun, dataset: Dataset, out_dir: Path) -> tuple[Path, Path]:
    """Write the JSON result and the HTML report; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem(run.node, run.split, run.limit)
    json_path = out_dir / f"{stem}.json"
    html_path = out_dir / f"{stem}.html"
    json_path.write_text(run.model_dump_json(indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_html(run, {c.id: c for c in dataset.cases}), encoding="utf-8")
    return json_path, html_path
