"""The package layout of ARCHITECTURE.md, checked: imports run one way only."""

from __future__ import annotations

import ast
from pathlib import Path

import agents

ROOT = Path(__file__).resolve().parent.parent

# What each package may import (besides itself and third-party code).
ALLOWED = {
    "core": set(),
    "store": {"core"},
    "agents": {"core"},
    "graphs": {"agents", "core"},
    "runs": {"graphs", "agents", "store", "core"},
    "api": {"runs", "graphs", "agents", "store", "core"},
}
OURS = set(ALLOWED) | {"tests", "evals", "bench"}

# Deliberate exceptions, each with its reason.
EXCEPTIONS = {
    # The `interlock` command line is the outermost shell: `interlock eval` runs evals/.
    ("api/cli.py", "evals"),
}


def test_agents_is_ours_not_openai_agents() -> None:
    assert Path(agents.__file__).resolve().is_relative_to(ROOT)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


def test_imports_run_one_way() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            for imported in _imports(path) - allowed - {package}:
                if (str(path.relative_to(ROOT)), imported) in EXCEPTIONS:
                    continue
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert wrong == []
