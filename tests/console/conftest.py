"""One real service for the console tests (route-level and browser): tenant ``acme``
with a key per role and a ``legal`` group, tenant ``globex``, and graphs with approval
steps (``contract``: two parallel approvals; ``reviewed``: an LLM decision a person
reviews; ``purchase``: one approval with a deadline)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.fakes.openai_server import FakeOpenAI, start_fake_openai
from tests.service import ServiceProcess

HERE = Path(__file__).parent
API = HERE.parent / "api"
KEYS: dict[str, dict[str, Any]] = {
    "admin": {"key": "acme-admin-console-00000001", "roles": ["admin"], "name": "ada"},
    "approver": {"key": "acme-approver-console-00001", "roles": ["approver"], "name": "ann"},
    "legal": {
        "key": "acme-legal-console-00000001",
        "roles": ["approver"],
        "groups": ["legal"],
        "name": "lee",
    },
    "viewer": {"key": "acme-viewer-console-0000001", "roles": ["viewer"], "name": "vic"},
    "operator": {"key": "acme-operator-console-00001", "roles": ["operator"], "name": "otto"},
}
GLOBEX = {"key": "globex-admin-console-000001", "tenant": "globex", "roles": ["admin"], "name": "gus"}
TRACE_UI = "http://traces.example/sessions/{thread_id}?run={run_id}"


def key_of(who: str) -> str:
    return str(GLOBEX["key"] if who == "globex" else KEYS[who]["key"])


@pytest.fixture(scope="session")
def console_llm() -> Iterator[FakeOpenAI]:
    fake = start_fake_openai()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def console_service(
    redis_url: str, console_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("console")
    graphs = {name: f"{API / 'approval_graphs.py'}:{name}_graph" for name in ("contract", "reviewed")}
    graphs["purchase"] = f"{HERE / 'console_graphs.py'}:purchase_graph"
    (root / "langgraph.json").write_text(json.dumps({"graphs": graphs}))
    keys = [{"tenant": "acme", **k} for k in KEYS.values()] + [GLOBEX]
    proc = ServiceProcess(
        {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
            "INTERLOCK_LLM_BASE_URL": console_llm.base_url,
            "INTERLOCK_NEAREST_EXAMPLES": "false",
            "INTERLOCK_DATA_DIR": str(root / "data"),
            "INTERLOCK_CONFIG": str(root / "langgraph.json"),
            "INTERLOCK_API_KEYS": json.dumps(keys),
            "INTERLOCK_TRACE_UI_URL": TRACE_UI,
        },
        root / "service.log",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def sdk(console_service: ServiceProcess) -> AsyncIterator[LangGraphClient]:
    async with get_client(url=console_service.url, api_key=key_of("operator")) as client:
        yield client


async def start_paused(sdk: LangGraphClient, graph: str, value: dict[str, Any]) -> tuple[str, str]:
    """Start ``graph`` on a new thread until it pauses; returns ``(thread_id, run_id)``."""
    thread = await sdk.threads.create()
    run = await sdk.runs.create(thread["thread_id"], graph, input=value)
    result = await sdk.runs.join(thread["thread_id"], run["run_id"])
    assert isinstance(result, dict) and result.get("__interrupt__"), result
    return str(thread["thread_id"]), str(run["run_id"])
