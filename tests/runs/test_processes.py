"""``interlock serve`` with ``INTERLOCK_WORKER_PROCESSES``: its graphs run in supervised
``interlock worker`` children that share the API's Redis, come back when killed, and never
outlive the service."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from langgraph_sdk import get_client

from tests.service import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
TEN = {"text": "x" * 100, "n": 0}


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` running the worker command (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"worker" in cmdline:
            found.append(int(entry))
    return found


def wait_for(predicate: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = (
        Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        if Path(f"/proc/{pid}").exists()
        else "X"
    )
    return status not in ("Z", "X")


@pytest.fixture
def service(redis_url: str, tmp_path: Path) -> ServiceProcess:
    return ServiceProcess(
        {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
            "INTERLOCK_CONFIG": str(ROOT / "bench/graphs/langgraph.json"),
            "INTERLOCK_LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "INTERLOCK_NEAREST_EXAMPLES": "false",
            "INTERLOCK_DATA_DIR": str(tmp_path / "data"),
            "INTERLOCK_WORKERS": "0",
            "INTERLOCK_WORKER_PROCESSES": "1",
            "INTERLOCK_LEASE_MS": "1500",
        },
        tmp_path / "service.log",
    )


async def run_ten(service: ServiceProcess) -> int:
    async with get_client(url=service.url, api_key=service.api_key) as client:
        thread = await client.threads.create()
        result = await client.runs.wait(thread["thread_id"], "ten", input=TEN)
        assert isinstance(result, dict)
        return int(result["n"])


async def test_runs_execute_in_a_worker_process_that_comes_back_and_stops_with_the_service(
    service: ServiceProcess,
) -> None:
    service.start()
    try:
        wait_for(lambda: len(children(service.pid)) == 1)
        (first,) = children(service.pid)
        assert await run_ten(service) == 10  # no worker in the API process: the child ran it

        os.kill(first, signal.SIGKILL)
        wait_for(lambda: children(service.pid) not in ([], [first]))
        (second,) = children(service.pid)
        assert second != first
        assert await run_ten(service) == 10
        assert f"worker process 0 (pid {first}) exited with -9; restarting" in service.log_path.read_text()
    finally:
        service.stop()
    assert not alive(second)  # stopped with the service (SIGTERM, graceful)


async def test_a_worker_process_dies_with_a_killed_service(service: ServiceProcess) -> None:
    service.start()
    wait_for(lambda: len(children(service.pid)) == 1)
    (child,) = children(service.pid)
    service.kill()
    wait_for(lambda: not alive(child), timeout_s=10)
