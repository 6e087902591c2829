"""AsyncRedisSaver against a real Redis: key layout, round trips, fencing, real graphs."""

from __future__ import annotations

import asyncio
import contextlib
import operator
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, TypedDict

import pytest
import redis
import redis.asyncio as aredis
import redis.asyncio.connection as aconn
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.types import ERROR
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from redis.crc import key_slot

from core.errors import Conflict
from core.redis import Lua, make_client
from store.checkpoint import FENCE_CONFIG_KEY, AsyncRedisSaver, FencedOut
from store.checkpoint_lua import LOAD, WRITE
from store.keys import hash_tag


class State(TypedDict):
    text: str
    n: int


def linear_graph(nodes: int = 3) -> StateGraph[State]:
    """``START -> n0 -> … -> n{nodes-1} -> END``; each node bumps ``n``, ``text`` never changes."""
    graph = StateGraph(State)
    prev = START
    for i in range(nodes):
        graph.add_node(f"n{i}", lambda s: {"n": s["n"] + 1})
        graph.add_edge(prev, f"n{i}")
        prev = f"n{i}"
    graph.add_edge(prev, END)
    return graph


def approval_graph() -> StateGraph[State]:
    """``START -> draft -> approve (interrupts) -> publish -> END``."""

    def approve(state: State) -> dict[str, Any]:
        decision = interrupt({"question": "publish?", "text": state["text"]})
        return {"text": f"{state['text']} [{decision}]"}

    graph = StateGraph(State)
    graph.add_node("draft", lambda s: {"text": s["text"] + " drafted", "n": s["n"] + 1})
    graph.add_node("approve", approve)
    graph.add_node("publish", lambda s: {"n": s["n"] + 1})
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "approve")
    graph.add_edge("approve", "publish")
    graph.add_edge("publish", END)
    return graph


def parent_with_subgraph() -> StateGraph[State]:
    """``START -> before -> sub (a subgraph: START -> inner -> END) -> END``."""
    sub = StateGraph(State)
    sub.add_node("inner", lambda s: {"n": s["n"] + 10})
    sub.add_edge(START, "inner")
    sub.add_edge("inner", END)
    graph = StateGraph(State)
    graph.add_node("before", lambda s: {"n": s["n"] + 1})
    graph.add_node("sub", sub.compile())
    graph.add_edge(START, "before")
    graph.add_edge("before", "sub")
    graph.add_edge("sub", END)
    return graph


def thread_config(thread_id: str, **extra: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, **extra}}


def checkpoint(values: dict[str, Any], versions: dict[str, Any]) -> Checkpoint:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    return cp


