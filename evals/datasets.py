"""Eval datasets: labelled cases for one decision node, in a dev and a held-out test split.

A dataset lives in ``evals/datasets/<graph_id>.<node>/``::

    dev.jsonl       cases to look at while working on a prompt
    test.jsonl      held out: only for reporting, never for tuning
    manifest.json   dataset_version, counts per split and branch, sha256 of each file
    README.md       what the branches mean and how cases were labelled

One case per line: ``{"id": str, "input": {...}, "expected": <branch>, "notes": str}``
(``notes`` optional). ``input`` holds the state fields the decision node reads.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.decision import DecisionSpec
from core.errors import ConfigurationError

__all__ = [
    "DATASETS_DIR",
    "SPLITS",
    "Case",
    "Dataset",
    "Split",
    "build_manifest",
    "file_sha256",
    "load_split",
    "read_cases",
    "write_manifest",
]

DATASETS_DIR = Path(__file__).resolve().parent / "datasets"
"""Where the committed datasets live."""

Split = Literal["dev", "test"]
SPLITS: tuple[Split, ...] = ("dev", "test")


class Case(BaseModel):
    """One labelled input of a decision node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    """Unique across all splits of the dataset."""
    input: dict[str, Any]
    """Values of the node's input fields (for ``support_triage.triage``: ``ticket``)."""
    expected: str
    """The branch a careful person would choose, by the dataset's labelling rules."""
    notes: str | None = None
    """Why the label is what it is, for cases that could be read more than one way."""


@dataclass(frozen=True)
class Dataset:
    """One split of a node's dataset, as read from disk."""

    node: str
    split: str
    version: str
    """``dataset_version`` from ``manifest.json`` ("unversioned" without one)."""
    path: Path
    sha256: str
    """Of the split's file as read; compare with the manifest to spot unversioned edits."""
    manifest_matches: bool
    """Whether the file is the one the manifest describes (same sha256)."""
    cases: list[Case]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_cases(path: Path) -> list[Case]:
    """Parse a JSONL file of cases; blank lines are skipped.

    Raises:
        ConfigurationError: a line is not JSON or not a case (the message names the line),
            or two cases share an id.
    """
    cases: list[Case] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            case = Case.model_validate(json.loads(line))
        except (ValueError, ValidationError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigurationError(f"{path}:{number}: not a valid case ({reason})") from exc
        if case.id in seen:
            raise ConfigurationError(f"{path}:{number}: duplicate case id {case.id!r}")
        seen.add(case.id)
        cases.append(case)
    return cases


def load_split(
    node: str,
    split: str,
    *,
    root: Path = DATASETS_DIR,
    spec: DecisionSpec | None = None,
) -> Dataset:
    """Read ``<root>/<node>/<split>.jsonl``; with ``spec``, check every label is a branch of it.

    Raises:
        ConfigurationError: the dataset or split does not exist, or a case is invalid.
    """
    directory = root / node
    path = directory / f"{split}.jsonl"
    if not path.is_file():
        available = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if directory.is_dir():
            splits = sorted(p.stem for p in directory.glob("*.jsonl"))
            raise ConfigurationError(f"dataset {node} has no split {split!r}; it has {splits}")
        raise ConfigurationError(f"no dataset for {node} in {root}; datasets there: {available or 'none'}")
    cases = read_cases(path)
    if spec is not None:
        names = spec.branch_names
        for case in cases:
            if case.expected not in names:
                raise ConfigurationError(
                    f"{path}: case {case.id} expects {case.expected!r}, which is not a branch "
                    f"of {node} {names}"
                )
    sha = file_sha256(path)
    manifest = _read_manifest(directory)
    version = str(manifest.get("dataset_version", "unversioned"))
    recorded = manifest.get("splits", {}).get(split, {}).get("sha256")
    return Dataset(
        node=node,
        split=split,
        version=version,
        path=path,
        sha256=sha,
        manifest_matches=recorded == sha,
        cases=cases,
    )


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def build_manifest(directory: Path, version: str, splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """The manifest of the dataset in ``directory``: version, counts, file hashes."""
    per_split: dict[str, Any] = {}
    total: Counter[str] = Counter()
    for split in splits:
        path = directory / f"{split}.jsonl"
        cases = read_cases(path)
        counts = Counter(c.expected for c in cases)
        total += counts
        per_split[split] = {
            "file": path.name,
            "cases": len(cases),
            "per_branch": dict(sorted(counts.items())),
            "sha256": file_sha256(path),
        }
    return {
        "node": directory.name,
        "dataset_version": version,
        "cases": sum(s["cases"] for s in per_split.values()),
        "per_branch": dict(sorted(total.items())),
        "splits": per_split,
    }


def write_manifest(directory: Path, version: str) -> dict[str, Any]:
    """Rewrite ``directory/manifest.json``; run it after every edit of the case files."""
    manifest = build_manifest(directory, version)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
