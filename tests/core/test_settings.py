"""Settings handed to a child process through its environment (``Settings.as_env``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings


def test_a_child_reads_back_the_same_settings_secrets_and_lists_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parent = Settings(
        key_prefix="p:",
        data_dir=Path("/tmp/somewhere"),
        webhook_secret="s3cret-value",  # type: ignore[arg-type]
        api_keys=[{"key": "k" * 24, "tenant": "acme", "roles": ["operator"], "groups": ["ops"]}],  # type: ignore[list-item]
        triggers=[
            {"name": "paid", "secret": "trigger-secret-0123456789", "action": "start", "graph_id": "ten"}
        ],  # type: ignore[list-item]
        run_timeout_s=None,
        worker_processes=3,
    )
    monkeypatch.setenv("INTERLOCK_RUN_TIMEOUT_S", "5")  # inherited, but None in the parent
    env = parent.as_env()
    assert "**" not in "".join(env.values())  # secrets in clear, not pydantic's mask
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == parent
