"""Threads over the protocol: search, count, metadata, delete, copy, state updates,
history filters and prune. The real service, real Redis, the real ``langgraph-sdk``
client; ``support_triage`` runs against the fake LLM."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aredis
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from core.errors import FENCE_CONFIG_KEY, FencedOut
from graphs.registry import GraphRegistry
from runs.compile import compile_entry
from store.checkpoint import AsyncRedisSaver
from store.layout import Layout
from store.threads import ThreadAdmin
from tests.api.support import expect_error
from tests.fakes.openai_server import FakeOpenAI

REFUND_PENDING = {"ticket": "Please refund order o-10063, it broke.", "customer_id": "c-001"}
"""Pauses on an approval (refund above 50)."""
ANSWER = {"ticket": "answer me: what are your opening hours?", "customer_id": "c-001"}


async def _keys_of(redis_client: aredis.Redis, prefix: str, thread_id: str) -> list[str]:
    return sorted([k.decode() async for k in redis_client.scan_iter(match=f"{prefix}*{{{thread_id}}}*")])


async def _run(client: LangGraphClient, thread_id: str, graph_input: dict[str, Any]) -> dict[str, Any]:
    result = await client.runs.wait(thread_id, "support_triage", input=graph_input)
    assert isinstance(result, dict)
    return result


async def _busy_thread(client: LangGraphClient, fake_llm: FakeOpenAI) -> tuple[str, str]:
    """A thread whose run is still going (the model answers after a second)."""
    fake_llm.script([{"kind": "delay", "seconds": 1.0}])
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "support_triage", input=ANSWER)
    assert (await client.threads.get(thread["thread_id"]))["status"] == "busy"
    return thread["thread_id"], run["run_id"]


# --- search and count -------------------------------------------------------------------


async def test_search_and_count(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex
    a = await client.threads.create(metadata={"tag": tag, "user": "ann"})
    b = await client.threads.create(metadata={"tag": tag, "user": "bob", "nested": {"x": 1, "y": 2}})
    c = await client.threads.create(metadata={"tag": tag, "user": "ann"})
    ids = [a["thread_id"], b["thread_id"], c["thread_id"]]
    await _run(client, ids[0], ANSWER)
    await _run(client, ids[1], REFUND_PENDING)
    mine = {"tag": tag}

    assert [t["thread_id"] for t in await client.threads.search(metadata=mine)] == ids[::-1]
    oldest = await client.threads.search(metadata=mine, sort_by="created_at", sort_order="asc")
    assert [t["thread_id"] for t in oldest] == ids
    by_id = await client.threads.search(metadata=mine, sort_by="thread_id", sort_order="asc")
    assert [t["thread_id"] for t in by_id] == sorted(ids)
    recent = await client.threads.search(metadata=mine, sort_by="updated_at", sort_order="desc")
    assert recent[-1]["thread_id"] == ids[2]  # never ran: least recently updated

    anns = await client.threads.search(metadata={"tag": tag, "user": "ann"})
    assert {t["thread_id"] for t in anns} == {ids[0], ids[2]}
    # metadata filters match nested objects by containment, and the graph a thread ran
    assert [
        t["thread_id"] for t in await client.threads.search(metadata={"tag": tag, "nested": {"x": 1}})
    ] == [ids[1]]
    ran = await client.threads.search(metadata={"tag": tag, "graph_id": "support_triage"})
    assert {t["thread_id"] for t in ran} == {ids[0], ids[1]}

    interrupted = await client.threads.search(metadata=mine, status="interrupted")
    assert [t["thread_id"] for t in interrupted] == [ids[1]]
    assert interrupted[0]["interrupts"]
    assert [t["thread_id"] for t in await client.threads.search(metadata=mine, status="idle")] == [
        ids[2],
        ids[0],
    ]
    assert [
        t["thread_id"] for t in await client.threads.search(values={"route": "refund"}, metadata=mine)
    ] == [ids[1]]
    assert await client.threads.search(metadata=mine, values={"route": "no such route"}) == []

    by_ids = await client.threads.search(ids=[ids[0], ids[2], str(uuid.uuid4())])
    assert {t["thread_id"] for t in by_ids} == {ids[0], ids[2]}

    page = await client.threads.search(metadata=mine, limit=2)
    rest = await client.threads.search(metadata=mine, limit=2, offset=2)
    assert [t["thread_id"] for t in page + rest] == ids[::-1]
    raw = await http.post("/threads/search", json={"metadata": mine, "limit": 2})
    assert raw.headers["X-Pagination-Total"] == "3"
    assert raw.headers["X-Pagination-Next"] == "2"

    slim = await client.threads.search(metadata=mine, select=["thread_id", "status"], limit=1)
    assert slim == [{"thread_id": ids[2], "status": "idle"}]

    assert await client.threads.count(metadata=mine) == 3
    assert await client.threads.count(metadata=mine, status="interrupted") == 1
    assert await client.threads.count(metadata={"tag": tag, "user": "ann"}) == 2
    assert await client.threads.count(metadata=mine, values={"route": "answer"}) == 1
    everything = await http.post("/threads/search", json={"limit": 1})
    assert [t["thread_id"] for t in everything.json()] == [ids[2]]  # the newest of all
    assert int(everything.headers["X-Pagination-Total"]) == await client.threads.count() >= 3
    oldest_of_all = await client.threads.search(limit=1000, sort_order="asc")
    assert [t["thread_id"] for t in oldest_of_all][-3:] == ids

    for body, field in (
        ({"status": "sleeping"}, "status"),
        ({"sort_by": "color"}, "sort_by"),
        ({"sort_order": "up"}, "sort_order"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"metadata": "x"}, "metadata"),
        ({"ids": "x"}, "ids"),
        ({"select": ["secret"]}, "select"),
    ):
        assert field in expect_error(await http.post("/threads/search", json=body), 422)
    assert "status" in expect_error(await http.post("/threads/count", json={"status": "sleeping"}), 422)


# --- metadata ---------------------------------------------------------------------------


async def test_update_merges_metadata(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    thread = await client.threads.create(metadata={"a": 1, "b": 2})
    tid = thread["thread_id"]
    updated = await client.threads.update(tid, metadata={"b": 3, "c": {"d": 4}})
    assert updated["thread_id"] == tid
    assert updated["metadata"] == {"a": 1, "b": 3, "c": {"d": 4}}
    assert updated["updated_at"] >= thread["updated_at"]
    assert (await client.threads.get(tid))["metadata"] == {"a": 1, "b": 3, "c": {"d": 4}}
    assert await client.threads.update(tid, metadata={"e": 5}, return_minimal=True) is None
    assert (await client.threads.get(tid))["metadata"]["e"] == 5
    # After a run, the graph shows in metadata but the thread's own keys are kept as they were.
    await _run(client, tid, ANSWER)
    after = await client.threads.update(tid, metadata={"a": 0})
    assert after["metadata"] == {"a": 0, "b": 3, "c": {"d": 4}, "e": 5, "graph_id": "support_triage",
                                 "assistant_id": after["metadata"]["assistant_id"]}  # fmt: skip

    missing = str(uuid.uuid4())
    with pytest.raises(NotFoundError):
        await client.threads.update(missing, metadata={"x": 1})
    assert missing in expect_error(await http.patch(f"/threads/{missing}", json={"metadata": {}}), 404)
    assert "metadata" in expect_error(await http.patch(f"/threads/{tid}", json={"metadata": [1]}), 422)
    assert (await client.threads.get(tid))["metadata"] == after["metadata"]


async def test_concurrent_metadata_updates_all_land(client: LangGraphClient) -> None:
    tid = (await client.threads.create(metadata={"base": 0}))["thread_id"]
    await asyncio.gather(*(client.threads.update(tid, metadata={f"k{i}": i}) for i in range(12)))
    assert (await client.threads.get(tid))["metadata"] == {"base": 0, **{f"k{i}": i for i in range(12)}}


# --- delete ------------------------------------------------------------------------------


async def test_delete_removes_everything_of_the_thread(
    client: LangGraphClient, http: httpx.AsyncClient, redis_client: aredis.Redis, prefix: str
) -> None:
    thread = await client.threads.create(metadata={"doomed": True})
    tid = thread["thread_id"]
    await _run(client, tid, REFUND_PENDING)
    await client.runs.wait(tid, "support_triage", command={"resume": {"decision": "reject", "comment": "no"}})
    runs = await client.runs.list(tid)
    assert len(runs) == 2
    # A cancelled run that is still stopping leaves the fence pointing away from it.
    await redis_client.set(f"{prefix}fence:{{{tid}}}", "cancelled:some-run")
    before = await _keys_of(redis_client, prefix, tid)
    assert f"{prefix}th:{{{tid}}}" in before
    assert any(k.startswith(f"{prefix}cp:") for k in before)
    assert any(k.endswith(":ev") for k in before)

    await client.threads.delete(tid)

    assert await _keys_of(redis_client, prefix, tid) == []
    assert await redis_client.zscore(f"{prefix}threads", tid) is None
    with pytest.raises(NotFoundError):
        await client.threads.get(tid)
    for path in (f"/threads/{tid}/state", f"/threads/{tid}/history", f"/threads/{tid}/runs"):
        assert tid in expect_error(await http.get(path), 404)
    assert tid in expect_error(await http.get(f"/threads/{tid}/runs/{runs[0]['run_id']}"), 404)
    assert await client.threads.search(ids=[tid]) == []
    assert tid in expect_error(await http.delete(f"/threads/{tid}"), 404)
    # The id can be used again, from scratch.
    again = await client.threads.create(thread_id=tid)
    assert again["metadata"] == {} and again["values"] is None
    assert await client.threads.get_history(tid) == []


async def test_a_busy_thread_cannot_be_deleted_or_updated(
    client: LangGraphClient,
    http: httpx.AsyncClient,
    fake_llm: FakeOpenAI,
    redis_client: aredis.Redis,
    prefix: str,
) -> None:
    tid, run_id = await _busy_thread(client, fake_llm)
    try:
        keys = await _keys_of(redis_client, prefix, tid)
        detail = expect_error(await http.delete(f"/threads/{tid}"), 409)
        assert run_id in detail
        with pytest.raises(ConflictError):
            await client.threads.delete(tid)
        r = await http.post(f"/threads/{tid}/state", json={"values": {"ticket": "changed"}})
        assert "active run" in expect_error(r, 409)
        assert (await client.threads.prune([tid]))["pruned_count"] == 0
        assert set(keys) <= set(await _keys_of(redis_client, prefix, tid))
    finally:
        await client.runs.join(tid, run_id)
        fake_llm.reset()
    state = await client.threads.get_state(tid)
    assert state["values"]["ticket"] == ANSWER["ticket"]
    await client.threads.delete(tid)  # idle now
    with pytest.raises(NotFoundError):
        await client.threads.get(tid)


# --- copy ---------------------------------------------------------------------------------


async def test_copy_forks_an_interrupted_thread(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    thread = await client.threads.create(metadata={"owner": "ann"})
    tid = thread["thread_id"]
    await _run(client, tid, REFUND_PENDING)
    source_history = await client.threads.get_history(tid, limit=100)

    copied = await http.post(f"/threads/{tid}/copy")
    assert copied.status_code == 200, copied.text
    copy = copied.json()
    cid = copy["thread_id"]
    assert cid != tid and uuid.UUID(cid)
    assert copy["metadata"] == (await client.threads.get(tid))["metadata"]
    assert copy["status"] == "interrupted"
    assert copy["values"] == (await client.threads.get(tid))["values"]
    assert await client.threads.get(cid) == copy
    copy_history = await client.threads.get_history(cid, limit=100)
    assert [s["checkpoint"]["checkpoint_id"] for s in copy_history] == [
        s["checkpoint"]["checkpoint_id"] for s in source_history
    ]
    assert all(s["checkpoint"]["thread_id"] == cid for s in copy_history)
    assert await client.runs.list(cid) == []  # runs stay with their thread

    # The two diverge: approve on the copy, reject on the original.
    approved = await client.runs.wait(cid, "support_triage", command={"resume": {"decision": "approve"}})
    rejected = await client.runs.wait(tid, "support_triage", command={"resume": {"decision": "reject"}})
    assert isinstance(approved, dict) and isinstance(rejected, dict)
    assert approved["refund"]["status"] == "issued"
    assert rejected["refund"]["status"] != "issued"
    assert (await client.threads.get(cid))["status"] == "idle"

    # Through the SDK (typed as returning None, it hands back the body: the new thread),
    # on a thread that never ran.
    fresh = await client.threads.create(metadata={"k": "v"})
    fresh_copy: Any = await client.threads.copy(fresh["thread_id"])
    assert fresh_copy["thread_id"] != fresh["thread_id"]
    assert (fresh_copy["metadata"], fresh_copy["status"], fresh_copy["values"]) == ({"k": "v"}, "idle", None)
    assert await client.threads.get_history(fresh_copy["thread_id"]) == []

    missing = str(uuid.uuid4())
    before = await client.threads.count()
    assert missing in expect_error(await http.post(f"/threads/{missing}/copy"), 404)
    assert await client.threads.count() == before


# --- state updates --------------------------------------------------------------------------


async def test_update_state_writes_a_checkpoint(
    client: LangGraphClient, redis_client: aredis.Redis, prefix: str
) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await _run(client, tid, ANSWER)
    before = await client.threads.get_state(tid)

    written = await client.threads.update_state(tid, {"resolution": "edited by a person"})
    checkpoint = written["checkpoint"]
    assert checkpoint["thread_id"] == tid
    assert checkpoint["checkpoint_ns"] == ""
    state = await client.threads.get_state(tid)
    assert state["checkpoint"]["checkpoint_id"] == checkpoint["checkpoint_id"]
    assert state["parent_checkpoint"]["checkpoint_id"] == before["checkpoint"]["checkpoint_id"]
    assert state["values"]["resolution"] == "edited by a person"
    assert state["values"]["route"] == before["values"]["route"]
    assert await redis_client.exists(f"{prefix}fence:{{{tid}}}") == 0  # released
    thread_after = await client.threads.get(tid)
    assert thread_after["values"]["resolution"] == "edited by a person"
    assert thread_after["status"] == "idle"

    # as_node decides what runs next; a fork from an older checkpoint leaves the newer ones be.
    as_triage = await client.threads.update_state(tid, {"route": "technical"}, as_node="load_customer")
    assert (await client.threads.get_state(tid))["next"] == ["triage"]
    first = (await client.threads.get_history(tid, limit=100))[-1]
    forked = await client.threads.update_state(
        tid, {"ticket": "forked"}, checkpoint={"checkpoint_id": first["checkpoint"]["checkpoint_id"]}
    )
    forked_state = await client.threads.get_state(tid, checkpoint_id=forked["checkpoint"]["checkpoint_id"])
    assert forked_state["values"]["ticket"] == "forked"
    assert forked_state["parent_checkpoint"]["checkpoint_id"] == first["checkpoint"]["checkpoint_id"]
    assert as_triage["checkpoint"]["checkpoint_id"] != forked["checkpoint"]["checkpoint_id"]


async def test_a_run_taking_the_thread_mid_update_fences_the_update_out(
    client: LangGraphClient, redis_client: aredis.Redis, prefix: str
) -> None:
    """What the route does, with a worker claiming a run between taking the fence and
    writing: the checkpoint write fails, nothing is written, the run's fence stays."""
    thread = await client.threads.create(graph_id="support_triage")
    tid = thread["thread_id"]
    await client.threads.update_state(tid, {"ticket": "first", "customer_id": "c-001"})
    history = await client.threads.get_history(tid)
    admin = ThreadAdmin(redis_client, prefix=prefix)
    saver = AsyncRedisSaver(redis_client, prefix=prefix)
    graph = compile_entry(GraphRegistry.load(None).get("support_triage"), saver)
    fence = Layout(prefix).fence(tid)
    try:
        async with admin.state_change(tid) as change:
            assert await redis_client.get(fence) == change.token.encode()
            await redis_client.set(fence, "some-run:1")  # a worker claimed a run meanwhile
            config: Any = {"configurable": {"thread_id": tid, FENCE_CONFIG_KEY: change.fence}}
            with pytest.raises(FencedOut):
                await graph.aupdate_state(config, {"ticket": "second"})
            recorded = await admin.record_state(
                change, graph_id="support_triage", status="idle", values={"ticket": "second"}, interrupts={}
            )
            assert recorded is False
        assert await redis_client.get(fence) == b"some-run:1"  # the run's fence is left alone
        assert await client.threads.get_history(tid) == history
        assert (await client.threads.get(tid))["values"]["ticket"] == "first"
    finally:
        await redis_client.delete(fence)
        await saver.aclose()


