"""Stateless runs (``/runs``, ``/runs/wait``, ``/runs/stream``): a thread of their own,
deleted afterwards unless ``on_completion="keep"``."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient

from tests.service import ServiceProcess

INPUT = {"ticket": "technical: the app crashes", "customer_id": "c-001"}


async def _gone(service: ServiceProcess, thread_id: str) -> bool:
    async with httpx.AsyncClient(base_url=service.url, headers={"x-api-key": service.api_key}) as http:
        for _ in range(100):  # the cleanup follows the run's end within milliseconds
            if (await http.get(f"/threads/{thread_id}")).status_code == 404:
                return True
            await asyncio.sleep(0.05)
    return False


async def test_wait_returns_the_final_values(client: LangGraphClient) -> None:
    before = await client.threads.count()
    result = await client.runs.wait(None, "support_triage", input=INPUT)
    assert isinstance(result, dict)
    assert result["route"] == "technical"
    assert await client.threads.count() == before


async def test_stream_sends_events(client: LangGraphClient) -> None:
    events = [
        p.event async for p in client.runs.stream(None, "support_triage", input=INPUT, stream_mode="updates")
    ]
    assert events[0] == "metadata"
    assert events.count("updates") >= 4


async def test_background_run_deletes_its_thread_when_done(
    client: LangGraphClient, service: ServiceProcess
) -> None:
    run = await client.runs.create(None, "support_triage", input=INPUT)
    assert run["status"] == "pending"
    assert await _gone(service, run["thread_id"])


@pytest.mark.parametrize("mode", ["create", "wait"])
async def test_keep_keeps_the_thread(client: LangGraphClient, service: ServiceProcess, mode: str) -> None:
    if mode == "create":
        run = await client.runs.create(None, "support_triage", input=INPUT, on_completion="keep")
        final = await client.runs.join(run["thread_id"], run["run_id"])
        assert final["route"] == "technical"
        thread = await client.threads.get(run["thread_id"])
        assert thread["status"] == "idle"
    else:
        before = await client.threads.count()
        await client.runs.wait(None, "support_triage", input=INPUT, on_completion="keep")
        assert await client.threads.count() == before + 1


async def test_batch_creates_every_run(client: LangGraphClient) -> None:
    runs = await client.runs.create_batch(
        [{"assistant_id": "support_triage", "input": INPUT, "on_completion": "keep"} for _ in range(3)]
    )
    assert len(runs) == 3 and len({r["thread_id"] for r in runs}) == 3
    finals = [await client.runs.join(r["thread_id"], r["run_id"]) for r in runs]
    assert all(f["route"] == "technical" for f in finals)


async def test_a_bad_run_refuses_the_whole_batch(service: ServiceProcess) -> None:
    before_body = {"assistant_id": "support_triage", "input": INPUT}
    async with httpx.AsyncClient(base_url=service.url, headers={"x-api-key": service.api_key}) as http:
        count = (await http.post("/threads/count", json={})).json()
        r = await http.post("/runs/batch", json=[before_body, {"assistant_id": "nope", "input": {}}])
        assert r.status_code == 404 and "runs[1]" in r.json()["detail"]
        assert (await http.post("/threads/count", json={})).json() == count
        empty = await http.post("/runs/batch", json=[])
        assert empty.status_code == 422
