"""Crons through the real ``langgraph-sdk`` client (``client.crons.*``) against the real
service, on the session's real Redis.

Test hook: a cron's next fire time is its score in the due set (``store/crons.py``).
Rather than wait for the minute to turn, tests make a cron due now by rewriting that score
in Redis (``_make_due``). Tests that count fires use a yearly schedule, so that no natural
fire can land while they run.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis.asyncio as aredis
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError, PermissionDeniedError, UnprocessableEntityError

from api.scheduler import fire, fire_ids
from core.ids import now_ms
from core.settings import Settings
from runs.engine import open_engine
from store.crons import CronStore
from tests.api.support import expect_error
from tests.fakes.openai_server import FakeOpenAI
from tests.service import ADMIN_KEY, ServiceProcess

OTHER_KEY = "test-other-tenant-operator-0123"
"""An operator of tenant ``other``."""
VIEWER_KEY = "test-default-tenant-viewer-0123"
"""A viewer of tenant ``default``, the admin key's tenant."""

YEARLY = "0 0 1 1 *"
EVERY_MINUTE = "* * * * *"
INPUT = {"ticket": "technical: the app crashes", "customer_id": "c-001"}
DEADLINE_S = 30.0

T = TypeVar("T")


@pytest.fixture(scope="module")
def service(
    redis_url: str, fake_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The module's service, with keys of two tenants (``tests/api/conftest.py``'s, plus
    an operator of another tenant and a viewer)."""
    logs = tmp_path_factory.mktemp("crons")
    keys = [
        {"key": ADMIN_KEY, "tenant": "default", "roles": ["admin"]},
        {"key": OTHER_KEY, "tenant": "other", "roles": ["operator"]},
        {"key": VIEWER_KEY, "tenant": "default", "roles": ["viewer"]},
    ]
    proc = ServiceProcess(
        {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
            "INTERLOCK_API_KEYS": json.dumps(keys),
            "INTERLOCK_LLM_BASE_URL": fake_llm.base_url,
            "INTERLOCK_LLM_TIMEOUT_S": "2",
            "INTERLOCK_NEAREST_EXAMPLES": "false",
            "INTERLOCK_DATA_DIR": str(logs / "data"),
        },
        logs / "service.log",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def other(service: ServiceProcess) -> AsyncIterator[LangGraphClient]:
    async with get_client(url=service.url, api_key=OTHER_KEY) as c:
        yield c


@pytest.fixture
def crons(redis_client: aredis.Redis, prefix: str) -> CronStore:
    return CronStore(redis_client, prefix=prefix)


async def _make_due(crons: CronStore, cron_id: str, at: int | None = None) -> bool:
    """The test hook: the cron's next fire becomes ``at`` (now by default). Only for a cron
    in the due set (``XX``); returns whether there was one."""
    changed = await crons.client.zadd(
        crons.due_key, {cron_id: at if at is not None else now_ms()}, xx=True, ch=True
    )
    return bool(changed) or await crons.client.zscore(crons.due_key, cron_id) is not None


async def _eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``DEADLINE_S``."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _cron_runs(client: LangGraphClient, thread_id: str, cron_id: str) -> list[dict[str, Any]]:
    runs = await client.runs.list(thread_id, limit=100)
    return [dict(r) for r in runs if r["metadata"].get("cron_id") == cron_id]


async def _one_done_run(client: LangGraphClient, thread_id: str, cron_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        runs = await _cron_runs(client, thread_id, cron_id)
        return next((r for r in runs if r["status"] == "success"), None)

    return await _eventually(probe, f"a finished run of cron {cron_id} on thread {thread_id}")


def _moment(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


async def _advanced_past(crons: CronStore, cron_id: str, due: int) -> bool:
    score = await crons.client.zscore(crons.due_key, cron_id)
    return score is not None and score > due


async def test_thread_cron_fires_a_run_that_completes(client: LangGraphClient, crons: CronStore) -> None:
    thread = await client.threads.create()
    cron: Any = await client.crons.create_for_thread(
        thread["thread_id"], "support_triage", schedule=EVERY_MINUTE, input=INPUT, metadata={"owner": "ops"}
    )
    assert cron["thread_id"] == thread["thread_id"]
    assert cron["schedule"] == EVERY_MINUTE and cron["enabled"] is True and cron["timezone"] is None
    assert cron["payload"]["input"] == INPUT and cron["metadata"] == {"owner": "ops"}
    first = _moment(cron["next_run_date"])
    created = _moment(cron["created_at"])
    assert created < first <= created + timedelta(minutes=1) and first.second == 0

    due = now_ms()
    assert await _make_due(crons, cron["cron_id"], due)
    run = await _one_done_run(client, thread["thread_id"], cron["cron_id"])
    assert run["metadata"]["owner"] == "ops"
    state = await client.threads.get_state(thread["thread_id"])
    assert state["values"]["route"] == "technical"
    await _eventually(lambda: _advanced_past(crons, cron["cron_id"], due), "the cron's next fire time")
    await client.crons.delete(cron["cron_id"])


async def test_stateless_cron_runs_on_a_thread_of_its_own_kept_when_asked(
    client: LangGraphClient, crons: CronStore
) -> None:
    cron: Any = await client.crons.create(
        "support_triage", schedule=EVERY_MINUTE, input=INPUT, on_run_completed="keep"
    )
    assert cron["thread_id"] is None and cron["on_run_completed"] == "keep"
    await _make_due(crons, cron["cron_id"])

    async def kept() -> list[Any] | None:
        found = await client.threads.search(metadata={"cron_id": cron["cron_id"]}, status="idle")
        return [t for t in found if t["values"]] or None

    threads = await _eventually(kept, "the cron's thread, idle with values")
    runs = await _cron_runs(client, threads[0]["thread_id"], cron["cron_id"])
    assert [r["status"] for r in runs] == ["success"]
    await client.crons.delete(cron["cron_id"])


async def test_stateless_cron_deletes_its_thread_by_default(
    client: LangGraphClient, crons: CronStore, fake_llm: FakeOpenAI
) -> None:
    ticket = f"technical: the app crashes ({uuid.uuid4().hex})"
    cron: Any = await client.crons.create(
        "support_triage", schedule=EVERY_MINUTE, input={**INPUT, "ticket": ticket}
    )
    assert cron["on_run_completed"] == "delete"
    await _make_due(crons, cron["cron_id"])

    async def ran() -> bool:
        return any(ticket in json.dumps(body) for body in fake_llm.requests())

    await _eventually(ran, "the fire's run to reach the model")

    async def gone() -> bool:
        return await client.threads.count(metadata={"cron_id": cron["cron_id"]}) == 0

    await _eventually(gone, "the fire's thread to be deleted")
    await client.crons.delete(cron["cron_id"])


async def test_search_count_filters_and_update(client: LangGraphClient) -> None:
    tag = {"tag": uuid.uuid4().hex}
    first, second = (await client.threads.create())["thread_id"], (await client.threads.create())["thread_id"]
    a: Any = await client.crons.create_for_thread(
        first, "support_triage", schedule=YEARLY, input=INPUT, metadata=tag
    )
    b: Any = await client.crons.create_for_thread(
        first, "support_triage", schedule=YEARLY, input=INPUT, metadata=tag, enabled=False
    )
    c: Any = await client.crons.create("support_triage", schedule=YEARLY, input=INPUT, metadata=tag)
    d: Any = await client.crons.create_for_thread(second, "support_triage", schedule=YEARLY, input=INPUT)
    assert b["enabled"] is False and b["next_run_date"] is None

    def ids(found: list[Any]) -> list[str]:
        return [x["cron_id"] for x in found]

    assert set(ids(await client.crons.search(thread_id=first))) == {a["cron_id"], b["cron_id"]}
    assert await client.crons.count(thread_id=first) == 2
    assert ids(await client.crons.search(thread_id=first, enabled=False)) == [b["cron_id"]]
    in_order = ids(await client.crons.search(metadata=tag, sort_by="created_at", sort_order="asc"))
    assert in_order == [a["cron_id"], b["cron_id"], c["cron_id"]]
    assert await client.crons.count(metadata=tag) == 3
    assert ids(await client.crons.search(metadata=tag, sort_order="asc", limit=1, offset=1)) == [b["cron_id"]]
    assert d["cron_id"] in ids(await client.crons.search(assistant_id="support_triage", limit=100))
    assert d["cron_id"] in ids(await client.crons.search(assistant_id=d["assistant_id"], limit=100))
    assert await client.crons.search(assistant_id=str(uuid.uuid4())) == []
    selected = await client.crons.search(thread_id=second, select=["cron_id", "schedule"])
    assert selected == [{"cron_id": d["cron_id"], "schedule": YEARLY}]

    enabled: Any = await client.crons.update(b["cron_id"], enabled=True)
    assert enabled["enabled"] is True and enabled["next_run_date"] is not None
    moved: Any = await client.crons.update(
        a["cron_id"], schedule="0 9 * * *", timezone="America/New_York", metadata={"more": 1}
    )
    assert moved["schedule"] == "0 9 * * *" and moved["timezone"] == "America/New_York"
    assert moved["metadata"] == {**tag, "more": 1}
    nine = _moment(moved["next_run_date"]).astimezone(ZoneInfo("America/New_York"))
    assert (nine.hour, nine.minute) == (9, 0) and nine > datetime.now(UTC)
    assert nine - timedelta(days=1) < _moment(moved["updated_at"])
    end = datetime.now(UTC) + timedelta(days=400)
    ending: Any = await client.crons.update(a["cron_id"], end_time=end)
    assert _moment(ending["end_time"]) == end.replace(microsecond=end.microsecond // 1000 * 1000)
    cleared: Any = await client.crons.update(a["cron_id"], end_time=None)
    assert cleared["end_time"] is None and cleared["schedule"] == "0 9 * * *"
    for cron in (a, b, c, d):
        await client.crons.delete(cron["cron_id"])


async def _stored(crons: CronStore, tenant: str = "default") -> tuple[int, int]:
    return int(await crons.client.zcard(crons.index(tenant))), int(await crons.client.zcard(crons.due_key))


async def test_bad_input_is_refused_and_nothing_is_stored(
    http: httpx.AsyncClient, client: LangGraphClient, crons: CronStore
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    before = await _stored(crons)
    ok = {"assistant_id": "support_triage", "schedule": YEARLY, "input": INPUT}
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/runs/crons", {**ok, "schedule": "61 * * * *"}, 422, "Bad minute"),
        ("/runs/crons", {**ok, "schedule": "* * * *"}, 422, "5"),
        ("/runs/crons", {**ok, "schedule": "0 * * * * *"}, 422, "6 field"),
        ("/runs/crons", {**ok, "schedule": "0 0 31 2 *"}, 422, "day-of-month"),
        ("/runs/crons", {**ok, "timezone": "Mars/Olympus_Mons"}, 422, "timezone"),
        ("/runs/crons", {**ok, "end_time": past}, 422, "past"),
        ("/runs/crons", {**ok, "input": {"ticket": 5, "customer_id": "c-001"}}, 422, "ticket"),
        ("/runs/crons", {k: v for k, v in ok.items() if k != "input"}, 422, "input"),
        ("/runs/crons", {k: v for k, v in ok.items() if k != "schedule"}, 422, "schedule"),
        ("/runs/crons", {**ok, "multitask_strategy": "sometimes"}, 422, "multitask_strategy"),
        ("/runs/crons", {**ok, "metadata": {"n": 2**70}}, 422, "64-bit"),
        ("/runs/crons", {**ok, "assistant_id": "no_such_graph"}, 404, "no_such_graph"),
        (f"/threads/{uuid.uuid4()}/runs/crons", ok, 404, "thread"),
        (f"/threads/{thread_id}/runs/crons", {**ok, "on_run_completed": "keep"}, 422, "stateless"),
    ]
    for path, body, status, words in cases:
        assert words in expect_error(await http.post(path, json=body), status), (path, body)
    with pytest.raises(UnprocessableEntityError):
        await client.crons.create("support_triage", schedule="every day", input=INPUT)
    assert await _stored(crons) == before

    cron: Any = await client.crons.create_for_thread(
        thread_id, "support_triage", schedule=YEARLY, input=INPUT
    )
    for change in ({"schedule": "0 0 * *"}, {"timezone": "Nowhere/Else"}, {"end_time": past}):
        assert expect_error(await http.patch(f"/runs/crons/{cron['cron_id']}", json=change), 422)
    assert (await client.crons.search(thread_id=thread_id))[0] == cron
    assert expect_error(await http.patch(f"/runs/crons/{uuid.uuid4()}", json={"enabled": False}), 404)
    await client.crons.delete(cron["cron_id"])


async def test_another_tenant_sees_and_touches_nothing(
    service: ServiceProcess, client: LangGraphClient, other: LangGraphClient
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    cron: Any = await client.crons.create_for_thread(
        thread_id, "support_triage", schedule=YEARLY, input=INPUT
    )
    cron_id = cron["cron_id"]
    assert await other.crons.search() == [] and await other.crons.count() == 0
    assert await other.crons.search(thread_id=thread_id) == []
    with pytest.raises(NotFoundError):
        await other.crons.update(cron_id, enabled=False)
    with pytest.raises(NotFoundError):
        await other.crons.delete(cron_id)
    with pytest.raises(NotFoundError):
        await other.crons.create_for_thread(thread_id, "support_triage", schedule=YEARLY, input=INPUT)
    mine: Any = await other.crons.create("support_triage", schedule=YEARLY, input=INPUT)
    assert [c["cron_id"] for c in await other.crons.search()] == [mine["cron_id"]]
    assert mine["cron_id"] not in [c["cron_id"] for c in await client.crons.search(limit=1000)]
    with pytest.raises(NotFoundError):
        await client.crons.delete(mine["cron_id"])

    async with get_client(url=service.url, api_key=VIEWER_KEY) as viewer:
        assert cron_id in [c["cron_id"] for c in await viewer.crons.search(limit=1000)]
        assert await viewer.crons.count(thread_id=thread_id) == 1
        with pytest.raises(PermissionDeniedError):
            await viewer.crons.create("support_triage", schedule=YEARLY, input=INPUT)
        with pytest.raises(PermissionDeniedError):
            await viewer.crons.delete(cron_id)
    assert (await client.crons.search(thread_id=thread_id))[0] == cron
    await client.crons.delete(cron_id)
    await other.crons.delete(mine["cron_id"])


async def test_delete_stops_future_fires(client: LangGraphClient, crons: CronStore) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    gone: Any = await client.crons.create_for_thread(
        thread_id, "support_triage", schedule=YEARLY, input=INPUT
    )
    sentinel: Any = await client.crons.create_for_thread(
        thread_id, "support_triage", schedule=YEARLY, input=INPUT
    )
    await client.crons.delete(gone["cron_id"])
    with pytest.raises(NotFoundError):
        await client.crons.delete(gone["cron_id"])
    assert [c["cron_id"] for c in await client.crons.search(thread_id=thread_id)] == [sentinel["cron_id"]]
    # Both "due now": the deleted one is no longer in the due set, so nothing makes it due.
    assert not await _make_due(crons, gone["cron_id"])
    assert await _make_due(crons, sentinel["cron_id"])
    await _one_done_run(client, thread_id, sentinel["cron_id"])
    runs = await client.runs.list(thread_id)
    assert [r["metadata"]["cron_id"] for r in runs] == [sentinel["cron_id"]]
    await client.crons.delete(sentinel["cron_id"])


async def test_a_cron_whose_thread_is_gone_is_deleted(client: LangGraphClient, crons: CronStore) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    cron: Any = await client.crons.create_for_thread(
        thread_id, "support_triage", schedule=YEARLY, input=INPUT
    )
    await client.threads.delete(thread_id)
    await _make_due(crons, cron["cron_id"])

    async def deleted() -> bool:
        return await client.crons.count(thread_id=thread_id) == 0

    await _eventually(deleted, "the scheduler to delete the cron of a deleted thread")
    assert await client.threads.search(ids=[thread_id]) == []


async def test_claim_and_advance_are_compare_and_set(redis_client: aredis.Redis, key_prefix: str) -> None:
    """The store's steps on their own (on a prefix no scheduler reads): one live lease per
    fire, advance only from the claimed score, an expired lease taken over with its fire
    time."""
    crons = CronStore(redis_client, prefix=key_prefix)
    cron_id, due = str(uuid.uuid4()), 1_000_000
    await crons.create({"cron_id": cron_id, "tenant": "t", "created_at": 1, "enabled": True}, due)
    assert await crons.claim(cron_id, due, due, owner="a", now=due, lease_ms=1_000) == due
    assert await crons.claim(cron_id, due, due + 5, owner="b", now=due + 999, lease_ms=1_000) is None
    assert not await crons.advance(cron_id, due - 1, due + 60_000)
    # a's lease expired: b takes the fire over, with a's fire time (a may have created its run).
    assert await crons.claim(cron_id, due, due + 5, owner="b", now=due + 1_001, lease_ms=1_000) == due
    assert await crons.advance(cron_id, due, due + 60_000)
    assert await crons.claim(cron_id, due, due, owner="c", now=due + 2_000, lease_ms=1_000) is None
    assert await crons.delete(cron_id, "t")
    assert await crons.claim(cron_id, due + 60_000, due, owner="c", now=due, lease_ms=1_000) is None
    assert await redis_client.zscore(crons.due_key, cron_id) is None


async def test_a_tenants_crons_go_with_it(redis_client: aredis.Redis, key_prefix: str) -> None:
    crons = CronStore(redis_client, prefix=key_prefix)
    for tenant, n in (("gone", 3), ("stays", 1)):
        for _ in range(n):
            await crons.create({"cron_id": str(uuid.uuid4()), "tenant": tenant, "created_at": 1}, now_ms())
    assert await crons.delete_tenant("gone") == 3
    stays = [m.decode() for m in await redis_client.zrange(crons.index("stays"), 0, -1)]
    assert await redis_client.keys(f"{key_prefix}cron:*") == [crons.key(stays[0]).encode()]
    assert await redis_client.zrange(crons.due_key, 0, -1) == [stays[0].encode()]
    assert await redis_client.zcard(crons.index("gone")) == 0


async def test_a_repeated_fire_creates_no_second_run(
    service: ServiceProcess, redis_url: str, prefix: str, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    """What a scheduler that died between creating a fire's run and advancing the cron
    leaves behind: the next attempt at the same fire finds the run and creates none."""
    settings = Settings(
        redis_url=redis_url,
        key_prefix=prefix,
        llm_base_url=fake_llm.base_url,
        nearest_examples=False,
        data_dir=tmp_path,
        workers=0,
    )
    async with open_engine(settings, workers=0) as engine:
        thread_id = str(uuid.uuid4())
        await engine.store.create_thread(thread_id, {})
        payload = {"assistant_id": "support_triage", "input": INPUT, "multitask_strategy": "enqueue"}
        base = {"tenant": "default", "metadata": {}, "payload": payload, "on_run_completed": "keep"}
        for cron in (
            {**base, "cron_id": str(uuid.uuid4()), "thread_id": thread_id},
            {**base, "cron_id": str(uuid.uuid4()), "thread_id": None},
        ):
            first = await fire(engine, cron, 1_700_000_000_000)
            again = await fire(engine, cron, 1_700_000_000_000)
            assert first[2] is True and again == (first[0], first[1], False)
            assert first[1] == fire_ids(cron["cron_id"], 1_700_000_000_000)[0]
            runs = await engine.store.list_runs(first[0], limit=10)
            assert [r["run_id"] for r in runs if r["metadata"].get("cron_id") == cron["cron_id"]] == [
                first[1]
            ]


async def test_two_api_processes_fire_a_due_cron_exactly_once(
    service: ServiceProcess, client: LangGraphClient, crons: CronStore, tmp_path: Path
) -> None:
    second = ServiceProcess(service.env, tmp_path / "second.log")
    second.start()
    try:
        threads = [(await client.threads.create())["thread_id"] for _ in range(10)]
        made: list[Any] = [
            await client.crons.create_for_thread(t, "support_triage", schedule=YEARLY, input=INPUT)
            for t in threads
        ]
        # Due a moment from now rather than now: each scheduler sleeps until the earliest
        # due time, so both wake at that instant and race for the same fires.
        due = now_ms() + 1_500
        for cron in made:
            assert await _make_due(crons, cron["cron_id"], due)
        for thread_id, cron in zip(threads, made, strict=True):
            await _one_done_run(client, thread_id, cron["cron_id"])
            # Advanced past this fire: no scheduler can claim it again.
            await _eventually(lambda c=cron: _advanced_past(crons, c["cron_id"], due), "the cron to advance")
        for thread_id, cron in zip(threads, made, strict=True):
            assert len(await _cron_runs(client, thread_id, cron["cron_id"])) == 1
            await client.crons.delete(cron["cron_id"])
    finally:
        second.stop()


async def test_a_fire_missed_while_down_fires_once_after_a_restart(
    service: ServiceProcess, crons: CronStore
) -> None:
    async with get_client(url=service.url, api_key=service.api_key) as client:
        thread_id = (await client.threads.create())["thread_id"]
        cron: Any = await client.crons.create_for_thread(
            thread_id, "support_triage", schedule=YEARLY, input=INPUT
        )
    service.stop()
    # While nothing runs, three yearly fires pass: the one three years ago is the cron's
    # due entry; after the restart it fires once, for the most recent of them.
    this_year = datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)
    missed = int(this_year.replace(year=this_year.year - 3).timestamp() * 1000)
    assert await _make_due(crons, cron["cron_id"], missed)
    service.start()
    async with get_client(url=service.url, api_key=service.api_key) as client:
        run = await _one_done_run(client, thread_id, cron["cron_id"])
        assert run["run_id"] == fire_ids(cron["cron_id"], int(this_year.timestamp() * 1000))[0]
        await _eventually(lambda: _advanced_past(crons, cron["cron_id"], now_ms()), "the next fire")
        assert len(await _cron_runs(client, thread_id, cron["cron_id"])) == 1
        await client.crons.delete(cron["cron_id"])