@pytest.fixture
def saver(redis_client: aredis.Redis, key_prefix: str) -> AsyncRedisSaver:
    return AsyncRedisSaver(redis_client, prefix=key_prefix)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every request/response exchange on any redis-py asyncio connection, as sent."""
    sent: list[bytes] = []
    original = aconn.AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command if isinstance(command, bytes) else b"".join(command))
        await original(self, command, check_health)

    monkeypatch.setattr(aconn.AbstractConnection, "send_packed_command", counting)
    yield sent


async def keys_of(client: aredis.Redis, prefix: str) -> list[str]:
    return sorted([k.decode() async for k in client.scan_iter(match=prefix + "*", count=1000)])


async def collect(it: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in it]


async def test_every_key_of_a_thread_carries_its_hash_tag(
    saver: AsyncRedisSaver, redis_client: aredis.Redis, key_prefix: str
) -> None:
    graph = parent_with_subgraph().compile(checkpointer=saver)
    thread_id = f"t:{uuid.uuid4()}"
    out = await graph.ainvoke({"text": "x", "n": 0}, thread_config(thread_id))
    assert out["n"] == 11
    # The subgraph's checkpoints are stored too, under a child namespace of the same keys.
    namespaces = {t.config["configurable"]["checkpoint_ns"] async for t in saver.alist(None)}
    assert "" in namespaces and any(ns.startswith("sub:") for ns in namespaces)

    keys = await keys_of(redis_client, key_prefix)
    assert keys == sorted(
        f"{key_prefix}cp:{{{thread_id}}}:{suffix}" for suffix in ("b", "c", "i", "r", "w", "x")
    )
    assert {hash_tag(k) for k in keys} == {thread_id}
    assert len({key_slot(k.encode()) for k in keys}) == 1


async def test_aput_aput_writes_and_aget_tuple_are_one_round_trip_each(
    saver: AsyncRedisSaver, redis_client: aredis.Redis, round_trips: list[bytes]
) -> None:
    config = thread_config("t1", checkpoint_ns="")
    cp = checkpoint({"a": "x" * 1000, "b": 1}, {"a": "1", "b": "1"})
    stored = await saver.aput(config, cp, {"source": "input", "step": -1}, {"a": "1", "b": "1"})
    await saver.aput_writes(stored, [("a", "y")], "task-0")
    await saver.aget_tuple(stored)  # scripts are loaded now (first calls may see NOSCRIPT)
    evalsha_before = (await redis_client.info("commandstats"))["cmdstat_evalsha"]["calls"]
    round_trips.clear()

    cp2 = checkpoint({"a": "x" * 1000, "b": 2}, {"a": "1", "b": "2"})
    stored2 = await saver.aput(stored, cp2, {"source": "loop", "step": 0}, {"b": "2"})
    assert len(round_trips) == 1
    await saver.aput_writes(stored2, [("a", "z"), ("b", 3), (ERROR, "boom")], "task-1")
    assert len(round_trips) == 2
    latest = await saver.aget_tuple(thread_config("t1"))
    assert len(round_trips) == 3
    assert all(sent.startswith(b"*") and b"EVALSHA" in sent[:32] for sent in round_trips)
    evalsha_after = (await redis_client.info("commandstats"))["cmdstat_evalsha"]["calls"]
    assert evalsha_after - evalsha_before == 3

    assert latest is not None
    assert latest.checkpoint["channel_values"] == {"a": "x" * 1000, "b": 2}
    assert sorted(w[1:] for w in latest.pending_writes or []) == [
        ("__error__", "boom"),
        ("a", "z"),
        ("b", 3),
    ]


async def test_a_thread_noted_empty_is_read_once_without_a_round_trip(
    saver: AsyncRedisSaver, round_trips: list[bytes]
) -> None:
    """``note_empty`` (the worker's claim saw no checkpoint) answers the next read of the
    thread's latest root checkpoint, once; a write drops the note, so that read goes to
    Redis and sees the write."""
    cp = checkpoint({"a": "x", "b": 1}, {"a": "1", "b": "1"})
    await saver.aput(thread_config("warm", checkpoint_ns=""), cp, {"step": -1}, {"a": "1", "b": "1"})
    await saver.aget_tuple(thread_config("warm"))  # scripts loaded
    round_trips.clear()

    saver.note_empty("t-empty")
    assert await saver.aget_tuple(thread_config("t-empty", checkpoint_ns="sub:1")) is None
    assert len(round_trips) == 1  # another namespace: asked
    assert await saver.aget_tuple(thread_config("t-empty")) is None
    assert len(round_trips) == 1  # the root: answered from the note
    assert await saver.aget_tuple(thread_config("t-empty")) is None
    assert len(round_trips) == 2  # used once

    saver.note_empty("t-written")
    await saver.aput(thread_config("t-written", checkpoint_ns=""), cp, {"step": -1}, {"a": "1", "b": "1"})
    latest = await saver.aget_tuple(thread_config("t-written"))
    assert latest is not None and latest.checkpoint["channel_values"] == {"a": "x", "b": 1}

    saver.note_empty("t-forgotten")
    saver.forget_latest("t-forgotten")
    round_trips.clear()
    assert await saver.aget_tuple(thread_config("t-forgotten")) is None
    assert len(round_trips) == 1


async def test_a_channel_version_is_stored_once_across_checkpoints(
    saver: AsyncRedisSaver, redis_client: aredis.Redis
) -> None:
    graph = linear_graph(nodes=5).compile(checkpointer=saver)
    thread_id = str(uuid.uuid4())
    big = "payload " * 128
    await graph.ainvoke({"text": big, "n": 0}, thread_config(thread_id))
    history = await collect(saver.alist(thread_config(thread_id)))
    assert len(history) == 7  # input + 6 loop checkpoints
    assert all(t.checkpoint["channel_values"].get("text") == big for t in history[:-1])

    blob_fields = await redis_client.hkeys(saver.thread_keys(thread_id).blobs)
    text_blobs = [f for f in blob_fields if f.startswith(b"\0text\0")]
    assert len(text_blobs) == 1, "7 checkpoints share one blob of the unchanged text"
    n_blobs = [f for f in blob_fields if f.startswith(b"\0n\0")]
    assert len(n_blobs) == 6  # input, then one new version per node


async def test_list_with_before_limit_filter_and_namespaces(saver: AsyncRedisSaver) -> None:
    ids: list[str] = []
    parent: RunnableConfig = thread_config("t1", checkpoint_ns="")
    for step in range(5):
        cp = checkpoint({}, {})
        md: dict[str, Any] = {"source": "loop", "step": step, "parity": step % 2, "pair": [1, step]}
        parent = await saver.aput(parent, cp, md, {})  # type: ignore[arg-type]
        ids.append(cp["id"])
    child = checkpoint({}, {})
    await saver.aput(thread_config("t1", checkpoint_ns="sub:1"), child, {"step": 9}, {})
    other = checkpoint({}, {})
    await saver.aput(thread_config("t2", checkpoint_ns=""), other, {"step": 0}, {})

    def listed(tuples: list[Any]) -> list[str]:
        return [t.checkpoint["id"] for t in tuples]

    root = thread_config("t1", checkpoint_ns="")
    assert listed(await collect(saver.alist(root))) == ids[::-1]
    assert listed(await collect(saver.alist(root, limit=2))) == ids[:2:-1]
    before = thread_config("t1", checkpoint_ns="", checkpoint_id=ids[3])
    assert listed(await collect(saver.alist(root, before=before))) == ids[2::-1]
    assert listed(await collect(saver.alist(root, before=before, limit=1))) == [ids[2]]
    assert listed(await collect(saver.alist(root, filter={"parity": 1}))) == [ids[3], ids[1]]
    assert listed(await collect(saver.alist(root, filter={"parity": 0}, limit=2))) == [
        ids[4],
        ids[2],
    ]
    # Filter values are compared after a JSON round trip: a tuple matches a stored list.
    assert listed(await collect(saver.alist(root, filter={"pair": (1, 2)}))) == [ids[2]]
    assert listed(await collect(saver.alist(root, filter={"parity": 1, "step": 3}))) == [ids[3]]
    assert await collect(saver.alist(root, filter={"missing": None, "step": 99})) == []

    # No namespace: every namespace of the thread, newest first.
    everything = listed(await collect(saver.alist(thread_config("t1"))))
    assert everything == [child["id"], *ids[::-1]]
    assert listed(await collect(saver.alist(thread_config("t1", checkpoint_id=ids[1])))) == [ids[1]]
    # No config: every thread (found by SCAN under this saver's prefix).
    all_threads = await collect(saver.alist(None))
    assert {t.config["configurable"]["thread_id"] for t in all_threads} == {"t1", "t2"}
    assert len(all_threads) == 7
    assert len(await collect(saver.alist(None, limit=3))) == 3
    assert listed(await collect(saver.alist(None, filter={"step": 0}))) != []


async def test_writes_keep_the_first_regular_write_and_the_last_special_one(
    saver: AsyncRedisSaver,
) -> None:
    stored = await saver.aput(thread_config("t1", checkpoint_ns=""), checkpoint({}, {}), {}, {})
    await saver.aput_writes(stored, [("a", 1), (ERROR, "first")], "task", "~path")
    await saver.aput_writes(stored, [("a", 2), (ERROR, "second")], "task", "~path")
    await saver.aput_writes(stored, [("a", 3)], "another")
    tup = await saver.aget_tuple(stored)
    assert tup is not None
    # Ordered by (task_path, task_id, idx): "" < "~path", and ERROR's idx -1 < 0.
    assert tup.pending_writes == [("another", "a", 3), ("task", ERROR, "second"), ("task", "a", 1)]


async def test_thousands_of_channels_and_writes_fit_in_one_script(saver: AsyncRedisSaver) -> None:
    # Lua's unpack() stops at ~8000 values: the scripts must chunk, not fail.
    versions = {f"ch{i}": "1" for i in range(9000)}
    cp = checkpoint({f"ch{i}": i for i in range(9000)}, versions)
    stored = await saver.aput(thread_config("wide", checkpoint_ns=""), cp, {}, versions)
    await saver.aput_writes(stored, [(f"ch{i}", -i) for i in range(9000)], "fan-out")
    tup = await saver.aget_tuple(stored)
    assert tup is not None
    assert tup.checkpoint["channel_values"] == {f"ch{i}": i for i in range(9000)}
    assert tup.pending_writes == [("fan-out", f"ch{i}", -i) for i in range(9000)]
    await saver.aprune(["wide"])
    assert await saver.aget_tuple(stored) is not None


async def test_delete_thread_removes_every_key_of_the_thread(
    saver: AsyncRedisSaver, redis_client: aredis.Redis, key_prefix: str
) -> None:
    graph = approval_graph().compile(checkpointer=saver)
    doomed, kept = str(uuid.uuid4()), str(uuid.uuid4())
    for thread_id in (doomed, kept):
        await graph.ainvoke({"text": "t", "n": 0}, thread_config(thread_id))
    assert len(await keys_of(redis_client, key_prefix)) == 12

    await saver.adelete_thread(doomed)
    remaining = await keys_of(redis_client, key_prefix)
    assert remaining and all(f"{{{kept}}}" in k for k in remaining)
    assert len(remaining) == 6
    assert await saver.aget_tuple(thread_config(doomed)) is None


async def test_prune_keeps_the_latest_checkpoint_and_only_the_blobs_it_needs(
    saver: AsyncRedisSaver, redis_client: aredis.Redis
) -> None:
    graph = linear_graph(nodes=4).compile(checkpointer=saver)
    thread_id = str(uuid.uuid4())
    await graph.ainvoke({"text": "keep me", "n": 0}, thread_config(thread_id))
    before = await saver.aget_tuple(thread_config(thread_id))
    assert before is not None
    blobs = saver.thread_keys(thread_id).blobs
    assert await redis_client.hlen(blobs) > len(before.checkpoint["channel_versions"])

    await saver.aprune([thread_id], strategy="keep_latest")
    history = await collect(saver.alist(thread_config(thread_id)))
    assert [t.checkpoint["id"] for t in history] == [before.checkpoint["id"]]
    assert history[0].checkpoint["channel_values"] == before.checkpoint["channel_values"]
    assert await redis_client.hlen(blobs) == len(before.checkpoint["channel_versions"])


async def test_delete_for_runs_and_copy_thread(saver: AsyncRedisSaver) -> None:
    graph = linear_graph(nodes=2).compile(checkpointer=saver)
    thread_id, copy_id = str(uuid.uuid4()), str(uuid.uuid4())
    first_run, second_run = str(uuid.uuid4()), str(uuid.uuid4())
    for run_id, text in ((first_run, "a"), (second_run, "b")):
        config: RunnableConfig = {**thread_config(thread_id), "metadata": {"run_id": run_id}}
        await graph.ainvoke({"text": text, "n": 0}, config)

    await saver.acopy_thread(thread_id, copy_id)
    source = await collect(saver.alist(thread_config(thread_id)))
    copied = await collect(saver.alist(thread_config(copy_id)))
    assert {t.metadata["run_id"] for t in source} == {first_run, second_run}
    assert [t.checkpoint for t in copied] == [t.checkpoint for t in source]
    assert [t.metadata for t in copied] == [t.metadata for t in source]
    assert [t.pending_writes for t in copied] == [t.pending_writes for t in source]

    await saver.adelete_for_runs([first_run])
    for tid in (thread_id, copy_id):
        left = await collect(saver.alist(thread_config(tid)))
        assert {t.metadata["run_id"] for t in left} == {second_run}
    state = await graph.aget_state(thread_config(copy_id))
    assert state.values == {"text": "b", "n": 2}


async def fenced_checkpoint(
    saver: AsyncRedisSaver, redis_client: aredis.Redis, key_prefix: str, thread_id: str
) -> tuple[str, RunnableConfig, RunnableConfig]:
    """A first checkpoint written under a fence that ``worker-1`` holds: the fence key, the
    stored config, and that config carrying the fence (for further fenced writes)."""
    fence_key = f"{key_prefix}lease:{{{thread_id}}}"
    fenced = {FENCE_CONFIG_KEY: [fence_key, "worker-1"]}
    await redis_client.set(fence_key, "worker-1")
    stored = await saver.aput(
        thread_config(thread_id, checkpoint_ns="", **fenced), checkpoint({"a": 1}, {"a": "1"}), {}, {"a": "1"}
    )
    return fence_key, stored, {"configurable": {**stored["configurable"], **fenced}}


async def dump_checkpoints(redis_client: aredis.Redis, key_prefix: str) -> dict[str, bytes]:
    """Every checkpointer key under ``key_prefix``, dumped: to show that nothing changed."""
    return {k: await redis_client.dump(k) for k in await keys_of(redis_client, key_prefix + "cp:")}


async def test_a_stale_fence_rejects_writes_and_writes_nothing(
    saver: AsyncRedisSaver, redis_client: aredis.Redis, key_prefix: str
) -> None:
    thread_id = "fenced"
    fence_key, stored, same_checkpoint = await fenced_checkpoint(saver, redis_client, key_prefix, thread_id)
    # The fence is not metadata: LangGraph skips configurable keys that start with "__".
    assert FENCE_CONFIG_KEY not in str((await saver.aget_tuple(stored)).metadata)  # type: ignore[union-attr]
    await saver.aput_writes(same_checkpoint, [("a", 2)], "task")
    await redis_client.set(fence_key, "worker-2")  # the lease moved on
    before = await dump_checkpoints(redis_client, key_prefix)
    with pytest.raises(FencedOut) as raised:
        await saver.aput(same_checkpoint, checkpoint({"a": 3}, {"a": "2"}), {}, {"a": "2"})
    assert isinstance(raised.value, Conflict) and not raised.value.retryable
    with pytest.raises(FencedOut):
        await saver.aput_writes(same_checkpoint, [("a", 4), (ERROR, "x")], "task-2")
    await redis_client.delete(fence_key)  # an expired lease fences out too
    with pytest.raises(FencedOut):
        await saver.aput_writes(same_checkpoint, [("a", 5)], "task-3")
    assert await dump_checkpoints(redis_client, key_prefix) == before

    with pytest.raises(ValueError, match="hash tag"):
        await saver.aput(
            thread_config(thread_id, checkpoint_ns="", **{FENCE_CONFIG_KEY: ["lease:other", "x"]}),
            checkpoint({}, {}),
            {},
            {},
        )


async def test_a_graph_run_under_a_lost_fence_fails(
    saver: AsyncRedisSaver, redis_client: aredis.Redis, key_prefix: str
) -> None:
    graph = linear_graph(nodes=2).compile(checkpointer=saver)
    thread_id = str(uuid.uuid4())
    fence_key = f"{key_prefix}lease:{{{thread_id}}}"
    await redis_client.set(fence_key, "me")
    config = thread_config(thread_id, **{FENCE_CONFIG_KEY: [fence_key, "me"]})
    assert (await graph.ainvoke({"text": "", "n": 0}, config))["n"] == 2

    await redis_client.set(fence_key, "someone else")
    with pytest.raises(FencedOut):
        await graph.ainvoke({"text": "", "n": 0}, config, durability="sync")
    state = await graph.aget_state(thread_config(thread_id))
    assert state.values["n"] == 2  # the fenced run left nothing behind


async def test_interrupt_then_resume_on_a_fresh_saver(redis_url: str, key_prefix: str) -> None:
    thread_id = str(uuid.uuid4())
    async with AsyncRedisSaver.from_conn_string(redis_url, prefix=key_prefix) as first:
        graph = approval_graph().compile(checkpointer=first)
        out = await graph.ainvoke({"text": "post", "n": 0}, thread_config(thread_id))
        assert out["__interrupt__"][0].value == {"question": "publish?", "text": "post drafted"}

    # A new process would build a new client and saver: nothing is kept in memory.
    client = make_client(redis_url)
    try:
        graph = approval_graph().compile(checkpointer=AsyncRedisSaver(client, prefix=key_prefix))
        paused = await graph.aget_state(thread_config(thread_id))
        assert paused.next == ("approve",)
        out = await graph.ainvoke(Command(resume="yes"), thread_config(thread_id))
        assert out == {"text": "post drafted [yes]", "n": 2}
        history = [s async for s in graph.aget_state_history(thread_config(thread_id))]
        assert [s.metadata["step"] for s in history if s.metadata] == [3, 2, 1, 0, -1]
    finally:
        await client.aclose()


async def test_cancelled_and_failed_calls_never_desync_a_connection(redis_url: str, key_prefix: str) -> None:
    client = make_client(redis_url)
    saver = AsyncRedisSaver(client, prefix=key_prefix)
    try:
        for i in range(4):
            await saver.aput(
                thread_config(f"t{i}", checkpoint_ns=""), checkpoint({"v": i}, {"v": "1"}), {}, {"v": "1"}
            )
        for i in range(4):
            # The server holds the reply back; the call is cancelled while waiting for it.
            await client.client_pause(2_000, all=False)  # EVALSHA counts as a write
            task = asyncio.ensure_future(saver.aget_tuple(thread_config(f"t{(i + 1) % 4}")))
            await asyncio.sleep(0.02)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.client_unpause()
            # The next call must read its own reply, not the abandoned one.
            mine = await saver.aget_tuple(thread_config(f"t{i}"))
            assert mine is not None and mine.checkpoint["channel_values"] == {"v": i}
        # A script error (here WRONGTYPE) is raised, and the connection stays usable.
        await client.set(saver.thread_keys("broken").ids, "not a zset")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            await saver.aput(thread_config("broken", checkpoint_ns=""), checkpoint({}, {}), {}, {})
        assert await saver.aget_tuple(thread_config("t0")) is not None
        # Many calls at once: each gets its own connection, replies never cross.
        loaded = await asyncio.gather(*(saver.aget_tuple(thread_config(f"t{i % 4}")) for i in range(40)))
        assert [t.checkpoint["channel_values"]["v"] for t in loaded if t] == [i % 4 for i in range(40)]
    finally:
        await saver.aclose()
        await client.aclose()


async def test_killed_connections_are_replaced(saver: AsyncRedisSaver, redis_client: aredis.Redis) -> None:
    stored = await saver.aput(
        thread_config("t", checkpoint_ns=""), checkpoint({"v": 1}, {"v": "1"}), {}, {"v": "1"}
    )
    await asyncio.gather(*(saver.aget_tuple(stored) for _ in range(4)))  # the saver now keeps connections
    # As after a Redis restart: every other connection is closed by the server.
    await redis_client.client_kill_filter(_type="normal", skipme=True)
    await redis_client.script_flush()
    tup = await saver.aget_tuple(stored)
    assert tup is not None and tup.checkpoint["channel_values"] == {"v": 1}


async def test_scripts_are_reloaded_after_a_script_flush(
    saver: AsyncRedisSaver, redis_client: aredis.Redis
) -> None:
    await saver.aput(thread_config("t", checkpoint_ns=""), checkpoint({}, {}), {}, {})
    await redis_client.script_flush()
    assert await saver.aget_tuple(thread_config("t")) is not None


def test_the_sync_api_points_to_the_async_one(saver: AsyncRedisSaver) -> None:
    config = thread_config("t", checkpoint_ns="")
    with pytest.raises(NotImplementedError, match=r"async-only.*aget_tuple"):
        saver.get_tuple(config)
    with pytest.raises(NotImplementedError, match="alist"):
        saver.list(config)
    with pytest.raises(NotImplementedError, match="aput"):
        saver.put(config, checkpoint({}, {}), {}, {})
    with pytest.raises(NotImplementedError, match="aput_writes"):
        saver.put_writes(config, [], "task")
    with pytest.raises(NotImplementedError, match="adelete_thread"):
        saver.delete_thread("t")


def test_a_prefix_with_braces_is_refused(redis_client: aredis.Redis) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        AsyncRedisSaver(redis_client, prefix="il:{x}:")


# Writes with durability="async": held until the checkpoint that follows them.


class Seen(TypedDict):
    seen: Annotated[list[str], operator.add]


def fan_out_graph() -> StateGraph[Seen]:
    """``START -> {a, b} (in parallel) -> c -> END``; every node appends its name."""

    def node(name: str) -> Any:
        async def run(state: Seen) -> dict[str, Any]:
            return {"seen": [name]}

        return run

    graph = StateGraph(Seen)
    for name in "abc":
        graph.add_node(name, node(name))
    graph.add_edge(START, "a")
    graph.add_edge(START, "b")
    graph.add_edge(["a", "b"], "c")
    graph.add_edge("c", END)
    return graph


def shas(round_trips: list[bytes], script: Lua) -> int:
    return sum(script.sha.encode() in sent[:96] for sent in round_trips)


def async_writes(config: RunnableConfig) -> RunnableConfig:
    """``config`` as LangGraph's loop hands it to ``aput_writes`` with ``durability="async"``."""
    return {"configurable": {**config["configurable"], "__pregel_durability": "async"}}


async def writes_by_step(graph: Any, config: RunnableConfig) -> list[tuple[int, list[tuple[str, Any]]]]:
    saver = graph.checkpointer
    found = []
    async for t in saver.alist(config):
        found.append((t.metadata["step"], sorted((w[1], repr(w[2])) for w in t.pending_writes or [])))
    return sorted(found)


@contextlib.contextmanager
def gated_first_batch(saver: AsyncRedisSaver) -> Iterator[asyncio.Event]:
    """Hold the saver's first ``WRITE`` batch back until the yielded event is set, so that
    everything written meanwhile gathers behind it, whatever the machine's speed."""
    gate = asyncio.Event()
    original = saver._eval
    first = True

    async def gated(script: Lua, keys: Any, args: Any) -> Any:
        nonlocal first
        if script is WRITE and first:
            first = False
            await gate.wait()
        return await original(script, keys, args)

    saver._eval = gated  # type: ignore[method-assign]
    try:
        yield gate
    finally:
        del saver._eval


async def test_written_behind_a_run_costs_one_batch_while_one_is_on_its_way(
    redis_client: aredis.Redis, key_prefix: str, round_trips: list[bytes]
) -> None:
    saver = AsyncRedisSaver(redis_client, prefix=key_prefix, write_behind_s=0)
    ours = fan_out_graph().compile(checkpointer=saver)
    reference = fan_out_graph().compile(checkpointer=InMemorySaver())
    config = thread_config(str(uuid.uuid4()))
    warm = thread_config(str(uuid.uuid4()))
    await ours.ainvoke({"seen": []}, warm, durability="async")  # loads the script
    await saver.aflush(warm["configurable"]["thread_id"])
    round_trips.clear()
    with gated_first_batch(saver) as gate:
        # Returns with its writes queued, none stored: the first batch is held back.
        out = await ours.ainvoke({"seen": []}, config, durability="async")
        assert sorted(out["seen"]) == ["a", "b", "c"]
        assert shas(round_trips, WRITE) == 0
        assert await AsyncRedisSaver(redis_client, prefix=key_prefix).aget_tuple(config) is None
        gate.set()
        await saver.aflush(config["configurable"]["thread_id"])
    # Four checkpoints (input, after START, after a+b, after c) and the writes of three
    # steps: the first write alone, all the rest in the batch that gathered behind it.
    assert shas(round_trips, WRITE) == 2
    await reference.ainvoke({"seen": []}, config, durability="async")
    assert await writes_by_step(ours, config) == await writes_by_step(reference, config)
    fresh = fan_out_graph().compile(checkpointer=AsyncRedisSaver(redis_client, prefix=key_prefix))
    assert (await fresh.aget_state(config)).values == (await reference.aget_state(config)).values


async def test_a_batching_window_sends_a_quick_run_in_one_batch(
    redis_client: aredis.Redis, key_prefix: str, round_trips: list[bytes]
) -> None:
    saver = AsyncRedisSaver(redis_client, prefix=key_prefix, write_behind_s=30.0)
    graph = linear_graph(nodes=5).compile(checkpointer=saver)
    warm = thread_config(str(uuid.uuid4()))
    await graph.ainvoke({"text": "", "n": 0}, warm, durability="async")
    await saver.aflush(warm["configurable"]["thread_id"])  # loads the script
    config = thread_config(str(uuid.uuid4()))
    round_trips.clear()
    assert (await graph.ainvoke({"text": "", "n": 0}, config, durability="async"))["n"] == 5
    assert shas(round_trips, WRITE) == 0  # everything waits in the window
    await saver.aflush(config["configurable"]["thread_id"])  # which a flush cuts short
    assert shas(round_trips, WRITE) == 1
    history = [s async for s in graph.aget_state_history(config)]
    assert [s.metadata["step"] for s in history if s.metadata] == [5, 4, 3, 2, 1, 0, -1]


async def test_a_flush_that_reads_back_answers_the_final_state_without_a_round_trip(
    redis_client: aredis.Redis, key_prefix: str, round_trips: list[bytes]
) -> None:
    """``aflush(read_latest=True)`` (a run ended): the last batch reads the latest root
    checkpoint back, with its pending writes, and the next ``aget_state`` answers from it
    once, the same as a fresh saver reading Redis."""
    saver = AsyncRedisSaver(redis_client, prefix=key_prefix, write_behind_s=30.0)
    graph = approval_graph().compile(checkpointer=saver)
    warm = thread_config(str(uuid.uuid4()))
    await graph.ainvoke({"text": "", "n": 0}, warm, durability="async")
    await saver.aflush(warm["configurable"]["thread_id"])  # loads the scripts
    await saver.aget_tuple(warm)
    config = thread_config(str(uuid.uuid4()))
    await graph.ainvoke({"text": "post", "n": 0}, config, durability="async")  # pauses at approve
    round_trips.clear()  # everything waits in the window
    await saver.aflush(config["configurable"]["thread_id"], read_latest=True)
    assert shas(round_trips, WRITE) == 1 and len(round_trips) == 1
    state = await graph.aget_state(config)
    assert len(round_trips) == 1  # answered from the batch's read
    fresh = approval_graph().compile(checkpointer=AsyncRedisSaver(redis_client, prefix=key_prefix))
    expected = await fresh.aget_state(config)
    assert state.values == expected.values == {"text": "post drafted", "n": 1}
    assert state.next == expected.next == ("approve",)
    assert [i.value for t in state.tasks for i in t.interrupts] == [
        {"question": "publish?", "text": "post drafted"}
    ]
    assert state.tasks == expected.tasks and state.config == expected.config
    round_trips.clear()
    assert (await graph.aget_state(config)).values == expected.values
    assert shas(round_trips, LOAD) == 1  # used once


async def test_a_write_after_the_read_back_was_sent_voids_it(
    redis_client: aredis.Redis, key_prefix: str
) -> None:
    """A write made while the reading batch is on its way is not in what it read: the
    next read goes to Redis and sees it."""
    saver = AsyncRedisSaver(redis_client, prefix=key_prefix, write_behind_s=30.0)
    stored = await saver.aput(
        async_writes(thread_config("read-back", checkpoint_ns="")),
        checkpoint({"a": 1}, {"a": "1"}),
        {},
        {"a": "1"},
    )
    with gated_first_batch(saver) as gate:
        flushing = asyncio.create_task(saver.aflush("read-back", read_latest=True))
        await asyncio.sleep(0.05)  # the batch, with its read, is held on its way
        assert not flushing.done() and "read-back" in saver._reading
        await saver.aput(async_writes(stored), checkpoint({"a": 2}, {"a": "2"}), {}, {"a": "2"})
        gate.set()
        await asyncio.wait_for(flushing, 5)
    await saver.aflush("read-back")
    latest = await saver.aget_tuple(thread_config("read-back"))
    assert latest is not None and latest.checkpoint["channel_values"] == {"a": 2}
    assert saver._latest_root == {} and saver._reading == set()


async def test_progress_is_stored_within_the_window_while_a_step_runs(
    redis_client: aredis.Redis, key_prefix: str
) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()

    async def slow(state: State) -> dict[str, Any]:
        started.set()
        await finish.wait()
        return {"n": state["n"] + 1}

    builder = StateGraph(State)
    builder.add_node("quick", lambda s: {"n": s["n"] + 1})
    builder.add_node("slow", slow)
    builder.add_edge(START, "quick")
    builder.add_edge("quick", "slow")
    builder.add_edge("slow", END)
    saver = AsyncRedisSaver(redis_client, prefix=key_prefix, write_behind_s=0.05)
    graph = builder.compile(checkpointer=saver)
    config = thread_config(str(uuid.uuid4()))
    run = asyncio.create_task(graph.ainvoke({"text": "", "n": 0}, config, durability="async"))
    await started.wait()
    other = builder.compile(checkpointer=AsyncRedisSaver(redis_client, prefix=key_prefix))  # another process
    for _ in range(100):  # the window is 50 ms; the slow step takes as long as the test wants
        state = await other.aget_state(config)
        if state.values.get("n") == 1:
            break
        await asyncio.sleep(0.02)
    assert state.values == {"text": "", "n": 1} and state.next == ("slow",)
    finish.set()
    assert (await run)["n"] == 2
    await saver.aflush(config["configurable"]["thread_id"])
    assert (await other.aget_state(config)).values["n"] == 2


async def test_without_write_behind_every_write_returns_once_stored(
    saver: AsyncRedisSaver, redis_client: aredis.Redis, key_prefix: str
) -> None:
    graph = fan_out_graph().compile(checkpointer=saver)
    config = thread_config(str(uuid.uuid4()))
    out = await graph.ainvoke({"seen": []}, config, durability="async")
    # Nothing flushed it, yet another saver (another process) sees the final state.
    fresh = fan_out_graph().compile(checkpointer=AsyncRedisSaver(redis_client, prefix=key_prefix))
    assert (await fresh.aget_state(config)).values == out
    assert saver._outboxes == {}


async def test_a_read_waits_for_the_writes_queued_before_it(
    redis_client: aredis.Redis, key_prefix: str
) -> None:
    saver = AsyncRedisSaver(redis_client, prefix=key_prefix, write_behind_s=0)
    stored = await saver.aput(
        thread_config("queued", checkpoint_ns=""), checkpoint({"a": 1}, {"a": "1"}), {}, {}
    )
    with gated_first_batch(saver) as gate:
        await saver.aput_writes(async_writes(stored), [("a", 2)], "task-1")  # queued, not stored
        reading = asyncio.create_task(saver.aget_tuple(stored))
        await asyncio.sleep(0.05)
        assert not reading.done()  # waiting for the write queued before it
        gate.set()
        read = await asyncio.wait_for(reading, 5)
    assert read is not None and [w[1:] for w in read.pending_writes or []] == [("a", 2)]
    await saver.aflush("queued")
    assert saver._outboxes == {}


async def test_a_failed_batch_refuses_every_later_write_until_flushed(
    redis_client: aredis.Redis, key_prefix: str
) -> None:
    saver = AsyncRedisSaver(redis_client, prefix=key_prefix, write_behind_s=0)
    fence_key, _, same = await fenced_checkpoint(saver, redis_client, key_prefix, "fenced-behind")
    same = async_writes(same)
    before = await dump_checkpoints(redis_client, key_prefix)
    await redis_client.set(fence_key, "worker-2")  # the lease moved on
    # Both are queued at once, in one batch, which the fence then refuses as a whole.
    await saver.aput_writes(same, [("a", 2)], "task")
    await saver.aput(same, checkpoint({"a": 3}, {"a": "2"}), {}, {"a": "2"})
    await saver._settle("fenced-behind")
    with pytest.raises(FencedOut):  # refused at once: it would follow a lost write
        await saver.aput(same, checkpoint({"a": 4}, {"a": "3"}), {}, {"a": "3"})
    await redis_client.set(fence_key, "worker-1")  # even once the fence holds again
    with pytest.raises(FencedOut):
        await saver.aput_writes(same, [("a", 5)], "task-2")
    with pytest.raises(FencedOut):
        await saver.aflush("fenced-behind")
    assert await dump_checkpoints(redis_client, key_prefix) == before
    assert saver._outboxes == {}
    await saver.aflush("fenced-behind")  # reported once
    await saver.aput_writes(same, [("a", 6)], "task-3")  # a new start
    await saver.aflush("fenced-behind")
    read = await saver.aget_tuple(same)
    assert read is not None and [w[1:] for w in read.pending_writes or []] == [("a", 6)]
