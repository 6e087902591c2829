"""Bad input gets a clear JSON error with the right status, and changes nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient
from pydantic import TypeAdapter

from tests.api.support import expect_error


async def test_ok_and_info(http: httpx.AsyncClient) -> None:
    assert (await http.get("/ok")).json() == {"ok": True}
    info = (await http.get("/info")).json()
    assert "support_triage" in info["graphs"]


async def test_unknown_assistant_is_404_and_creates_no_run(
    http: httpx.AsyncClient, client: LangGraphClient
) -> None:
    thread = await client.threads.create()
    r = await http.post(
        f"/threads/{thread['thread_id']}/runs/wait",
        json={"assistant_id": "no_such_graph", "input": {"ticket": "x", "customer_id": "c-001"}},
    )
    assert "no_such_graph" in expect_error(r, 404)
    assert await client.runs.list(thread["thread_id"]) == []


async def test_unknown_thread_is_404(http: httpx.AsyncClient) -> None:
    missing = str(uuid.uuid4())
    for response in (
        await http.get(f"/threads/{missing}"),
        await http.get(f"/threads/{missing}/state"),
        await http.get(f"/threads/{missing}/history"),
        await http.post(
            f"/threads/{missing}/runs/wait",
            json={"assistant_id": "support_triage", "input": {"ticket": "x", "customer_id": "c-001"}},
        ),
    ):
        assert missing in expect_error(response, 404)


async def test_run_on_missing_thread_with_if_not_exists_create(client: LangGraphClient) -> None:
    tid = str(uuid.uuid4())
    result = await client.runs.wait(
        tid,
        "support_triage",
        input={"ticket": "refund o-10028", "customer_id": "c-001"},
        if_not_exists="create",
    )
    assert isinstance(result, dict)
    assert result["refund"]["status"] == "issued"
    assert (await client.threads.get(tid))["metadata"]["graph_id"] == "support_triage"


async def test_malformed_bodies_are_422(http: httpx.AsyncClient, client: LangGraphClient) -> None:
    thread = await client.threads.create()
    url = f"/threads/{thread['thread_id']}/runs/wait"
    broken = await http.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert "not valid JSON" in expect_error(broken, 422)
    missing_field = await http.post(url, json={"assistant_id": "support_triage", "input": {"ticket": "x"}})
    assert "customer_id" in expect_error(missing_field, 422)
    wrong_type = await http.post(
        url, json={"assistant_id": "support_triage", "input": {"ticket": 5, "customer_id": "c"}}
    )
    assert "ticket" in expect_error(wrong_type, 422)
    both = await http.post(
        url,
        json={
            "assistant_id": "support_triage",
            "input": {"ticket": "x", "customer_id": "c"},
            "command": {"resume": 1},
        },
    )
    assert "either" in expect_error(both, 422)
    neither = await http.post(url, json={"assistant_id": "support_triage"})
    assert "input" in expect_error(neither, 422)
    bad_mode = await http.post(
        url,
        json={
            "assistant_id": "support_triage",
            "input": {"ticket": "x", "customer_id": "c"},
            "stream_mode": "nope",
        },
    )
    assert "stream_mode" in expect_error(bad_mode, 422)
    assert await client.runs.list(thread["thread_id"]) == []
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"


async def test_resume_with_nothing_pending_is_409(http: httpx.AsyncClient, client: LangGraphClient) -> None:
    thread = await client.threads.create()
    r = await http.post(
        f"/threads/{thread['thread_id']}/runs/wait",
        json={"assistant_id": "support_triage", "command": {"resume": {"decision": "approve"}}},
    )
    assert "no pending interrupt" in expect_error(r, 409)
    assert await client.runs.list(thread["thread_id"]) == []


async def test_resume_of_an_unknown_interrupt_id_is_409(
    http: httpx.AsyncClient, client: LangGraphClient
) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    first = await client.runs.wait(
        tid, "support_triage", input={"ticket": "refund o-10063", "customer_id": "c-001"}
    )
    assert isinstance(first, dict)
    pending_id = first["__interrupt__"][0]["id"]
    r = await http.post(
        f"/threads/{tid}/runs/wait",
        json={
            "assistant_id": "support_triage",
            "command": {"resume": {pending_id: {"decision": "approve"}, "0" * 32: {"decision": "approve"}}},
        },
    )
    assert "0" * 32 in expect_error(r, 409)
    assert len(await client.runs.list(tid)) == 1
    # The right id, as a map, resumes it.
    final = await client.runs.wait(
        tid, "support_triage", command={"resume": {pending_id: {"decision": "approve"}}}
    )
    assert isinstance(final, dict)
    assert final["refund"]["status"] == "issued"


async def test_thread_create_conflict_and_bad_id(http: httpx.AsyncClient) -> None:
    tid = str(uuid.uuid4())
    assert (await http.post("/threads", json={"thread_id": tid})).status_code == 200
    assert tid in expect_error(await http.post("/threads", json={"thread_id": tid}), 409)
    same = await http.post("/threads", json={"thread_id": tid, "if_exists": "do_nothing"})
    assert same.status_code == 200 and same.json()["thread_id"] == tid
    assert "UUID" in expect_error(await http.post("/threads", json={"thread_id": "not-a-uuid"}), 422)


async def test_oversized_body_is_413(http: httpx.AsyncClient, client: LangGraphClient) -> None:
    thread = await client.threads.create()
    big = {"assistant_id": "support_triage", "input": {"ticket": "x" * 2_000_000, "customer_id": "c-001"}}
    r = await http.post(f"/threads/{thread['thread_id']}/runs/wait", json=big)
    assert "larger than" in expect_error(r, 413)
    assert await client.runs.list(thread["thread_id"]) == []


async def test_unknown_checkpoint_is_404(http: httpx.AsyncClient, client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "support_triage", input={"ticket": "refund o-10028", "customer_id": "c-001"})
    r = await http.get(f"/threads/{tid}/state/{uuid.uuid4()}")
    expect_error(r, 404)


async def test_empty_resume_object_is_422(http: httpx.AsyncClient, client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "support_triage", input={"ticket": "refund o-10063", "customer_id": "c-001"})
    r = await http.post(
        f"/threads/{tid}/runs/wait", json={"assistant_id": "support_triage", "command": {"resume": {}}}
    )
    assert "empty object" in expect_error(r, 422)
    assert len(await client.runs.list(tid)) == 1


async def test_unknown_decision_is_404(http: httpx.AsyncClient) -> None:
    expect_error(await http.get("/decisions/1-0"), 404)
    expect_error(await http.get("/decisions/0-20000000000000000000"), 404)  # beyond 64 bits


async def test_stream_ids_beyond_64_bits_are_422(http: httpx.AsyncClient, client: LangGraphClient) -> None:
    """20 digits fit the pattern but not Redis's 64 bits (found by the fuzz test: the audit
    export's stream broke off after its headers)."""
    huge = "0-20000000000000000000"
    assert "64 bits" in expect_error(await http.get("/audit/export", params={"after": huge}), 422)
    assert "64 bits" in expect_error(await http.get("/decisions", params={"before": huge}), 422)
    assert (await http.get("/audit/export", params={"after": "18446744073709551615-0"})).status_code == 200
    thread = await client.threads.create()
    run = await client.runs.wait(
        thread["thread_id"], "support_triage", input={"ticket": "Where is my order?", "customer_id": "c-001"}
    )
    assert run
    [made] = await client.runs.list(thread["thread_id"])
    path = f"/threads/{thread['thread_id']}/runs/{made['run_id']}/stream"
    for bad in (huge, "not-an-id"):
        assert "Last-Event-ID" in expect_error(await http.get(path, headers={"Last-Event-ID": bad}), 422)


