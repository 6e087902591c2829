"""``interlock serve`` refuses configuration it cannot run with, in one clear line."""

from __future__ import annotations

import os
import subprocess
import sys


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unreachable_redis_is_explained() -> None:
    done = _serve({"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 2
    assert "cannot reach Redis" in done.stderr and "REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_graph_config_is_explained() -> None:
    done = _serve({"INTERLOCK_CONFIG": "/nonexistent/langgraph.json", "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 2
    assert "INTERLOCK_CONFIG points at /nonexistent/langgraph.json" in done.stderr
