"""Cancelling runs and preempting them (multitask ``interrupt``): the owner is fenced out
and stops at its next step without writing; queued runs move up."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import Conflict, NotFound
from core.settings import Settings
from runs.engine import Engine, open_engine
from runs.payload import RunPayload

HERE = Path(__file__).parent


@pytest.fixture
async def engine(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Engine]:
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps({"graphs": {"ledger": str(HERE / "ledger_graph.py") + ":graph"}}))
    settings = Settings(
        redis_url=redis_url, key_prefix=key_prefix, config=config, data_dir=tmp_path, local_llm=False,
        nearest_examples=False, lease_ms=2000,
    )  # fmt: skip
    async with open_engine(settings) as e:
        yield e


async def _create(engine: Engine, tid: str, strategy: str = "enqueue") -> str:
    run_id = str(uuid.uuid4())
    payload = RunPayload(graph_id="ledger", assistant_id="ledger", input={"n": 0})
    await engine.store.create_run(
        run_id=run_id, thread_id=tid, graph_id="ledger", assistant_id="ledger", metadata={},
        payload=payload.model_dump(mode="json"), strategy=strategy,  # type: ignore[arg-type]
        if_not_exists="create", is_resume=False,
    )  # fmt: skip
    return run_id


async def _ledger(engine: Engine, tid: str) -> dict[str, int]:
    raw: Any = await engine.redis.hgetall(f"{engine.settings.key_prefix}ledger:{{{tid}}}")
    return {k.decode(): int(v) for k, v in raw.items()}


async def _until_running(engine: Engine, tid: str, rid: str) -> None:
    for _ in range(200):
        run = await engine.store.get_run(tid, rid)
        if run is not None and run["status"] == "running" and await _ledger(engine, tid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("run never started")


async def test_cancel_stops_a_running_run_where_it_is(engine: Engine) -> None:
    tid = str(uuid.uuid4())
    rid = await _create(engine, tid)
    await _until_running(engine, tid, rid)
    await engine.store.cancel_run(tid, rid)
    end = await engine.store.wait_for_end(tid, rid)
    assert end is not None and end["status"] == "interrupted" and end["cancelled"] is True
    run = await engine.store.get_run(tid, rid)
    assert run is not None and run["status"] == "interrupted"
    applied = await _ledger(engine, tid)
    await asyncio.sleep(1.5)  # five steps of 0.3 s would have finished by now
    assert await _ledger(engine, tid) == applied, "steps went on after the cancel"
    assert sum(applied.values()) < 5
    thread = await engine.store.get_thread(tid)
    assert thread is not None and thread["status"] == "idle" and thread["active_run"] is None
    with pytest.raises(Conflict, match="already ended"):
        await engine.store.cancel_run(tid, rid)
    with pytest.raises(NotFound):
        await engine.store.cancel_run(tid, str(uuid.uuid4()))


async def test_cancel_of_a_queued_run_means_it_never_runs(engine: Engine) -> None:
    tid = str(uuid.uuid4())
    first, second = await _create(engine, tid), await _create(engine, tid)
    await engine.store.cancel_run(tid, second)
    end = await engine.store.wait_for_end(tid, first)
    assert end is not None and end["status"] == "success"
    assert await _ledger(engine, tid) == {f"s{i}": 1 for i in range(5)}
    second_run = await engine.store.get_run(tid, second)
    assert second_run is not None and second_run["status"] == "interrupted"


async def test_multitask_interrupt_preempts_the_active_run(engine: Engine) -> None:
    tid = str(uuid.uuid4())
    first = await _create(engine, tid)
    await _until_running(engine, tid, first)
    second = await _create(engine, tid, strategy="interrupt")
    first_end = await engine.store.wait_for_end(tid, first)
    assert first_end is not None and first_end["status"] == "interrupted"
    second_end = await engine.store.wait_for_end(tid, second)
    assert second_end is not None and second_end["status"] == "success"
    assert second_end["values"]["n"] == 5


async def _gone(engine: Engine, tid: str, rid: str) -> None:
    """Until the rollback worker has deleted the run."""
    for _ in range(300):
        if await engine.store.get_run(tid, rid) is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {rid} was never rolled back")


async def _checkpoint_runs(engine: Engine, tid: str) -> set[str]:
    return {
        c.metadata["run_id"]
        async for c in engine.saver.alist({"configurable": {"thread_id": tid}})
        if c.metadata and "run_id" in c.metadata
    }


async def test_rollback_undoes_a_running_run(engine: Engine) -> None:
    tid = str(uuid.uuid4())
    first = await _create(engine, tid)
    end = await engine.store.wait_for_end(tid, first)
    assert end is not None and end["status"] == "success"
    before = (await engine.store.get_thread(tid) or {})["values"]
    assert before["n"] == 5 and len(before["done"]) == 5

    second = await _create(engine, tid)
    for _ in range(300):  # until the second run has checkpointed a step of its own
        if second in await _checkpoint_runs(engine, tid):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the second run never checkpointed")
    assert await engine.store.cancel_run(tid, second, "rollback") == "rolling_back"
    await _gone(engine, tid, second)

    thread = await engine.store.get_thread(tid)
    assert thread is not None and thread["status"] == "idle" and thread["active_run"] is None
    assert thread["values"] == before
    assert await _checkpoint_runs(engine, tid) == {first}
    assert [r["run_id"] for r in await engine.store.list_runs(tid)] == [first]
    graph = engine.graphs["ledger"]
    state = await graph.aget_state({"configurable": {"thread_id": tid}})
    assert state.values == before and state.next == ()


async def test_multitask_rollback_replaces_the_active_run(engine: Engine) -> None:
    tid = str(uuid.uuid4())
    first = await _create(engine, tid)
    await _until_running(engine, tid, first)
    second = await _create(engine, tid, strategy="rollback")
    end = await engine.store.wait_for_end(tid, second)
    assert end is not None and end["status"] == "success"
    # Started from nothing: the first run's steps are not in the state.
    assert end["values"]["done"] == [f"s{i}" for i in range(5)]
    assert await engine.store.get_run(tid, first) is None
    assert await _checkpoint_runs(engine, tid) == {second}


async def test_rollback_of_a_queued_run_deletes_it(engine: Engine) -> None:
    tid = str(uuid.uuid4())
    first, second = await _create(engine, tid), await _create(engine, tid)
    assert await engine.store.cancel_run(tid, second, "rollback") == "cancelled"
    assert await engine.store.get_run(tid, second) is None
    end = await engine.store.wait_for_end(tid, first)
    assert end is not None and end["status"] == "success"
    assert [r["run_id"] for r in await engine.store.list_runs(tid)] == [first]


async def test_delete_run_only_once_it_ended(engine: Engine) -> None:
    tid = str(uuid.uuid4())
    rid = await _create(engine, tid)
    with pytest.raises(Conflict, match="has not ended"):
        await engine.store.delete_run(tid, rid)
    await engine.store.wait_for_end(tid, rid)
    await engine.store.delete_run(tid, rid)
    assert await engine.store.get_run(tid, rid) is None
    with pytest.raises(NotFound):
        await engine.store.delete_run(tid, rid)