async def test_cancel_errors(http: httpx.AsyncClient, client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "support_triage", input={"ticket": "refund o-10028", "customer_id": "c-001"})
    [run] = await client.runs.list(tid)
    done = await http.post(f"/threads/{tid}/runs/{run['run_id']}/cancel")
    assert "already ended" in expect_error(done, 409)
    missing = str(uuid.uuid4())
    assert missing in expect_error(await http.post(f"/threads/{tid}/runs/{missing}/cancel"), 404)
    rollback = await http.post(f"/threads/{tid}/runs/{run['run_id']}/cancel", params={"action": "rollback"})
    assert "already ended" in expect_error(rollback, 409)
    undo = await http.post(f"/threads/{tid}/runs/{run['run_id']}/cancel", params={"action": "undo"})
    expect_error(undo, 422)
    body = {"assistant_id": "support_triage", "input": {"ticket": "x", "customer_id": "c-001"}}
    strategy = await http.post(f"/threads/{tid}/runs", json={**body, "multitask_strategy": "sometimes"})
    expect_error(strategy, 422)
    assert len(await client.runs.list(tid)) == 1


async def test_text_that_is_not_unicode_is_422_and_writes_nothing(http: httpx.AsyncClient) -> None:
    body = b'{"metadata": {"name": "\\ud800"}}'
    r = await http.post("/threads", content=body, headers={"content-type": "application/json"})
    assert "surrogate" in expect_error(r, 422)


async def test_an_integer_beyond_64_bits_is_422_and_writes_nothing(http: httpx.AsyncClient) -> None:
    """JSON numbers have no size; the stored JSON (orjson) holds 64 bits (found by the fuzz test)."""
    before = (await http.post("/threads/count", json={})).json()
    body = b'{"metadata": {"n": -248062167430724911104}}'
    r = await http.post("/threads", content=body, headers={"content-type": "application/json"})
    assert "64-bit" in expect_error(r, 422)
    assert (await http.post("/threads/count", json={})).json() == before


def test_an_input_schema_pydantic_cannot_build_is_tried_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph whose input schema pydantic cannot turn into a validator (here a plain
    class; on Python < 3.12 also a ``typing.TypedDict``) is left to the graph to judge,
    and the failed attempt is not repeated on every request."""
    from api.routes import runs

    class Opaque:
        pass

    built: list[object] = []

    def counting(schema: object) -> TypeAdapter[object]:
        built.append(schema)
        return TypeAdapter(schema)

    monkeypatch.setattr(runs, "TypeAdapter", counting)
    assert runs._input_adapter("opaque", Opaque) is None
    assert runs._input_adapter("opaque", Opaque) is None
    assert built == [Opaque]
    adapter = runs._input_adapter("checked", dict[str, int])
    assert adapter is not None and runs._input_adapter("checked", dict[str, int]) is adapter
    assert built == [Opaque, dict[str, int]]
