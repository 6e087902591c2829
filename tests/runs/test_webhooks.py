"""Run-completion webhooks on an in-process engine (one worker, one sender) and a real
HTTP receiver on loopback: what is sent, how it is signed, what is retried, and that the
delivery is written in the same step as the run's outcome."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis
from pydantic import SecretStr

from core.settings import Settings
from runs.engine import Engine, open_engine
from runs.payload import RunPayload
from runs.webhooks import backoff_s, sign, verify_signature
from store.runs import RunStore
from store.webhooks import WebhookStore
from tests.fakes.webhook_receiver import WebhookReceiver

HERE = Path(__file__).parent
SECRET = "whsec_test_0123456789abcdef"


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 20) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        if result := await check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(0.02)


def _settings(redis_url: str, key_prefix: str, tmp_path: Path, **overrides: Any) -> Settings:
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps({"graphs": {"hooks": str(HERE / "webhook_graph.py") + ":graph"}}))
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "config": config,
        "data_dir": tmp_path,
        "local_llm": False,
        "nearest_examples": False,
        "lease_ms": 1500,
        "shutdown_grace_s": 0,
        "webhook_secret": SecretStr(SECRET),
        "webhook_timeout_s": 1.0,
        "webhook_retry_base_s": 0.05,
        "webhook_retry_max_s": 0.2,
        "webhook_max_attempts": 4,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
async def engine(
    redis_url: str, key_prefix: str, tmp_path: Path, receiver: WebhookReceiver
) -> AsyncIterator[Engine]:
    """Stopped before the receiver (whose stop blocks the loop a moment)."""
    async with open_engine(_settings(redis_url, key_prefix, tmp_path)) as e:
        yield e


async def _create(
    store: RunStore, input: dict[str, Any], webhook: str | None, *, thread_id: str | None = None
) -> tuple[str, str]:
    tid, rid = thread_id or str(uuid.uuid4()), str(uuid.uuid4())
    payload = RunPayload(graph_id="hooks", assistant_id="hooks", input=input, webhook=webhook)
    await store.create_run(
        run_id=rid, thread_id=tid, graph_id="hooks", assistant_id="hooks", metadata={"who": "test"},
        payload=payload.model_dump(mode="json", exclude_defaults=True), strategy="enqueue",
        if_not_exists="create", is_resume=False,
    )  # fmt: skip
    return tid, rid


async def _delivery(engine: Engine, tid: str, rid: str, status: str) -> dict[str, Any]:
    """The run's ``webhook_delivery`` once it reaches ``status``."""

    async def check() -> dict[str, Any] | None:
        run = await engine.store.get_run(tid, rid)
        found = (run or {}).get("webhook_delivery")
        return found if found and found["status"] == status else None

    result: dict[str, Any] = await until(check)
    return result


async def _nothing_left(engine: Engine) -> None:
    """No delivery is pending anywhere: not in the stream, not scheduled for a retry."""
    keys = engine.store.keys
    assert await engine.redis.xlen(keys.webhooks) == 0
    assert await engine.redis.zcard(keys.webhooks_due) == 0
    assert await engine.redis.keys(keys.webhook("*")) == []


