"""No webhook is lost when the process delivering it dies: an API process and a worker
process on one real Redis; the worker is SIGKILLed while one delivery is in flight (its
receiver hangs) and another waits for a retry (its receiver is down). A worker started
afterwards delivers both, under the same delivery ids."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client

from runs.webhooks import verify_signature
from tests.fakes.webhook_receiver import Received, WebhookReceiver
from tests.service import ServiceProcess

HERE = Path(__file__).parent
SECRET = "whsec_durability_test_secret"


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 45) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        if result := await check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(0.05)


@pytest.fixture
def receivers() -> Iterator[tuple[WebhookReceiver, WebhookReceiver]]:
    hanging, down = WebhookReceiver().start(), WebhookReceiver()
    try:
        yield hanging, down
    finally:
        hanging.stop()
        down.stop()


async def test_deliveries_of_a_killed_process_are_delivered_by_another(
    redis_url: str, tmp_path: Path, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    hanging, down = receivers
    hanging.script("/slow", [{"delay": 30}])  # the first attempt never gets its answer
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps({"graphs": {"hooks": str(HERE / "webhook_graph.py") + ":graph"}}))
    env = {
        "REDIS_URL": redis_url,
        "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
        "INTERLOCK_CONFIG": str(config),
        "INTERLOCK_LOCAL_LLM": "false",
        "INTERLOCK_DATA_DIR": str(tmp_path / "data"),
        "INTERLOCK_LEASE_MS": "1500",
        "INTERLOCK_SHUTDOWN_GRACE_S": "0",
        "INTERLOCK_WEBHOOK_SECRET": SECRET,
        # A hung attempt is taken over after max(lease, timeout + 1 s) = 4 s.
        "INTERLOCK_WEBHOOK_TIMEOUT_S": "3",
        "INTERLOCK_WEBHOOK_RETRY_BASE_S": "0.2",
        "INTERLOCK_WEBHOOK_RETRY_MAX_S": "0.5",
        "INTERLOCK_WEBHOOK_MAX_ATTEMPTS": "1000",
    }
    api = ServiceProcess({**env, "INTERLOCK_WORKERS": "0"}, tmp_path / "api.log")
    first = ServiceProcess(env, tmp_path / "worker1.log", command="worker")
    second = ServiceProcess(env, tmp_path / "worker2.log", command="worker")
    try:
        api.start()
        first.start()
        async with get_client(url=api.url, api_key=api.api_key) as client:
            t1, t2 = (
                (await client.threads.create())["thread_id"],
                (await client.threads.create())["thread_id"],
            )
            slow = await client.runs.create(t1, "hooks", input={"n": 1}, webhook=hanging.url + "/slow")
            refused = await client.runs.create(t2, "hooks", input={"n": 5}, webhook=down.url + "/down")

            async def delivery(tid: str, rid: str, status: str) -> dict[str, Any] | None:
                record: Any = await client.runs.get(tid, rid)
                found: dict[str, Any] | None = record.get("webhook_delivery")
                return found if found and found["status"] == status else None

            async def in_flight() -> bool:
                return hanging.arrived("/slow") == 1

            await until(in_flight)
            retrying = await until(lambda: delivery(t2, refused["run_id"], "retrying"))
            assert "ConnectError" in retrying["last_error"]
            first.kill()
            down.start()
            second.start()
            for tid, run in ((t1, slow), (t2, refused)):
                done = await until(lambda tid=tid, run=run: delivery(tid, run["run_id"], "delivered"))
                assert done["last_error"] is None
            assert "taken over" in second.log_path.read_text()
            assert hanging.arrived("/slow") == 2  # the hung attempt and the one that answered

        def answered(receiver: WebhookReceiver, path: str) -> Received:
            [request] = [r for r in receiver.received(path) if r.status == 200]
            return request

        for receiver, path, run, n in ((hanging, "/slow", slow, 2), (down, "/down", refused, 6)):
            request = answered(receiver, path)
            assert request.headers["x-interlock-delivery"] == run["run_id"]
            assert verify_signature(SECRET, request.headers["x-interlock-signature"], request.body)
            assert request.json()["values"] == {"n": n} and request.json()["status"] == "success"
    finally:
        for p in (second, first, api):
            p.stop()
