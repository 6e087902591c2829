"""Child processes we start (redis-server, llama-server) and must stop in order."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any] | None, timeout_s: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` (SIGTERM: let it shut down cleanly) and wait ``timeout_s``; SIGKILL
    if it has not exited by then. Does nothing for a process that already ended."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
