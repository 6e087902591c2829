"""Assistants over the protocol: the per-graph defaults, stored and versioned assistants,
and the graph behind each (drawing, schemas, subgraphs). The real service, the real
``langgraph-sdk`` client; this module's service also runs a user graph with a subgraph
and a context schema (``greeter``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aredis
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from core.ids import default_assistant_id
from graphs.registry import BUILTIN_GRAPHS
from tests.api.support import expect_error
from tests.fakes.openai_server import FakeOpenAI
from tests.service import ServiceProcess

GREETER = '''
"""START -> greet -> loud (a subgraph: shout) -> END."""

from dataclasses import dataclass

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict


@dataclass
class Greeting:
    greeting: str = "hello"
    punctuation: str = "."


class State(TypedDict, total=False):
    name: str
    text: str


def shout(state: State) -> State:
    return {"text": state.get("text", "").upper()}


def greet(state: State, runtime: Runtime[Greeting]) -> State:
    return {"text": f"{runtime.context.greeting} {state['name']}{runtime.context.punctuation}"}


inner = StateGraph(State)
inner.add_node("shout", shout)
inner.add_edge(START, "shout")
inner.add_edge("shout", END)

graph = StateGraph(State, context_schema=Greeting)
graph.add_node("greet", greet)
graph.add_node("loud", inner.compile())
graph.add_edge(START, "greet")
graph.add_edge("greet", "loud")
graph.add_edge("loud", END)
'''


@pytest.fixture(scope="module")
def service(
    redis_url: str, fake_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The service with ``support_triage`` and the ``greeter`` user graph."""
    root = tmp_path_factory.mktemp("assistants")
    (root / "greeter.py").write_text(GREETER)
    (root / "langgraph.json").write_text(json.dumps({"graphs": {"greeter": "./greeter.py:graph"}}))
    proc = ServiceProcess(
        {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
            "INTERLOCK_LLM_BASE_URL": fake_llm.base_url,
            "INTERLOCK_LLM_TIMEOUT_S": "2",
            "INTERLOCK_DATA_DIR": str(root / "data"),
            "INTERLOCK_CONFIG": str(root / "langgraph.json"),
        },
        Path(root / "service.log"),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def _stored_keys(redis_client: aredis.Redis, prefix: str) -> list[bytes]:
    return sorted([k async for k in redis_client.scan_iter(match=f"{prefix}asst*")])


TRIAGE_DEFAULT = default_assistant_id("support_triage")


# --- the defaults ----------------------------------------------------------------------


async def test_default_assistants_by_graph_id_and_uuid5(client: LangGraphClient) -> None:
    by_graph = await client.assistants.get("support_triage")
    by_id = await client.assistants.get(TRIAGE_DEFAULT)
    assert by_graph == by_id
    assert by_id["assistant_id"] == TRIAGE_DEFAULT
    assert by_id["graph_id"] == "support_triage"
    assert by_id["version"] == 1
    assert by_id["metadata"] == {"created_by": "system"}
    versions = await client.assistants.get_versions(TRIAGE_DEFAULT)
    assert [v["version"] for v in versions] == [1]
    assert (await client.assistants.set_latest(TRIAGE_DEFAULT, 1))["assistant_id"] == TRIAGE_DEFAULT
    defaults = await client.assistants.search(
        metadata={"created_by": "system"}, sort_by="graph_id", sort_order="asc"
    )
    assert [a["graph_id"] for a in defaults] == sorted({"greeter", *BUILTIN_GRAPHS})


async def test_defaults_cannot_be_changed_or_deleted(
    client: LangGraphClient, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ConflictError):
        await client.assistants.delete(TRIAGE_DEFAULT)
    assert "default assistant" in expect_error(await http.delete(f"/assistants/{TRIAGE_DEFAULT}"), 409)
    assert "default assistant" in expect_error(await http.delete("/assistants/support_triage"), 409)
    r = await http.patch(f"/assistants/{TRIAGE_DEFAULT}", json={"metadata": {"x": 1}})
    assert "default assistant" in expect_error(r, 409)
    with pytest.raises(NotFoundError):
        await client.assistants.set_latest(TRIAGE_DEFAULT, 2)
    assert (await client.assistants.get(TRIAGE_DEFAULT))["metadata"] == {"created_by": "system"}


# --- create, read, update, versions ------------------------------------------------------


async def test_create_update_and_switch_versions(client: LangGraphClient) -> None:
    created = await client.assistants.create(
        "greeter",
        config={"configurable": {"k": "v"}, "tags": ["a"]},
        context={"greeting": "hey"},
        metadata={"team": "blue", "tier": 1},
        name="Blue greeter",
        description="says hey",
    )
    aid = created["assistant_id"]
    assert uuid.UUID(aid)
    assert created["graph_id"] == "greeter"
    assert created["version"] == 1
    assert created["config"] == {"configurable": {"k": "v"}, "tags": ["a"]}
    assert created["context"] == {"greeting": "hey"}
    assert created["metadata"] == {"team": "blue", "tier": 1}
    assert (created["name"], created["description"]) == ("Blue greeter", "says hey")
    assert created["created_at"] == created["updated_at"]
    assert await client.assistants.get(aid) == created

    # Each update is a new version: fields sent replace, metadata merges.
    v2 = await client.assistants.update(aid, context={"greeting": "yo"}, metadata={"tier": 2})
    assert v2["version"] == 2
    assert v2["context"] == {"greeting": "yo"}
    assert v2["config"] == created["config"]
    assert v2["metadata"] == {"team": "blue", "tier": 2}
    assert v2["name"] == "Blue greeter"
    assert v2["created_at"] == created["created_at"]
    assert v2["updated_at"] > created["updated_at"]
    v3 = await client.assistants.update(aid, name="Loud greeter", config={"recursion_limit": 5})
    assert (v3["version"], v3["name"], v3["config"]) == (3, "Loud greeter", {"recursion_limit": 5})

    versions = await client.assistants.get_versions(aid)
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert versions[2]["context"] == {"greeting": "hey"}
    assert all(v["assistant_id"] == aid for v in versions)
    assert [v["version"] for v in await client.assistants.get_versions(aid, metadata={"tier": 2})] == [3, 2]
    assert [v["version"] for v in await client.assistants.get_versions(aid, limit=1, offset=1)] == [2]

    # Back to version 1: its fields become current; no version is written.
    back = await client.assistants.set_latest(aid, 1)
    assert back["version"] == 1
    assert (back["name"], back["context"], back["metadata"]) == (
        "Blue greeter",
        {"greeting": "hey"},
        {"team": "blue", "tier": 1},
    )
    assert await client.assistants.get(aid) == back
    assert len(await client.assistants.get_versions(aid)) == 3
    # The next update numbers after the highest version, not after the current one.
    assert (await client.assistants.update(aid, description="again"))["version"] == 4


async def test_concurrent_updates_each_get_a_version(client: LangGraphClient) -> None:
    aid = (await client.assistants.create("greeter"))["assistant_id"]
    results = await asyncio.gather(*(client.assistants.update(aid, metadata={f"k{i}": i}) for i in range(12)))
    assert sorted(r["version"] for r in results) == list(range(2, 14))
    versions = await client.assistants.get_versions(aid, limit=100)
    assert [v["version"] for v in versions] == list(range(13, 0, -1))
    # Metadata merges: the last version has every key, none lost to a race.
    assert (await client.assistants.get(aid))["metadata"] == {f"k{i}": i for i in range(12)}


async def test_create_with_an_id_and_if_exists(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    aid = str(uuid.uuid4())
    first = await client.assistants.create("support_triage", assistant_id=aid, name="first")
    assert first["assistant_id"] == aid
    assert first["name"] == "first"
    assert "already exists" in expect_error(
        await http.post("/assistants", json={"graph_id": "greeter", "assistant_id": aid, "name": "second"}),
        409,
    )
    again = await client.assistants.create("greeter", assistant_id=aid, name="second", if_exists="do_nothing")
    assert again == first
    assert await client.assistants.get(aid) == first
    unnamed = await client.assistants.create("greeter")
    assert unnamed["name"] == "Untitled"
    assert unnamed["config"] == {} and unnamed["context"] == {} and unnamed["metadata"] == {}
    # A default assistant's id is taken too.
    assert "already exists" in expect_error(
        await http.post("/assistants", json={"graph_id": "greeter", "assistant_id": TRIAGE_DEFAULT}), 409
    )
    same = await client.assistants.create("greeter", assistant_id=TRIAGE_DEFAULT, if_exists="do_nothing")
    assert same["graph_id"] == "support_triage"


async def test_bad_creates_write_nothing(
    client: LangGraphClient, http: httpx.AsyncClient, redis_client: aredis.Redis, prefix: str
) -> None:
    before_keys = await _stored_keys(redis_client, prefix)
    before = await client.assistants.count()
    r = await http.post("/assistants", json={"graph_id": "no_such_graph"})
    assert "no_such_graph" in expect_error(r, 404)
    assert "UUID" in expect_error(
        await http.post("/assistants", json={"graph_id": "greeter", "assistant_id": "x"}), 422
    )
    assert "graph_id" in expect_error(await http.post("/assistants", json={"name": "no graph"}), 422)
    r = await http.post("/assistants", json={"graph_id": "greeter", "config": {"configurable": [1]}})
    assert "configurable" in expect_error(r, 422)
    r = await http.post("/assistants", json={"graph_id": "greeter", "metadata": "not an object"})
    assert "metadata" in expect_error(r, 422)
    r = await http.post("/assistants", json={"graph_id": "greeter", "if_exists": "overwrite"})
    assert "if_exists" in expect_error(r, 422)
    assert "not valid JSON" in expect_error(
        await http.post("/assistants", content=b"{", headers={"content-type": "application/json"}), 422
    )
    with pytest.raises(NotFoundError):
        await client.assistants.create("no_such_graph")
    assert await client.assistants.count() == before
    assert await _stored_keys(redis_client, prefix) == before_keys


async def test_bad_updates_write_nothing(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    created = await client.assistants.create("greeter", metadata={"k": 1})
    aid = created["assistant_id"]
    missing = str(uuid.uuid4())
    for response in (
        await http.get(f"/assistants/{missing}"),
        await http.patch(f"/assistants/{missing}", json={"name": "x"}),
        await http.delete(f"/assistants/{missing}"),
        await http.post(f"/assistants/{missing}/versions", json={}),
        await http.post(f"/assistants/{missing}/latest", json={"version": 1}),
        await http.get(f"/assistants/{missing}/graph"),
        await http.get(f"/assistants/{missing}/schemas"),
        await http.get(f"/assistants/{missing}/subgraphs"),
    ):
        assert missing in expect_error(response, 404)
    assert "no_such_graph" in expect_error(
        await http.patch(f"/assistants/{aid}", json={"graph_id": "no_such_graph"}), 404
    )
    assert "version" in expect_error(await http.post(f"/assistants/{aid}/latest", json={"version": 7}), 404)
    assert "version" in expect_error(await http.post(f"/assistants/{aid}/latest", json={"version": 0}), 422)
    assert "version" in expect_error(await http.post(f"/assistants/{aid}/latest", json={}), 422)
    assert "metadata" in expect_error(await http.patch(f"/assistants/{aid}", json={"metadata": [1]}), 422)
    with pytest.raises(UnprocessableEntityError):
        await client.assistants.update(aid, config={"configurable": "nope"})  # type: ignore[typeddict-item]
    assert await client.assistants.get(aid) == created
    assert [v["version"] for v in await client.assistants.get_versions(aid)] == [1]


async def test_delete(
    client: LangGraphClient, http: httpx.AsyncClient, redis_client: aredis.Redis, prefix: str
) -> None:
    created = await client.assistants.create("greeter", metadata={"doomed": True})
    aid = created["assistant_id"]
    await client.assistants.update(aid, name="v2")
    assert await client.assistants.count(metadata={"doomed": True}) == 1
    await client.assistants.delete(aid)
    with pytest.raises(NotFoundError):
        await client.assistants.get(aid)
    with pytest.raises(NotFoundError):
        await client.assistants.get_versions(aid)
    assert await client.assistants.count(metadata={"doomed": True}) == 0
    assert await redis_client.exists(f"{prefix}asst:{aid}", f"{prefix}asst:{aid}:v") == 0
    assert await redis_client.zscore(f"{prefix}assistants", aid) is None
    assert aid in expect_error(await http.delete(f"/assistants/{aid}"), 404)


async def test_delete_with_its_threads(client: LangGraphClient, fake_llm: FakeOpenAI) -> None:
    assistant = await client.assistants.create("greeter")
    aid = assistant["assistant_id"]
    own = await client.threads.create(metadata={"assistant_id": aid})
    other = await client.threads.create(metadata={"assistant_id": str(uuid.uuid4())})
    # A thread of the assistant with a run still going: nothing is deleted.
    fake_llm.script([{"kind": "delay", "seconds": 1.0}])
    busy = await client.threads.create(metadata={"assistant_id": aid})
    run = await client.runs.create(
        busy["thread_id"], "support_triage", input={"ticket": "answer: hours?", "customer_id": "c-001"}
    )
    try:
        with pytest.raises(ConflictError):
            await client.assistants.delete(aid, delete_threads=True)
        assert (await client.assistants.get(aid))["assistant_id"] == aid
        assert (await client.threads.get(own["thread_id"]))["thread_id"] == own["thread_id"]
    finally:
        await client.runs.join(busy["thread_id"], run["run_id"])
        fake_llm.reset()
    await client.assistants.delete(aid, delete_threads=True)
    for gone in (own, busy):
        with pytest.raises(NotFoundError):
            await client.threads.get(gone["thread_id"])
    assert (await client.threads.get(other["thread_id"]))["thread_id"] == other["thread_id"]
    with pytest.raises(NotFoundError):
        await client.assistants.get(aid)


# --- search and count -------------------------------------------------------------------


async def test_search_and_count(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex
    made = [
        await client.assistants.create("greeter", name="Charlie Greeter", metadata={"tag": tag, "n": 1}),
        await client.assistants.create("support_triage", name="alpha triage", metadata={"tag": tag, "n": 2}),
        await client.assistants.create("greeter", name="Bravo greeter", metadata={"tag": tag, "n": 3}),
    ]
    ids = [a["assistant_id"] for a in made]
    mine = {"tag": tag}

    newest_first = await client.assistants.search(metadata=mine)
    assert [a["assistant_id"] for a in newest_first] == ids[::-1]
    oldest_first = await client.assistants.search(metadata=mine, sort_by="created_at", sort_order="asc")
    assert [a["assistant_id"] for a in oldest_first] == ids
    by_name = await client.assistants.search(metadata=mine, sort_by="name", sort_order="asc")
    assert [a["name"] for a in by_name] == ["alpha triage", "Bravo greeter", "Charlie Greeter"]

    greeters = await client.assistants.search(metadata=mine, graph_id="greeter")
    assert {a["assistant_id"] for a in greeters} == {ids[0], ids[2]}
    assert await client.assistants.count(metadata=mine, graph_id="greeter") == 2
    # name: case-insensitive substring
    named = await client.assistants.search(metadata=mine, name="GREETER")
    assert {a["assistant_id"] for a in named} == {ids[0], ids[2]}
    assert await client.assistants.count(metadata=mine, name="triage") == 1
    assert [a["assistant_id"] for a in await client.assistants.search(metadata={"tag": tag, "n": 2})] == [
        ids[1]
    ]
    assert await client.assistants.count(metadata={"tag": tag, "n": 4}) == 0
    assert await client.assistants.count(metadata=mine) == 3
    assert await client.assistants.count() >= 5  # these three and the two defaults

    page = await client.assistants.search(metadata=mine, limit=2, response_format="object")
    assert [a["assistant_id"] for a in page["assistants"]] == [ids[2], ids[1]]
    assert page["next"] == "2"
    rest = await client.assistants.search(metadata=mine, limit=2, offset=2, response_format="object")
    assert [a["assistant_id"] for a in rest["assistants"]] == [ids[0]]
    assert rest["next"] is None

    slim = await client.assistants.search(metadata=mine, select=["assistant_id", "name"], limit=1)
    assert slim == [{"assistant_id": ids[2], "name": "Bravo greeter"}]

    r = await http.post("/assistants/search", json={"sort_by": "color"})
    assert "sort_by" in expect_error(r, 422)
    assert "limit" in expect_error(await http.post("/assistants/search", json={"limit": 0}), 422)
    assert "select" in expect_error(await http.post("/assistants/search", json={"select": ["secret"]}), 422)


# --- the graph behind an assistant ------------------------------------------------------


async def test_graph_as_json_and_mermaid(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    drawn = await client.assistants.get_graph("support_triage")
    nodes = {n["id"] for n in drawn["nodes"]}
    assert {"__start__", "load_customer", "triage", "approval", "respond", "__end__"} <= nodes
    assert {"source": "__start__", "target": "load_customer"} in [
        {"source": e["source"], "target": e["target"]} for e in drawn["edges"]
    ]
    assert all("id" not in (n.get("data") or {}) for n in drawn["nodes"] if isinstance(n.get("data"), dict))
    assert any(e.get("conditional") for e in drawn["edges"])

    stored = await client.assistants.create("greeter")
    flat = await client.assistants.get_graph(stored["assistant_id"])
    assert {n["id"] for n in flat["nodes"]} == {"__start__", "greet", "loud", "__end__"}
    deep = await client.assistants.get_graph(stored["assistant_id"], xray=True)
    assert "loud:shout" in {n["id"] for n in deep["nodes"]}
    one = await http.get("/assistants/greeter/graph", params={"xray": "1"})
    assert "loud:shout" in {n["id"] for n in one.json()["nodes"]}

    mermaid = await http.get("/assistants/support_triage/graph", params={"format": "mermaid"})
    assert mermaid.status_code == 200
    assert mermaid.headers["content-type"].startswith("text/plain")
    assert "graph TD;" in mermaid.text and "load_customer --> triage;" in mermaid.text
    sub = await http.get("/assistants/greeter/graph", params={"format": "mermaid", "xray": "true"})
    assert "subgraph loud" in sub.text

    assert "xray" in expect_error(await http.get("/assistants/greeter/graph", params={"xray": "deep"}), 422)
    assert "xray" in expect_error(await http.get("/assistants/greeter/graph", params={"xray": "-1"}), 422)
    assert "format" in expect_error(
        await http.get("/assistants/greeter/graph", params={"format": "png"}), 422
    )


async def test_schemas(client: LangGraphClient) -> None:
    triage = await client.assistants.get_schemas("support_triage")
    assert triage["graph_id"] == "support_triage"
    assert triage["input_schema"] is not None
    assert set(triage["input_schema"]["required"]) == {"ticket", "customer_id"}
    assert triage["output_schema"] is not None
    assert "resolution" in triage["output_schema"]["properties"]
    assert triage["state_schema"] is not None
    assert {"ticket", "route", "decision", "refund"} <= set(triage["state_schema"]["properties"])
    # Its runtime context carries live clients: no JSON schema, not an error.
    assert triage["context_schema"] is None

    stored = await client.assistants.create("greeter")
    greeter = await client.assistants.get_schemas(stored["assistant_id"])
    assert greeter["graph_id"] == "greeter"
    assert greeter["input_schema"]["properties"].keys() == {"name", "text"}
    assert greeter["context_schema"]["properties"]["greeting"]["default"] == "hello"
    assert greeter["state_schema"]["properties"].keys() == {"name", "text"}


async def test_subgraphs(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    assert await client.assistants.get_subgraphs("support_triage") == {}
    subgraphs = await client.assistants.get_subgraphs("greeter")
    assert list(subgraphs) == ["loud"]
    assert subgraphs["loud"]["state_schema"]["properties"].keys() == {"name", "text"}
    assert set(subgraphs["loud"]) >= {"input_schema", "output_schema", "state_schema", "context_schema"}
    assert list(await client.assistants.get_subgraphs("greeter", namespace="loud", recurse=True)) == ["loud"]
    assert await client.assistants.get_subgraphs("greeter", namespace="quiet") == {}
    assert "recurse" in expect_error(
        await http.get("/assistants/greeter/subgraphs", params={"recurse": "maybe"}), 422
    )


# --- runs through a stored assistant ----------------------------------------------------


async def test_runs_start_from_the_assistant_config_and_context(client: LangGraphClient) -> None:
    assistant = await client.assistants.create("greeter", context={"greeting": "hey"})
    thread = await client.threads.create()
    tid, aid = thread["thread_id"], assistant["assistant_id"]
    first = await client.runs.wait(tid, aid, input={"name": "bo"})
    assert isinstance(first, dict)
    assert first["text"] == "HEY BO."
    # The run's own context is merged over the assistant's.
    second = await client.runs.wait(tid, aid, input={"name": "al"}, context={"punctuation": "!"})
    assert isinstance(second, dict)
    assert second["text"] == "HEY AL!"
    runs = await client.runs.list(tid)
    assert {r["assistant_id"] for r in runs} == {aid}


async def test_runs_reject_a_deleted_assistant(client: LangGraphClient, http: httpx.AsyncClient) -> None:
    assistant = await client.assistants.create("greeter")
    await client.assistants.delete(assistant["assistant_id"])
    thread = await client.threads.create()
    r = await http.post(
        f"/threads/{thread['thread_id']}/runs/wait",
        json={"assistant_id": assistant["assistant_id"], "input": {"name": "x"}},
    )
    assert assistant["assistant_id"] in expect_error(r, 404)
    assert await client.runs.list(thread["thread_id"]) == []
