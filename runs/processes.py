"""Worker processes of ``interlock serve`` (``INTERLOCK_WORKER_PROCESSES``).

Each is a plain ``interlock worker`` on the API's Redis and the API's LLM endpoint (the
embedded model is started once, by the API process). The supervisor waits on each child
(no polling), restarts one that exits with a backoff, and stops them all with SIGTERM,
which lets their in-flight runs finish or hands them back (``Worker.stop``). A child also
dies with its parent (``core.processes.die_with_parent``). Runs never depend on a child
being alive: one that dies mid-run leaves its queue entry to be taken over after the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

from core.settings import Settings

log = logging.getLogger("interlock.processes")

RESTART_DELAY_S = (0.5, 30.0)
"""First and longest delay before a dead worker process is started again (doubling)."""

HEALTHY_AFTER_S = 60.0
"""A child that ran this long before it died is restarted after the first delay again."""


class WorkerProcesses:
    """``count`` supervised ``interlock worker`` children sharing the caller's Redis."""

    def __init__(self, settings: Settings, count: int, *, redis_url: str, llm_base_url: str) -> None:
        self.count = count
        self.grace_s = settings.shutdown_grace_s
        env = {**os.environ, **settings.as_env()}
        env.update(
            REDIS_URL=redis_url,
            INTERLOCK_LLM_BASE_URL=llm_base_url,
            INTERLOCK_LOCAL_LLM="false",
            INTERLOCK_WORKERS="1",
            INTERLOCK_WORKER_PROCESSES="0",
            INTERLOCK_PARENT_PID=str(os.getpid()),
        )
        self._env = env
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise(slot), name=f"worker process {slot}")
            for slot in range(self.count)
        ]

    async def _spawn(self, slot: int) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "api.cli", "worker", env=self._env, stdin=asyncio.subprocess.DEVNULL
        )
        self._children[slot] = process
        log.info("worker process %d started (pid %d)", slot, process.pid)
        return process

    async def _supervise(self, slot: int) -> None:
        delay = RESTART_DELAY_S[0]
        while not self._stopping:
            started = time.monotonic()
            try:
                process = await self._spawn(slot)
            except OSError:
                log.exception("worker process %d could not be started", slot)
            else:
                code = await process.wait()
                if self._stopping:
                    return
                log.error("worker process %d (pid %d) exited with %s; restarting", slot, process.pid, code)
            if time.monotonic() - started > HEALTHY_AFTER_S:
                delay = RESTART_DELAY_S[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_S[1])

    async def stop(self) -> None:
        """SIGTERM every child and wait for it (its runs get ``shutdown_grace_s``); SIGKILL
        whatever is left a few seconds after that."""
        self._stopping = True
        live = [p for p in self._children.values() if p.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if live:
            waits = [asyncio.create_task(p.wait()) for p in live]
            _, pending = await asyncio.wait(waits, timeout=self.grace_s + 5)
            for process in live:
                if process.returncode is None:
                    log.warning("worker process pid %d did not stop in time: killed", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
            for waiting in pending:
                waiting.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
