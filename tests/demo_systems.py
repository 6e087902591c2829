"""Start the real demo systems (``interlock demo-systems``) as a subprocess on loopback, and
read or switch them over their HTTP API, as tests and demos do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from core.processes import stop_process
from core.redis import free_port

TRIGGER_SECRET = "test-trigger-secret-0123456789"


class DemoSystemsProcess:
    def __init__(
        self,
        data: Path,
        log_path: Path,
        *,
        callback_url: str | None = None,
        secret: str = TRIGGER_SECRET,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data
        self.log_path = log_path
        self.callback_url = callback_url
        self.env = {**os.environ, "INTERLOCK_DEMO_CALLBACK_SECRET": secret}
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self, timeout_s: float = 60.0) -> None:
        args = [
            sys.executable,
            "-m",
            "api.cli",
            "demo-systems",
            "--port",
            str(self.port),
            "--data",
            str(self.data),
        ]
        if self.callback_url:
            args += ["--callback-url", self.callback_url]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"demo-systems exited at start:\n{self.log_path.read_text()[-3000:]}")
            try:
                if self.http.get("/inventory/stock", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"demo-systems did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.process, 10, signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.stop()
        self.http.close()

    # --- reading and switching ---

    def _json(self, response: httpx.Response) -> Any:
        assert response.status_code < 300, response.text
        return response.json()

    def state(self) -> dict[str, Any]:
        return dict(self._json(self.http.get("/state")))

    def order(self, order_id: str) -> dict[str, Any]:
        return dict(self._json(self.http.get(f"/orders/{order_id}")))

    def idempotency(self) -> dict[str, Any]:
        return dict(self._json(self.http.get("/_control/idempotency")))

    def faults(self, *faults: dict[str, Any]) -> None:
        self._json(self.http.post("/_control/faults", json=list(faults)))

    def clear_faults(self) -> None:
        self._json(self.http.delete("/_control/faults"))

    def out_of_stock(self, *skus: str) -> None:
        self._json(self.http.post("/_control/out-of-stock", json=list(skus)))

    def settlement(self, **switch: Any) -> None:
        self._json(self.http.post("/_control/settlement", json=switch))

    def reset(self) -> None:
        self._json(self.http.post("/_control/reset"))