def test_signatures_verify_and_refuse_what_they_should() -> None:
    body = b'{"run_id":"r"}'
    header = sign(SECRET, body)
    assert verify_signature(SECRET, header, body)
    assert not verify_signature(SECRET, header, body + b" ")
    assert not verify_signature("another-secret", header, body)
    assert not verify_signature(SECRET, None, body)
    assert not verify_signature(SECRET, "t=abc,v1=00", body)
    old = sign(SECRET, body, timestamp=int(time.time()) - 600)
    assert not verify_signature(SECRET, old, body, tolerance_s=300)
    assert verify_signature(SECRET, old, body, tolerance_s=900)
    # Several v1 values (a receiver rotating secrets): any one that matches will do.
    rotated = sign(SECRET, body)
    t = rotated.split(",")[0]
    assert verify_signature(SECRET, f"{t},v1={'0' * 64},{rotated.split(',')[1]}", body)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)]:
        delays = [backoff_s(attempt, 1.0, 30.0) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


async def test_success_is_delivered_signed_with_the_final_values(
    engine: Engine, receiver: WebhookReceiver
) -> None:
    url = receiver.url + "/ok?token=abc"
    tid, rid = await _create(engine.store, {"n": 1}, url)
    delivery = await _delivery(engine, tid, rid, "delivered")
    assert delivery == {"status": "delivered", "attempts": 1, "last_error": None}
    [request] = receiver.received("/ok?token=abc")
    assert request.status == 200
    assert request.headers["x-interlock-event"] == "run.completed"
    assert request.headers["x-interlock-delivery"] == rid
    assert request.headers["content-type"] == "application/json"
    assert verify_signature(SECRET, request.headers["x-interlock-signature"], request.body)
    assert not verify_signature("wrong", request.headers["x-interlock-signature"], request.body)
    body = request.json()
    assert body["run_id"] == rid and body["thread_id"] == tid and body["assistant_id"] == "hooks"
    assert body["status"] == "success"
    assert body["values"] == {"n": 2}
    assert body["error"] is None
    assert body["metadata"] == {"who": "test"}
    assert body["kwargs"]["webhook"] == url and body["kwargs"]["input"] == {"n": 1}
    assert body["created_at"] <= body["updated_at"] <= body["webhook_sent_at"]
    await _nothing_left(engine)


async def test_failed_paused_and_cancelled_runs_deliver_too(
    engine: Engine, receiver: WebhookReceiver
) -> None:
    failed = await _create(engine.store, {"fail": True}, receiver.url + "/failed")
    paused = await _create(engine.store, {"pause": True}, receiver.url + "/paused")
    slow = await _create(engine.store, {"sleep": 30}, receiver.url + "/cancelled")

    async def running() -> bool:
        run = await engine.store.get_run(*slow)
        return run is not None and run["status"] == "running"

    await until(running)
    await engine.store.cancel_run(*slow)
    for tid, rid in (failed, paused, slow):
        await _delivery(engine, tid, rid, "delivered")

    [error] = receiver.received("/failed")
    body = error.json()
    assert body["status"] == "error"
    assert body["error"]["error"] == "RuntimeError"
    assert "failed on purpose" in body["error"]["message"]

    [interrupt] = receiver.received("/paused")
    body = interrupt.json()
    assert body["status"] == "interrupted" and body["error"] is None
    assert [i["value"] for i in body["interrupts"]] == [{"question": "go on?"}]
    assert body["values"] == {"pause": True}

    [cancelled] = receiver.received("/cancelled")
    body = cancelled.json()
    assert body["run_id"] == slow[1] and body["status"] == "interrupted"
    for request in (error, interrupt, cancelled):
        assert verify_signature(SECRET, request.headers["x-interlock-signature"], request.body)
    await _nothing_left(engine)


async def test_a_run_preempted_by_multitask_interrupt_delivers(
    engine: Engine, receiver: WebhookReceiver
) -> None:
    tid, first = await _create(engine.store, {"sleep": 30}, receiver.url + "/first")

    async def running() -> bool:
        run = await engine.store.get_run(tid, first)
        return run is not None and run["status"] == "running"

    await until(running)
    second = str(uuid.uuid4())
    payload = RunPayload(
        graph_id="hooks", assistant_id="hooks", input={"n": 1, "sleep": 0}, webhook=receiver.url + "/second"
    )
    await engine.store.create_run(
        run_id=second, thread_id=tid, graph_id="hooks", assistant_id="hooks", metadata={},
        payload=payload.model_dump(mode="json"), strategy="interrupt", if_not_exists="reject", is_resume=False,
    )  # fmt: skip
    await _delivery(engine, tid, first, "delivered")
    await _delivery(engine, tid, second, "delivered")
    assert [r.json()["status"] for r in receiver.received("/first")] == ["interrupted"]
    assert [r.json()["values"] for r in receiver.received("/second")] == [{"n": 2, "sleep": 0}]


async def test_a_run_that_times_out_delivers(
    redis_url: str, key_prefix: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with open_engine(_settings(redis_url, key_prefix, tmp_path, run_timeout_s=0.3)) as engine:
        tid, rid = await _create(engine.store, {"sleep": 30}, receiver.url + "/slow")
        await _delivery(engine, tid, rid, "delivered")
    [request] = receiver.received("/slow")
    body = request.json()
    assert body["status"] == "timeout" and body["error"]["error"] == "TimeoutError"


async def test_5xx_is_retried_until_delivered_under_one_delivery_id(
    engine: Engine, receiver: WebhookReceiver
) -> None:
    receiver.script("/flaky", [{"status": 500}, {"status": 503}])
    tid, rid = await _create(engine.store, {"n": 0}, receiver.url + "/flaky")
    delivery = await _delivery(engine, tid, rid, "delivered")
    assert delivery == {"status": "delivered", "attempts": 3, "last_error": None}
    requests = receiver.received("/flaky")
    assert [r.status for r in requests] == [500, 503, 200]
    assert {r.headers["x-interlock-delivery"] for r in requests} == {rid}
    assert all(verify_signature(SECRET, r.headers["x-interlock-signature"], r.body) for r in requests)
    assert all(r.json()["values"] == {"n": 1} for r in requests)
    await _nothing_left(engine)


async def test_other_4xx_is_not_retried(engine: Engine, receiver: WebhookReceiver) -> None:
    receiver.answer("/bad", 400)
    tid, rid = await _create(engine.store, {"n": 0}, receiver.url + "/bad")
    delivery = await _delivery(engine, tid, rid, "failed")
    assert delivery == {"status": "failed", "attempts": 1, "last_error": "HTTP 400"}
    assert len(receiver.received("/bad")) == 1
    await _nothing_left(engine)


async def test_gives_up_after_max_attempts(engine: Engine, receiver: WebhookReceiver) -> None:
    receiver.answer("/down", 503)
    tid, rid = await _create(engine.store, {"n": 0}, receiver.url + "/down")
    delivery = await _delivery(engine, tid, rid, "failed")
    assert delivery == {"status": "failed", "attempts": 4, "last_error": "HTTP 503"}
    assert len(receiver.received("/down")) == 4
    await _nothing_left(engine)


async def test_an_unreachable_receiver_is_retried_until_it_is_back(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    down = WebhookReceiver()  # not started: its port refuses connections
    settings = _settings(redis_url, key_prefix, tmp_path, webhook_max_attempts=1000)
    async with open_engine(settings) as engine:
        tid, rid = await _create(engine.store, {"n": 0}, down.url + "/back")
        retrying = await _delivery(engine, tid, rid, "retrying")
        assert "ConnectError" in retrying["last_error"]
        down.start()
        try:
            delivery = await _delivery(engine, tid, rid, "delivered")
            assert delivery["attempts"] >= 2
            assert [r.status for r in down.received("/back")] == [200]
        finally:
            down.stop()


async def test_a_run_without_webhook_writes_no_delivery(engine: Engine) -> None:
    tid, rid = await _create(engine.store, {"n": 0}, None)
    end = await engine.store.wait_for_end(tid, rid)
    assert end is not None and end["status"] == "success"
    run = await engine.store.get_run(tid, rid)
    assert run is not None and "webhook_delivery" not in run
    assert await engine.redis.xlen(engine.store.keys.webhooks) == 0


async def test_the_delivery_is_written_in_the_same_step_as_the_outcome(
    redis_url: str, key_prefix: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """No worker or sender here: the store's own scripts, step by step."""
    async with open_engine(_settings(redis_url, key_prefix, tmp_path), workers=0) as engine:
        store, keys = engine.store, engine.store.keys
        tid, rid = await _create(store, {"n": 0}, receiver.url + "/x")
        claim = await store.claim_run(tid, rid, "w1")
        assert claim is not None
        token = claim.token
        finish: dict[str, Any] = {
            "thread_id": tid, "run_id": rid, "message_id": "", "run_status": "success",
            "thread_status": "idle", "values": {"n": 1}, "interrupts": {},
            "end": {"status": "success", "values": {"n": 1}},
        }  # fmt: skip
        # A worker that lost its lease records nothing, and so no delivery either.
        assert not await store.finish_run(**finish, token=f"{rid}:99")
        assert await engine.redis.xlen(keys.webhooks) == 0
        assert await store.finish_run(**finish, token=token)
        [(_, fields)] = await engine.redis.xrange(keys.webhooks)
        assert fields[b"r"].decode() == rid and fields[b"url"].decode() == receiver.url + "/x"
        assert fields[b"status"] == b"success" and json.loads(fields[b"v"]) == {"n": 1}
        run = await store.get_run(tid, rid)
        assert run is not None and run["webhook_delivery"]["status"] == "pending"
        # A pending run cancelled before it ever ran has its delivery written by the cancel.
        tid2, rid2 = await _create(store, {"n": 0}, receiver.url + "/y", thread_id=tid)
        await _create(store, {"n": 0}, None, thread_id=tid)
        await store.cancel_run(tid2, rid2)
        entries = await engine.redis.xrange(keys.webhooks)
        assert [f[b"r"].decode() for _, f in entries] == [rid, rid2]
        assert entries[1][1][b"status"] == b"interrupted"
        # A rolled-back run is deleted: it sends nothing.
        _, rid3 = await _create(store, {"n": 0}, receiver.url + "/z", thread_id=tid)
        await store.cancel_run(tid, rid3, "rollback")
        assert await store.get_run(tid, rid3) is None
        assert await engine.redis.xlen(keys.webhooks) == 2


async def test_the_secret_is_made_once_in_redis_when_none_is_configured(
    redis_url: str, key_prefix: str, tmp_path: Path, receiver: WebhookReceiver, redis_client: aredis.Redis
) -> None:
    settings = _settings(redis_url, key_prefix, tmp_path, webhook_secret=None)
    async with open_engine(settings) as engine:
        tid, rid = await _create(engine.store, {"n": 0}, receiver.url + "/s")
        await _delivery(engine, tid, rid, "delivered")
        assert engine.webhooks is not None
        secret = engine.webhooks.secret
    assert secret.startswith("whsec_") and len(secret) > 40
    # Any other process (here: another client) gets the same one.
    assert await WebhookStore(redis_client, prefix=key_prefix).secret() == secret
    [request] = receiver.received("/s")
    assert verify_signature(secret, request.headers["x-interlock-signature"], request.body)
