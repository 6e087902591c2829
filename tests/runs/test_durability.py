"""Nothing acknowledged is lost: an API process and two worker processes on one real
Redis; workers are SIGKILLed or paused past their lease mid-run. Every acknowledged run
must finish, and no step's side effect may be applied twice (the ledger graph counts)."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.service import ServiceProcess

LEASE_MS = 1500
HERE = Path(__file__).parent


class Cluster:
    def __init__(self, redis_url: str, tmp: Path) -> None:
        config = tmp / "langgraph.json"
        config.write_text(json.dumps({"graphs": {"ledger": str(HERE / "ledger_graph.py") + ":graph"}}))
        self.prefix = f"t:{uuid.uuid4().hex[:12]}:"
        env = {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": self.prefix,
            "INTERLOCK_CONFIG": str(config),
            "INTERLOCK_LEASE_MS": str(LEASE_MS),
            "INTERLOCK_LOCAL_LLM": "false",
            "INTERLOCK_SHUTDOWN_GRACE_S": "0",
            "INTERLOCK_DATA_DIR": str(tmp / "data"),
        }
        self.api = ServiceProcess({**env, "INTERLOCK_WORKERS": "0"}, tmp / "api.log")
        self.workers = [ServiceProcess(env, tmp / f"worker{i}.log", command="worker") for i in range(2)]

    def start(self) -> None:
        self.api.start()
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for p in [*self.workers, self.api]:
            p.stop()


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(redis_url, tmp_path)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[LangGraphClient]:
    async with get_client(url=cluster.api.url, api_key=cluster.api.api_key) as c:
        yield c


async def _submit(client: LangGraphClient, n: int) -> list[tuple[str, str]]:
    runs = []
    for _ in range(n):
        thread = await client.threads.create()
        run = await client.runs.create(thread["thread_id"], "ledger", input={"n": 0})
        runs.append((thread["thread_id"], run["run_id"]))
    return runs


async def _settle(client: LangGraphClient, runs: list[tuple[str, str]], timeout_s: float = 90) -> list[Any]:
    async def one(tid: str, rid: str) -> Any:
        return await client.runs.join(tid, rid)

    return await asyncio.wait_for(asyncio.gather(*(one(t, r) for t, r in runs)), timeout_s)


async def _check_ledgers(redis_client: aredis.Redis, prefix: str, runs: list[tuple[str, str]]) -> None:
    for tid, _ in runs:
        ledger = await redis_client.hgetall(f"{prefix}ledger:{{{tid}}}")
        assert {k.decode(): int(v) for k, v in ledger.items()} == {f"s{i}": 1 for i in range(5)}, tid


async def test_runs_of_a_killed_worker_are_taken_over_and_finish_once(
    cluster: Cluster, client: LangGraphClient, redis_client: aredis.Redis
) -> None:
    runs = await _submit(client, 6)
    await asyncio.sleep(0.8)  # a few steps in
    cluster.workers[0].kill()
    results = await _settle(client, runs)
    assert all(r["n"] == 5 and r["done"] == [f"s{i}" for i in range(5)] for r in results), results
    statuses = [(await client.runs.get(t, r))["status"] for t, r in runs]
    assert statuses == ["success"] * len(runs)
    await _check_ledgers(redis_client, cluster.prefix, runs)
    epochs = [int(await redis_client.hget(f"{cluster.prefix}run:{{{t}}}:{r}", "epoch")) for t, r in runs]
    assert max(epochs) >= 2, f"no run was taken over (epochs {epochs}): the kill found no run in flight"
    threads = [await client.threads.get(t) for t, _ in runs]
    assert {t["status"] for t in threads} == {"idle"}


async def test_a_paused_worker_cannot_write_after_its_lease_is_taken(
    cluster: Cluster, client: LangGraphClient, redis_client: aredis.Redis
) -> None:
    runs = await _submit(client, 4)
    await asyncio.sleep(0.5)
    zombie = cluster.workers[0]
    zombie.send(signal.SIGSTOP)
    results = await _settle(client, runs)  # the other worker finishes them while it sleeps
    zombie.send(signal.SIGCONT)
    await asyncio.sleep(2)  # let the zombie try to write
    assert all(r["n"] == 5 for r in results)
    await _check_ledgers(redis_client, cluster.prefix, runs)
    for t, r in runs:
        assert (await client.runs.get(t, r))["status"] == "success"
        state = await client.threads.get_state(t)
        assert state["values"]["n"] == 5 and state["next"] == []
    log = zombie.log_path.read_text()
    if "takes over" in cluster.workers[1].log_path.read_text():
        assert "lost ownership" in log or "FencedOut" in log


async def test_graceful_shutdown_hands_runs_back(
    cluster: Cluster, client: LangGraphClient, redis_client: aredis.Redis
) -> None:
    runs = await _submit(client, 4)
    await asyncio.sleep(0.5)
    cluster.workers[0].stop()  # SIGTERM, grace 0: hand back at once
    results = await _settle(client, runs)
    assert all(r["n"] == 5 for r in results)
    await _check_ledgers(redis_client, cluster.prefix, runs)
