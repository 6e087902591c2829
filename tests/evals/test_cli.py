"""``python -m evals.cli``: the command a person or CI runs, in its own process."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.redis import free_port
from evals.cli import add_eval_command, main
from tests.evals.conftest import KEYWORD_DEV, NODE, keyword_test_split, write_dataset
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_LLM_")}
    # The fake model ignores examples: skip loading the embedding model in every process.
    env.update(
        {
            "INTERLOCK_LLM_MAX_ATTEMPTS": "1",
            "INTERLOCK_LOCAL_LLM": "false",
            "INTERLOCK_NEAREST_EXAMPLES": "false",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "evals.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_eval_exit_codes(tmp_path: Path, fake: FakeOpenAI) -> None:
    datasets = write_dataset(tmp_path / "datasets", KEYWORD_DEV, keyword_test_split())
    common = [
        "--datasets",
        str(datasets),
        "--baselines",
        str(tmp_path / "baselines"),
        "--out",
        str(tmp_path / "out"),
    ]

    done = cli("eval", NODE, "--base-url", fake.base_url, "--update-baseline", *common)
    assert done.returncode == 0, done.stderr
    baseline = json.loads((tmp_path / "baselines" / f"{NODE}.json").read_text(encoding="utf-8"))
    assert baseline["splits"]["dev"]["accuracy"] == 0.6667
    assert (tmp_path / "out" / f"{NODE}-dev.html").is_file()

    fake.script([{"kind": "branch", "value": "escalate"}] * 6)  # 1/6 right: far below the baseline
    done = cli("eval", NODE, "--base-url", fake.base_url, "--quiet", *common)
    assert done.returncode == 1
    assert "FAIL: accuracy 0.167 is 0.500 below the baseline 0.667" in done.stderr

    dead = f"http://127.0.0.1:{free_port()}/v1"
    done = cli("eval", NODE, "--smoke", "--limit", "21", "--base-url", dead, "--quiet", *common)
    assert done.returncode == 1
    assert "every answer was a fallback (21/21)" in done.stderr


def test_configuration_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datasets = write_dataset(tmp_path / "datasets", KEYWORD_DEV, keyword_test_split())
    common = [
        "--datasets",
        str(datasets),
        "--out",
        str(tmp_path / "out"),
        "--base-url",
        "http://127.0.0.1:9/v1",
    ]
    assert main(["eval", "support_triage.nope", *common]) == 2
    assert "declares no decision node 'nope'; it declares: support_triage.triage" in capsys.readouterr().err
    assert main(["eval", NODE, "--smoke", "--update-baseline", *common]) == 2
    assert "needs a run of the whole split" in capsys.readouterr().err
    assert main(["eval", NODE, "--split", "test", "--datasets", str(tmp_path / "none"), *common[2:]]) == 2
    assert "no dataset for support_triage.triage" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_eval_arguments() -> None:
    parser = argparse.ArgumentParser(prog="interlock")
    add_eval_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["eval", NODE, "--split", "test", "--limit", "5", "--concurrency", "2", "--out", "o"]
    )
    assert (args.node, args.split, args.limit, args.concurrency, args.out) == (NODE, "test", 5, 2, Path("o"))
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", NODE, "--concurrency", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", NODE, "--split", "train"])


def test_manifest_command(tmp_path: Path) -> None:
    datasets = write_dataset(tmp_path / "datasets", KEYWORD_DEV, keyword_test_split())
    done = cli("manifest", NODE, "--version", "test-2", "--datasets", str(datasets))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((datasets / NODE / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["dataset_version"] == "test-2"
    assert manifest["splits"]["dev"]["cases"] == 6 and manifest["splits"]["test"]["cases"] == 25
