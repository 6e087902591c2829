"""Child processes we start (redis-server, llama-server) and must stop in order."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
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


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux; elsewhere a
    no-op), so a child of ``interlock serve`` never outlives a ``kill -9`` of it. If the
    parent is already gone, terminate now."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now (modules, compiled graphs, the
    settings: what start-up made and the process keeps) out of the garbage collector's
    view (``gc.freeze``). Spans waiting in the export queue and run state live long
    enough to reach the oldest generation, and each full collection would otherwise
    walk the whole start-up heap again: ~0.1 s each, every few hundred runs, here.
    Call once, when the process is ready to serve."""
    gc.collect()
    gc.freeze()
