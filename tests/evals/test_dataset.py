"""The committed support_triage.triage dataset is valid, balanced, versioned and held out."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigurationError
from evals.datasets import DATASETS_DIR, build_manifest, load_split, read_cases
from graphs.support_triage import TRIAGE

DIRECTORY = DATASETS_DIR / "support_triage.triage"

Splits = dict[str, list[dict[str, Any]]]


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


@pytest.fixture(scope="module")
def splits() -> Splits:
    """Raw JSON of every line, per split (parsing every line is itself the first check)."""
    found: Splits = {}
    for split in ("dev", "test"):
        lines = (DIRECTORY / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert all(line.strip() for line in lines), f"{split}.jsonl has blank lines"
        found[split] = [json.loads(line) for line in lines]
    return found


def test_every_line_is_a_valid_case_of_a_declared_branch() -> None:
    for split in ("dev", "test"):
        dataset = load_split("support_triage.triage", split, spec=TRIAGE)
        assert dataset.cases
        for case in dataset.cases:
            assert set(case.input) == {"ticket"}, case.id
            assert isinstance(case.input["ticket"], str) and case.input["ticket"].strip(), case.id
            assert case.expected in TRIAGE.branch_names, case.id


def test_size_and_split_ratio(splits: Splits) -> None:
    dev, test = len(splits["dev"]), len(splits["test"])
    assert dev + test >= 150
    assert 0.55 <= dev / (dev + test) <= 0.65


def test_ids_unique_across_splits(splits: Splits) -> None:
    ids = [c["id"] for cases in splits.values() for c in cases]
    assert len(ids) == len(set(ids))


def test_no_duplicate_tickets_and_test_disjoint_from_dev(splits: Splits) -> None:
    tickets = {s: [_normal(str(c["input"]["ticket"])) for c in cases] for s, cases in splits.items()}
    every = tickets["dev"] + tickets["test"]
    assert [t for t, n in Counter(every).items() if n > 1] == []
    assert set(tickets["dev"]).isdisjoint(tickets["test"])


def test_prompt_examples_are_not_cases(splits: Splits) -> None:
    examples = {_normal(str(e.input["ticket"])) for e in TRIAGE.examples}
    tickets = {_normal(str(c["input"]["ticket"])) for cases in splits.values() for c in cases}
    assert examples.isdisjoint(tickets)


def test_branches_roughly_balanced_in_both_splits(splits: Splits) -> None:
    for split, cases in splits.items():
        counts = Counter(str(c["expected"]) for c in cases)
        assert set(counts) == set(TRIAGE.branch_names), split
        for branch, n in counts.items():
            assert 0.15 <= n / len(cases) <= 0.35, (split, branch, n)


def test_smoke_slice_covers_every_branch(splits: Splits) -> None:
    assert {c["expected"] for c in splits["test"][:20]} == set(TRIAGE.branch_names)


def test_manifest_matches_the_files() -> None:
    manifest = json.loads((DIRECTORY / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == build_manifest(DIRECTORY, manifest["dataset_version"])
    readme = (DIRECTORY / "README.md").read_text(encoding="utf-8")
    assert manifest["dataset_version"] in readme
    for split in ("dev", "test"):
        assert load_split("support_triage.triage", split).manifest_matches


def test_read_cases_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "dev.jsonl"
    path.write_text(
        '{"id": "a", "input": {"ticket": "x"}, "expected": "refund"}\n{"id": "b", "input": {}}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match=r"dev.jsonl:2: not a valid case"):
        read_cases(path)
    path.write_text(
        '{"id": "a", "input": {}, "expected": "refund"}\n{"id": "a", "input": {}, "expected": "answer"}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match="duplicate case id 'a'"):
        read_cases(path)


def test_labels_outside_the_spec_are_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "support_triage.triage"
    directory.mkdir()
    (directory / "dev.jsonl").write_text(
        '{"id": "a", "input": {"ticket": "x"}, "expected": "complaint"}\n', encoding="utf-8"
    )
    with pytest.raises(ConfigurationError, match="'complaint', which is not a branch"):
        load_split("support_triage.triage", "dev", root=tmp_path, spec=TRIAGE)
    with pytest.raises(ConfigurationError, match=r"has no split 'test'; it has \['dev'\]"):
        load_split("support_triage.triage", "test", root=tmp_path)
    with pytest.raises(ConfigurationError, match=r"no dataset for other\.node"):
        load_split("other.node", "dev", root=tmp_path)
