"""Start the real service (``interlock serve``) or a worker process (``interlock worker``)
as subprocesses on loopback, restartable and killable like a real deployment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from core.processes import stop_process
from core.redis import free_port

ADMIN_KEY = "test-admin-key-0123456789"
"""An admin key of tenant ``default`` that every test service accepts (unless the test
sets ``INTERLOCK_API_KEYS`` or ``INTERLOCK_AUTH`` itself)."""


class ServiceProcess:
    """``interlock serve`` (or ``interlock worker`` with ``command="worker"``) in a child
    process, with authentication on."""

    api_key = ADMIN_KEY

    def __init__(
        self, env: Mapping[str, str], log_path: Path, *, port: int | None = None, command: str = "serve"
    ) -> None:
        self.command = command
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        defaults = {
            "INTERLOCK_API_KEYS": json.dumps([{"key": ADMIN_KEY, "tenant": "default", "roles": ["admin"]}])
        }
        self.env = {**os.environ, **defaults, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _args(self) -> list[str]:
        if self.command == "serve":
            return [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)]
        return [sys.executable, "-m", "api.cli", self.command]

    def _ready(self, seen: int) -> bool:
        if self.command == "serve":
            try:
                return httpx.get(f"{self.url}/ok", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False
        return "ready on" in self.log_path.read_text(errors="replace")[seen:]

    def start(self, timeout_s: float = 120.0) -> None:
        seen = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(self._args(), env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command} exited at start:\n{self.log_path.read_text()[-3000:]}")
            if self._ready(seen):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.command} did not start in {timeout_s}s:\n{self.log_path.read_text()[-3000:]}"
        )

    def send(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None and sig == signal.SIGTERM:
            self.process.send_signal(signal.SIGCONT)  # a paused process cannot stop itself
        stop_process(self.process, 30, sig)

    def kill(self) -> None:
        """SIGKILL: the process dies at whatever instruction it was on."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()