async def test_update_state_resolving_an_interrupt(client: LangGraphClient) -> None:
    """Answering the approval by hand: the thread is interrupted, then idle."""
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await _run(client, tid, REFUND_PENDING)
    assert (await client.threads.get(tid))["status"] == "interrupted"
    await client.threads.update_state(tid, {"approval": {"decision": "approve"}}, as_node="approval")
    after = await client.threads.get(tid)
    assert after["interrupts"] == {}
    assert after["status"] == "idle"
    assert (await client.threads.get_state(tid))["next"] == ["issue_refund"]


async def test_update_state_on_a_new_thread_uses_its_graph_metadata(client: LangGraphClient) -> None:
    thread = await client.threads.create(graph_id="support_triage")
    tid = thread["thread_id"]
    await client.threads.update_state(tid, {"ticket": "set by hand", "customer_id": "c-002"})
    state = await client.threads.get_state(tid)
    assert state["values"] == {"ticket": "set by hand", "customer_id": "c-002"}
    assert (await client.threads.get(tid))["values"] == state["values"]


async def test_bad_state_updates_write_nothing(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    no_graph = await http.post(f"/threads/{tid}/state", json={"values": {"ticket": "x"}})
    assert "no graph" in expect_error(no_graph, 409)
    await _run(client, tid, ANSWER)
    history = await client.threads.get_history(tid, limit=100)
    record = await client.threads.get(tid)

    for body, status, words in (
        ({"values": {"no_such_key": 1}}, 422, "no_such_key"),
        ({"values": {"ticket": "x"}, "as_node": "no_such_node"}, 422, "no_such_node"),
        ({"values": [{"ticket": "x"}]}, 422, "refused"),
        ({"values": {"ticket": "x"}, "checkpoint_id": str(uuid.uuid4())}, 404, "checkpoint"),
        ({"values": {"ticket": "x"}, "checkpoint": {"checkpoint_id": str(uuid.uuid4())}}, 404, "checkpoint"),
        ({"values": "text"}, 422, "values"),
        ({"values": {"ticket": "x"}, "as_node": 3}, 422, "as_node"),
        ({"values": {"ticket": "x"}, "checkpoint": {"checkpoint_ns": 5}}, 422, "checkpoint_ns"),
        ({"values": {"ticket": "x"}, "checkpoint": {"checkpoint_ns": "no|such"}}, 422, "no|such"),
    ):
        r = await http.post(f"/threads/{tid}/state", json=body)
        assert words in expect_error(r, status), body
    with pytest.raises(UnprocessableEntityError):
        await client.threads.update_state(tid, {"ticket": "x"}, as_node="no_such_node")
    missing = str(uuid.uuid4())
    with pytest.raises(NotFoundError):
        await client.threads.update_state(missing, {"ticket": "x"})
    assert await client.threads.get_history(tid, limit=100) == history
    assert await client.threads.get(tid) == record


# --- history ----------------------------------------------------------------------------------


async def test_history_filter_before_and_limit(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await _run(client, tid, ANSWER)
    await client.threads.update_state(tid, {"resolution": "edited"})
    everything = await client.threads.get_history(tid, limit=100)
    assert len(everything) >= 5
    ids = [s["checkpoint"]["checkpoint_id"] for s in everything]
    assert ids == sorted(ids, reverse=True)  # newest first

    assert [s["checkpoint"]["checkpoint_id"] for s in await client.threads.get_history(tid, limit=2)] == ids[
        :2
    ]
    older = await client.threads.get_history(tid, before=ids[1], limit=100)
    assert [s["checkpoint"]["checkpoint_id"] for s in older] == ids[2:]
    older_by_checkpoint = await client.threads.get_history(
        tid, before={"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": ids[1], "checkpoint_map": None}
    )
    assert [s["checkpoint"]["checkpoint_id"] for s in older_by_checkpoint] == ids[2:][:10]

    updates = await client.threads.get_history(tid, metadata={"source": "update"}, limit=100)
    assert [s["checkpoint"]["checkpoint_id"] for s in updates] == [ids[0]]
    inputs = await client.threads.get_history(tid, metadata={"source": "input"}, limit=100)
    assert [s["checkpoint"]["checkpoint_id"] for s in inputs] == [ids[-1]]
    steps = await client.threads.get_history(tid, metadata={"step": 1}, limit=100)
    assert [s["metadata"]["step"] for s in steps] == [1]
    assert await client.threads.get_history(tid, metadata={"source": "nothing"}) == []

    assert "limit" in expect_error(await http.post(f"/threads/{tid}/history", json={"limit": 0}), 422)
    assert "before" in expect_error(
        await http.post(f"/threads/{tid}/history", json={"before": {"x": 1}}), 422
    )
    r = await http.post(f"/threads/{tid}/history", json={"before": {"checkpoint_id": 5}})
    assert "before" in expect_error(r, 422)
    r = await http.post(f"/threads/{tid}/history", json={"checkpoint": {"checkpoint_id": 5}})
    assert "checkpoint_id" in expect_error(r, 422)


# --- prune ------------------------------------------------------------------------------------


async def test_prune(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    kept = await client.threads.create()
    gone = await client.threads.create()
    for t in (kept, gone):
        await _run(client, t["thread_id"], ANSWER)
    latest = await client.threads.get_state(kept["thread_id"])
    assert len(await client.threads.get_history(kept["thread_id"], limit=100)) > 1

    result = await client.threads.prune([kept["thread_id"]], strategy="keep_latest")
    assert result == {"pruned_count": 1}
    history = await client.threads.get_history(kept["thread_id"], limit=100)
    assert [s["checkpoint"]["checkpoint_id"] for s in history] == [latest["checkpoint"]["checkpoint_id"]]
    assert (await client.threads.get_state(kept["thread_id"]))["values"] == latest["values"]

    missing = str(uuid.uuid4())
    result = await client.threads.prune([gone["thread_id"], missing])
    assert result == {"pruned_count": 1}
    with pytest.raises(NotFoundError):
        await client.threads.get(gone["thread_id"])
    assert (await client.threads.get(kept["thread_id"]))["thread_id"] == kept["thread_id"]

    assert "thread_ids" in expect_error(await http.post("/threads/prune", json={"thread_ids": []}), 422)
    assert "thread_ids" in expect_error(await http.post("/threads/prune", json={}), 422)
    r = await http.post("/threads/prune", json={"thread_ids": [kept["thread_id"]], "strategy": "all"})
    assert "strategy" in expect_error(r, 422)
    assert (await client.threads.get(kept["thread_id"]))["thread_id"] == kept["thread_id"]
