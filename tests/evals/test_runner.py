"""The eval runner against the fake OpenAI server, over real HTTP, with the production ``decide``."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from agents.decision import Decision, decide
from core.errors import ConfigurationError
from core.redis import free_port
from evals.baseline import Baseline, SplitBaseline, load_baseline, save_baseline
from evals.nodes import resolve_node
from evals.runner import EvalOptions, Progress, execute
from graphs.support_triage import TRIAGE
from tests.evals.conftest import (
    KEYWORD_CONFUSION,
    KEYWORD_DEV,
    NODE,
    case,
    keyword_test_split,
    llm_settings,
    write_dataset,
)
from tests.fakes.openai_server import FakeOpenAI


class Run:
    """What one ``execute`` call produced."""

    def __init__(self, code: int, out: str, err: str, out_dir: Path) -> None:
        self.code, self.out, self.err, self.out_dir = code, out, err, out_dir

    def result(self, stem: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out_dir / f"{stem}.json").read_text(encoding="utf-8"))
        return data


async def run_eval(tmp_path: Path, base_url: str, **options: Any) -> Run:
    out, err = io.StringIO(), io.StringIO()
    values: dict[str, Any] = {
        "node": NODE,
        "out_dir": tmp_path / "results",
        "datasets_dir": tmp_path / "datasets",
        "baselines_dir": tmp_path / "baselines",
        **options,
    }
    code = await execute(EvalOptions(**values), llm_settings(base_url), out=out, err=err)
    return Run(code, out.getvalue(), err.getvalue(), values["out_dir"])


@pytest.fixture
def keyword_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "datasets", KEYWORD_DEV, keyword_test_split())


async def test_metrics_from_a_real_run(tmp_path: Path, fake: FakeOpenAI, keyword_dataset: Path) -> None:
    run = await run_eval(tmp_path, fake.base_url)
    assert run.code == 0, run.err
    data = run.result(f"{NODE}-dev")
    m = data["metrics"]
    assert (m["cases"], m["correct"]) == (6, 4)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["labels"] == TRIAGE.branch_names
    assert m["confusion"] == KEYWORD_CONFUSION
    assert m["per_branch"]["refund"]["precision"] == 0.5  # k1 right, k5 wrongly sent here
    assert m["per_branch"]["answer"]["recall"] == 0.5
    assert m["fallbacks"] == 0
    assert len(fake.requests()) == 6  # one call per case: exactly what production does

    assert data["node"] == NODE and data["split"] == "dev"
    assert data["dataset_version"] == "test-1" and data["dataset_manifest_matches"]
    assert data["prompt_version"] == TRIAGE.prompt_version
    assert data["base_url"] == fake.base_url
    assert data["served_models"] == ["smollm2"]
    first = data["cases"][0]
    assert {
        "id",
        "expected",
        "chosen",
        "method",
        "confidence",
        "latency_ms",
        "attempts",
        "errors",
        "tokens",
    } <= set(first)
    assert (first["id"], first["expected"], first["chosen"], first["method"]) == (
        "k1",
        "refund",
        "refund",
        "llm",
    )
    assert first["attempts"] == 1 and first["errors"] == []
    assert first["tokens"]["prompt"] > 0 and first["tokens"]["completion"] > 0
    assert first["confidence"] == pytest.approx(0.9)  # the fake gives the chosen branch 0.9

    assert "accuracy     66.7%  (4/6)" in run.out
    assert "PASS" in run.out
    assert re.search(r"\[6/6\] accuracy  66\.7%", run.err)  # the progress line


async def test_scripted_confidences_give_a_hand_checked_curve(tmp_path: Path, fake: FakeOpenAI) -> None:
    dev = [
        case("a", "one", "refund"),
        case("b", "two", "answer"),
        case("c", "three", "technical"),
        case("d", "four", "escalate"),
        case("e", "five", "refund"),
    ]
    write_dataset(tmp_path / "datasets", dev, keyword_test_split(4))
    fake.script(
        [
            {"kind": "branch", "value": "refund", "probs": {"refund": 0.9, "answer": 0.1}},  # right
            {"kind": "branch", "value": "answer", "probs": {"answer": 0.8, "refund": 0.2}},  # right
            {"kind": "branch", "value": "escalate", "probs": {"escalate": 0.7, "technical": 0.3}},  # wrong
            {"kind": "branch", "value": "escalate", "probs": {"escalate": 0.6, "refund": 0.4}},  # right
            {"kind": "status", "status": 500},  # fallback -> escalate, wrong, no confidence
        ]
    )
    run = await run_eval(tmp_path, fake.base_url)
    assert run.code == 0, run.err
    m = run.result(f"{NODE}-dev")["metrics"]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert (m["fallbacks"], m["fallback_rate"]) == (1, pytest.approx(0.2))
    curve = [(p["threshold"], p["kept"], p["accuracy"]) for p in m["coverage_curve"]]
    assert curve == [
        (pytest.approx(0.9), 1, 1.0),
        (pytest.approx(0.8), 2, 1.0),
        (pytest.approx(0.7), 3, pytest.approx(2 / 3)),
        (pytest.approx(0.6), 4, 0.75),
        (None, 5, 0.6),
    ]
    best = m["best_threshold"]
    assert (best["threshold"], best["coverage"], best["accuracy"]) == (pytest.approx(0.6), 0.8, 0.75)
    fallback = run.result(f"{NODE}-dev")["cases"][4]
    assert (fallback["method"], fallback["chosen"], fallback["confidence"]) == ("fallback", "escalate", None)
    assert fallback["errors"] == ["http 500"]


async def test_report_files_and_html(tmp_path: Path, fake: FakeOpenAI) -> None:
    dev = [*KEYWORD_DEV, case("x1", "<script>alert('refund')</script> & the app is broken", "technical")]
    write_dataset(tmp_path / "datasets", dev, keyword_test_split())
    run = await run_eval(tmp_path, fake.base_url, out_dir=tmp_path / "out")
    assert run.code == 0, run.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{NODE}-dev.html", f"{NODE}-dev.json"]
    page = (tmp_path / "out" / f"{NODE}-dev.html").read_text(encoding="utf-8")

    # the three plots
    assert 'id="confusion-matrix"' in page
    svgs = {m.group(1): m.group(0) for m in re.finditer(r'<svg id="([^"]+)".*?</svg>', page, re.S)}
    assert set(svgs) == {"coverage-curve", "latency-histogram"}
    for svg in svgs.values():
        ET.fromstring(svg)  # well-formed
    assert "<polyline" in svgs["coverage-curve"] and "<rect" in svgs["latency-histogram"]

    # header
    for text in (NODE, fake.base_url, "test-1", TRIAGE.prompt_version, "smollm2", ">dev<"):
        assert text in page, text
    # self-contained: no scripts, no external resources; ticket text escaped
    assert "<script" not in page
    assert not re.search(r"<link|\bsrc=|@import|url\(", page)
    assert "&lt;script&gt;alert(&#x27;refund&#x27;)&lt;/script&gt; &amp; the app" in page


async def test_baseline_gate(tmp_path: Path, fake: FakeOpenAI, keyword_dataset: Path) -> None:
    baselines = tmp_path / "baselines"

    def baseline(accuracy: float, tolerance: float = 0.05) -> None:
        entry = SplitBaseline(
            accuracy=accuracy,
            cases=6,
            model="smollm2",
            prompt_version=TRIAGE.prompt_version,
            dataset_version="test-1",
            date="2026-11-25",
        )
        save_baseline(Baseline(node=NODE, tolerance=tolerance, splits={"dev": entry}), baselines)

    baseline(0.70)  # this run: 0.667, 0.033 below: within the tolerance
    run = await run_eval(tmp_path, fake.base_url)
    assert run.code == 0, run.err
    assert "vs baseline 0.700 (tolerance 0.050): ok" in run.out

    baseline(0.75)  # 0.083 below: a regression
    run = await run_eval(tmp_path, fake.base_url)
    assert run.code == 1
    assert (
        "FAIL: accuracy 0.667 is 0.083 below the baseline 0.750 (2026-11-25), more than the tolerance 0.050"
        in run.err
    )
    gate = run.result(f"{NODE}-dev")["gate"]
    assert gate["passed"] is False and gate["baseline_accuracy"] == 0.75

    baseline(0.75, tolerance=0.1)
    assert (await run_eval(tmp_path, fake.base_url)).code == 0

    # The baseline is per split: no test baseline, so a test run is not gated.
    run = await run_eval(tmp_path, fake.base_url, split="test")
    assert run.code == 0
    assert "no baseline for support_triage.triage test: not gated" in run.out


async def test_update_baseline(tmp_path: Path, fake: FakeOpenAI, keyword_dataset: Path) -> None:
    baselines = tmp_path / "baselines"
    save_baseline(Baseline(node=NODE, tolerance=0.08), baselines)
    run = await run_eval(tmp_path, fake.base_url, update_baseline=True)
    assert run.code == 0, run.err
    saved = load_baseline(NODE, baselines)
    assert saved is not None and saved.tolerance == 0.08  # kept
    dev = saved.splits["dev"]
    assert (dev.accuracy, dev.cases, dev.model, dev.dataset_version) == (0.6667, 6, "smollm2", "test-1")
    assert dev.prompt_version == TRIAGE.prompt_version

    with pytest.raises(ValueError, match="whole split"):
        await run_eval(tmp_path, fake.base_url, update_baseline=True, limit=3)


async def test_smoke_runs_the_first_held_out_cases(
    tmp_path: Path, fake: FakeOpenAI, keyword_dataset: Path
) -> None:
    save_baseline(
        Baseline(
            node=NODE,
            splits={
                "test": SplitBaseline(
                    accuracy=1.0, cases=25, model="x", prompt_version="x", dataset_version="x", date="x"
                )
            },
        ),
        tmp_path / "baselines",
    )
    # t00 and t02 answered wrongly: 90%, which the full-split gate (1.0 - 0.05) would fail.
    fake.script([{"kind": "branch", "value": "answer"}] * 3)
    run = await run_eval(tmp_path, fake.base_url, smoke=True)
    assert run.code == 0, run.err
    data = run.result(f"{NODE}-test-first20")
    assert data["split"] == "test" and data["limit"] == 20 and data["smoke"]
    assert [c["id"] for c in data["cases"]] == [f"t{i:02d}" for i in range(20)]
    assert "fallbacks: 0/20" in run.out
    assert "baseline gate skipped: partial run (20/25 cases)" in run.out
    assert not (tmp_path / "results" / f"{NODE}-test.json").exists()  # a full run's file is never overwritten

    run = await run_eval(tmp_path, fake.base_url, smoke=True, limit=22)
    assert run.code == 0 and run.result(f"{NODE}-test-first22")["metrics"]["cases"] == 22


async def test_smoke_fails_when_every_answer_is_a_fallback(tmp_path: Path, keyword_dataset: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    run = await run_eval(tmp_path, dead, smoke=True, progress=False)
    assert run.code == 1
    assert (
        "FAIL: every answer was a fallback (20/20): the model is not working (errors: connection refused ×20)"
        in run.err
    )
    # Every fallback is a declared branch, so that check alone would not have caught it.
    assert run.result(f"{NODE}-test-first20")["metrics"]["off_branch"] == 0


async def test_smoke_fails_when_an_answer_is_not_a_declared_branch(
    tmp_path: Path, fake: FakeOpenAI, keyword_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decide = decide
    calls = 0

    async def broken_decide(*args: Any, **kwargs: Any) -> Decision:
        nonlocal calls
        calls += 1
        decision = await real_decide(*args, **kwargs)
        return decision.model_copy(update={"chosen": "complaint"}) if calls == 3 else decision

    monkeypatch.setattr("evals.runner.decide", broken_decide)
    run = await run_eval(tmp_path, fake.base_url, smoke=True)
    assert run.code == 1
    assert (
        "FAIL: 1 answer(s) are not declared branches ['refund', 'answer', 'technical', 'escalate']: t02='complaint'"
        in run.err
    )


async def test_concurrency_keeps_case_order(tmp_path: Path, fake: FakeOpenAI, keyword_dataset: Path) -> None:
    run = await run_eval(tmp_path, fake.base_url, split="test", concurrency=4)
    assert run.code == 0, run.err
    data = run.result(f"{NODE}-test")
    assert [c["id"] for c in data["cases"]] == [f"t{i:02d}" for i in range(25)]
    assert data["metrics"]["accuracy"] == 1.0 and data["concurrency"] == 4


async def test_stale_manifest_is_reported(tmp_path: Path, fake: FakeOpenAI, keyword_dataset: Path) -> None:
    dev = keyword_dataset / NODE / "dev.jsonl"
    dev.write_text(dev.read_text(encoding="utf-8") + json.dumps(case("k7", "refund", "refund")) + "\n")
    run = await run_eval(tmp_path, fake.base_url)
    assert run.code == 0
    assert "differs from its manifest.json: dataset_version test-1 is stale" in run.err
    assert run.result(f"{NODE}-dev")["dataset_manifest_matches"] is False


def test_node_resolver() -> None:
    graph_id, spec = resolve_node("support_triage.triage")
    assert graph_id == "support_triage" and spec is TRIAGE
    with pytest.raises(ConfigurationError) as e:
        resolve_node("support_triage.router")
    assert e.value.message == (
        "graph 'support_triage' declares no decision node 'router'; it declares: support_triage.triage"
    )
    with pytest.raises(
        ConfigurationError,
        match=r"no graph 'billing' in graphs/ \(graphs: .*support_triage.*\); "
        r"decision nodes: .*support_triage\.triage",
    ):
        resolve_node("billing.triage")
    with pytest.raises(
        ConfigurationError, match=r"must look like <graph_id>\.<node>; available: .*support_triage\.triage"
    ):
        resolve_node("triage")


async def test_unknown_node_and_missing_endpoint_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no decision node 'nope'"):
        await run_eval(tmp_path, "http://unused/v1", node="support_triage.nope")
    write_dataset(tmp_path / "datasets", KEYWORD_DEV, keyword_test_split())
    options = EvalOptions(node=NODE, datasets_dir=tmp_path / "datasets", out_dir=tmp_path / "r")
    with pytest.raises(ConfigurationError, match="INTERLOCK_LLM_BASE_URL"):
        await execute(options, llm_settings("", llm_base_url=None), out=io.StringIO(), err=io.StringIO())


def test_progress_line_without_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(20, stream)
    for i in range(20):
        progress.update(correct=i % 2 == 0)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # one per tenth of the run, not one per case
    assert lines[-1].startswith("[20/20] accuracy  50.0%  elapsed ")
    assert "ETA 0s" in lines[-1]
