"""The real service and the real demo systems, each a process of its own on loopback, per
test module: the demo systems' settlement callbacks go to the service's trigger."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from core.redis import free_port
from tests.demo_systems import TRIGGER_SECRET, DemoSystemsProcess
from tests.fakes.openai_server import FakeOpenAI, start_fake_openai
from tests.service import ServiceProcess

ORDER_SECRET = "test-order-secret-0123456789"
PING_SECRET = "test-ping-secret-01234567890"
TRIGGERS = [
    {
        "name": "payment-settled",
        "secret": TRIGGER_SECRET,
        "action": "resume",
        "event": "payment.settled",
        "correlation": "payment_id",
    },
    {
        "name": "order-created",
        "secret": ORDER_SECRET,
        "action": "start",
        "graph_id": "order_fulfillment",
        "event": "order.created",
    },
    {"name": "ping", "secret": PING_SECRET, "action": "resume", "event": "test.ping", "correlation": "key"},
]
FINAL = ("fulfilled", "cancelled", "failed")


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeOpenAI]:
    fake = start_fake_openai()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def service_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, service_port: int) -> Iterator[DemoSystemsProcess]:
    root = tmp_path_factory.mktemp("demo")
    proc = DemoSystemsProcess(
        root / "state.json",
        root / "demo.log",
        callback_url=f"http://127.0.0.1:{service_port}/triggers/payment-settled",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture(scope="module")
def service(
    redis_url: str,
    fake_llm: FakeOpenAI,
    demo: DemoSystemsProcess,
    service_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("orders")
    config = root / "langgraph.json"
    config.write_text(
        json.dumps({"graphs": {"wait_graph": f"{Path(__file__).parent / 'wait_graph.py'}:build"}})
    )
    proc = ServiceProcess(
        {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
            "INTERLOCK_LLM_BASE_URL": fake_llm.base_url,
            "INTERLOCK_LLM_TIMEOUT_S": "2",
            "INTERLOCK_NEAREST_EXAMPLES": "false",
            "INTERLOCK_DATA_DIR": str(root / "data"),
            "INTERLOCK_DEMO_SYSTEMS_URL": demo.url,
            "INTERLOCK_TRIGGERS": json.dumps(TRIGGERS),
            "INTERLOCK_CONFIG": str(config),
        },
        root / "service.log",
        port=service_port,
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def client(service: ServiceProcess) -> AsyncIterator[LangGraphClient]:
    async with get_client(url=service.url, api_key=service.api_key) as c:
        yield c


@pytest.fixture
async def http(service: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, headers={"x-api-key": service.api_key}) as c:
        yield c


@pytest.fixture(autouse=True)
def _clean_switches(demo: DemoSystemsProcess, fake_llm: FakeOpenAI) -> Iterator[None]:
    """Every test starts with no faults and settlement switched to "once, soon"."""
    demo.clear_faults()
    demo.settlement(mode="once", delay_s=0.2)
    fake_llm.reset()
    yield
    demo.clear_faults()


async def finished(client: LangGraphClient, thread_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The thread's values once the order reached a final status and the thread is idle."""
    deadline = time.monotonic() + timeout_s
    thread: Any = None
    while time.monotonic() < deadline:
        thread = await client.threads.get(thread_id)
        values = thread.get("values") or {}
        if thread["status"] in ("idle", "error") and values.get("status") in FINAL:
            return dict(values)
        if thread["status"] == "error":
            raise AssertionError(f"thread {thread_id} errored: {values}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"thread {thread_id} did not finish: {thread}")


async def waiting(
    client: LangGraphClient, thread_id: str, node: str, timeout_s: float = 20.0
) -> dict[str, Any]:
    """The thread's state once it is interrupted at ``node``."""
    deadline = time.monotonic() + timeout_s
    state: Any = None
    while time.monotonic() < deadline:
        thread = await client.threads.get(thread_id)
        if thread["status"] == "interrupted":
            state = await client.threads.get_state(thread_id)
            if node in state["next"]:
                return dict(state)
        await asyncio.sleep(0.1)
    raise AssertionError(f"thread {thread_id} is not waiting at {node}: {state}")
