"""Run administration through the SDK: state at a checkpoint object, deleting ended runs,
cancelling many runs, and rollback's protocol surface."""

from __future__ import annotations

import httpx
from langgraph_sdk.client import LangGraphClient

from tests.api.support import expect_error
from tests.fakes.openai_server import FakeOpenAI

QUESTION = {"ticket": "How do I change my delivery address?", "customer_id": "c-001"}


async def test_state_at_a_checkpoint_object(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "support_triage", input=QUESTION)
    history = await client.threads.get_history(tid, limit=20)
    oldest = history[-1]
    state = await client.threads.get_state(
        tid, checkpoint={"checkpoint_id": oldest["checkpoint"]["checkpoint_id"]}
    )
    assert state["checkpoint"]["checkpoint_id"] == oldest["checkpoint"]["checkpoint_id"]
    assert state["values"] == oldest["values"]
    missing = {"checkpoint": {"checkpoint_id": "1f0-not-a-checkpoint"}}
    expect_error(await http.post(f"/threads/{tid}/state/checkpoint", json=missing), 404)
    expect_error(await http.post(f"/threads/{tid}/state/checkpoint", json={"checkpoint": {}}), 422)


async def test_delete_an_ended_run(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "support_triage", input=QUESTION)
    run = (await client.runs.list(tid))[0]
    await client.runs.delete(tid, run["run_id"])
    assert await client.runs.list(tid) == []
    expect_error(await http.get(f"/threads/{tid}/runs/{run['run_id']}"), 404)
    expect_error(await http.delete(f"/threads/{tid}/runs/{run['run_id']}"), 404)
    # The thread's state is the thread's: it stays.
    assert (await client.threads.get_state(tid))["values"]["ticket"] == QUESTION["ticket"]


async def test_cancel_many_needs_a_target_and_cancels_queued_runs(
    client: LangGraphClient, http: httpx.AsyncClient, fake_llm: FakeOpenAI
) -> None:
    expect_error(await http.post("/runs/cancel", json={}), 422)
    expect_error(await http.post("/runs/cancel", json={"run_ids": ["x"]}), 422)
    thread = await client.threads.create()
    tid = thread["thread_id"]
    # The first run waits 1.5 s for the model's triage answer (within the service's 2 s LLM
    # timeout), so the two behind it are still queued when the cancel arrives: the run order
    # does not depend on how fast the worker is.
    fake_llm.script([{"kind": "delay", "seconds": 1.5}])
    try:
        runs = [await client.runs.create(tid, "support_triage", input=QUESTION) for _ in range(3)]
        await client.runs.cancel_many(thread_id=tid, run_ids=[r["run_id"] for r in runs[1:]])
        statuses = {r["run_id"]: r["status"] for r in await client.runs.list(tid)}
        assert statuses[runs[1]["run_id"]] == statuses[runs[2]["run_id"]] == "interrupted"
        assert statuses[runs[0]["run_id"]] in ("pending", "running")
        await client.runs.join(tid, runs[0]["run_id"])
        assert (await client.runs.get(tid, runs[0]["run_id"]))["status"] == "success"
    finally:
        fake_llm.reset()


async def test_rollback_is_accepted_everywhere_the_protocol_has_it(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    result = await client.runs.wait(tid, "support_triage", input=QUESTION, multitask_strategy="rollback")
    assert isinstance(result, dict) and result["route"]
    run = (await client.runs.list(tid))[0]
    r = await http.post(f"/threads/{tid}/runs/{run['run_id']}/cancel", params={"action": "rollback"})
    assert "already ended" in expect_error(r, 409)
    expect_error(
        await http.post(f"/threads/{tid}/runs/{run['run_id']}/cancel", params={"action": "undo"}), 422
    )


async def test_stream_mode_events_carries_callback_events_and_the_other_modes(
    client: LangGraphClient,
) -> None:
    thread = await client.threads.create()
    parts = [
        (p.event, p.data)
        async for p in client.runs.stream(
            thread["thread_id"], "support_triage", input=QUESTION, stream_mode=["events", "updates"]
        )
    ]
    names = [name for name, _ in parts]
    assert names[0] == "metadata"
    events = [data for name, data in parts if name == "events"]
    kinds = {e["event"] for e in events}
    assert {"on_chain_start", "on_chain_end"} <= kinds
    started = [e["name"] for e in events if e["event"] == "on_chain_start"]
    assert {"support_triage", "load_customer", "triage"} <= set(started), started
    updates = [data for name, data in parts if name == "updates"]
    assert updates and all(isinstance(u, dict) for u in updates)
    assert "values" not in names  # not asked for


async def test_recent_runs_across_threads_newest_first(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    made = []
    for _ in range(3):
        thread = await client.threads.create()
        await client.runs.wait(thread["thread_id"], "support_triage", input=QUESTION)
        made.append((await client.runs.list(thread["thread_id"]))[0]["run_id"])
    recent = (await http.get("/runs", params={"limit": 3})).json()
    assert [r["run_id"] for r in recent] == made[::-1]
    assert all(r["status"] == "success" for r in recent)
    assert [r["run_id"] for r in (await http.get("/runs", params={"limit": 2, "offset": 1})).json()] == made[
        1::-1
    ]


async def test_paging_bounds_are_422_not_500(http: httpx.AsyncClient) -> None:
    for path in ("/runs", "/approvals"):
        expect_error(await http.get(path, params={"offset": 10**20}), 422)
        expect_error(await http.get(path, params={"limit": 0}), 422)
    expect_error(await http.post("/threads/search", json={"offset": 10**20}), 422)
