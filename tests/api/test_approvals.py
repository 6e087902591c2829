"""Approvals through the API, against the real service: parallel approvals resumed by id,
roles and groups, edits validated by the graph's model, double answers, other tenants,
the audit trail, and deadlines enforced across a restart of every process."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from runs.webhooks import verify_signature
from tests.api.support import expect_error
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.service import ServiceProcess

HERE = Path(__file__).parent
KEYS: dict[str, dict[str, Any]] = {
    "admin": {"key": "acme-admin-000000000000001", "roles": ["admin"]},
    "approver": {"key": "acme-approver-0000000000001", "roles": ["approver"], "name": "ann"},
    "legal": {"key": "acme-legal-000000000000001", "roles": ["approver"], "groups": ["legal"], "name": "lee"},
    "leads": {"key": "acme-leads-000000000000001", "roles": ["approver"], "groups": ["leads"]},
    "viewer": {"key": "acme-viewer-00000000000001", "roles": ["viewer"]},
    "operator": {"key": "acme-operator-0000000000001", "roles": ["operator"]},
}
GLOBEX = "globex-admin-0000000000001"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """Where approval notifications go (a real HTTP server on loopback)."""
    r = WebhookReceiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def service(
    redis_url: str, fake_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("approvals")
    graphs = {
        name: f"{HERE / 'approval_graphs.py'}:{name}_graph"
        for name in ("contract", "escalating", "expiring", "reviewed")
    }
    (root / "langgraph.json").write_text(json.dumps({"graphs": graphs}))
    keys = [{"tenant": "acme", **k} for k in KEYS.values()] + [
        {"key": GLOBEX, "tenant": "globex", "roles": ["admin"]}
    ]
    proc = ServiceProcess(
        {
            "REDIS_URL": redis_url,
            "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
            "INTERLOCK_LLM_BASE_URL": fake_llm.base_url,
            "INTERLOCK_NEAREST_EXAMPLES": "false",
            "INTERLOCK_DATA_DIR": str(root / "data"),
            "INTERLOCK_CONFIG": str(root / "langgraph.json"),
            "INTERLOCK_API_KEYS": json.dumps(keys),
            "INTERLOCK_APPROVALS_WEBHOOK_URL": f"{receiver.url}/approvals",
            "INTERLOCK_WEBHOOK_SECRET": "whsec_test_approvals",
        },
        root / "service.log",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _http(service: ServiceProcess, who: str) -> httpx.AsyncClient:
    key = GLOBEX if who == "globex" else KEYS[who]["key"]
    return httpx.AsyncClient(base_url=service.url, headers={"x-api-key": key}, timeout=30)


@pytest.fixture
async def sdk(service: ServiceProcess) -> AsyncIterator[LangGraphClient]:
    async with get_client(url=service.url, api_key=KEYS["operator"]["key"]) as c:
        yield c


async def _start(sdk: LangGraphClient, graph: str, amount: float = 120.0) -> str:
    thread = await sdk.threads.create()
    result = await sdk.runs.wait(thread["thread_id"], graph, input={"amount": amount})
    assert isinstance(result, dict) and result.get("__interrupt__"), result
    return str(thread["thread_id"])


async def _approvals(http: httpx.AsyncClient, thread_id: str, **params: Any) -> list[dict[str, Any]]:
    r = await http.get("/approvals", params={"status": "all", "limit": 500, **params})
    assert r.status_code == 200, r.text
    return [a for a in r.json() if a["thread_id"] == thread_id]


async def _until(check: Any, timeout_s: float = 30.0) -> Any:
    for _ in range(int(timeout_s / 0.1)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def test_parallel_approvals_are_answered_by_id_each_once(
    service: ServiceProcess, sdk: LangGraphClient
) -> None:
    tid = await _start(sdk, "contract")
    async with (
        _http(service, "approver") as ann,
        _http(service, "legal") as lee,
        _http(service, "viewer") as vic,
    ):
        pending = await _approvals(ann, tid, status="pending")
        by_node = {a["node"]: a for a in pending}
        assert set(by_node) == {"legal", "finance"}
        legal, finance = by_node["legal"], by_node["finance"]
        assert legal["assignee"] == "group:legal" and finance["assignee"] == "approver"
        assert finance["options"] == ["approve", "reject", "edit"] and finance["editable"] == {
            "amount": 120.0
        }
        assert [a["node"] for a in await _approvals(ann, tid, mine=True)] == ["finance"]
        assert [a["node"] for a in await _approvals(ann, tid, assignee="group:legal")] == ["legal"]

        detail = (await ann.get(f"/approvals/{finance['approval_id']}")).json()
        assert detail["may_decide"] is True and detail["routes"]["edit"] == "join"
        assert detail["thread"]["status"] == "interrupted" and detail["run"]["status"] == "interrupted"
        assert sorted(detail["path"]["waiting"]) == ["finance", "legal"]
        assert detail["state"]["amount"] == 120.0

        # Wrong role or group: 403; nothing written.
        expect_error(
            await vic.post(f"/approvals/{finance['approval_id']}/decision", json={"decision": "approve"}), 403
        )
        assert "group:legal" in expect_error(
            await ann.post(f"/approvals/{legal['approval_id']}/decision", json={"decision": "approve"}), 403
        )
        # Bad answers: 422, nothing written.
        for bad in (
            {"decision": "edit"},
            {"decision": "edit", "edits": {"amount": -5}},
            {"decision": "approve", "edits": {"amount": 5}},
            {"decision": "maybe"},
            {"decision": "approve", "extra": 1},
        ):
            expect_error(await ann.post(f"/approvals/{finance['approval_id']}/decision", json=bad), 422)
        assert "not an option" in expect_error(
            await lee.post(
                f"/approvals/{legal['approval_id']}/decision",
                json={"decision": "edit", "edits": {"amount": 1}},
            ),
            422,
        )
        assert all(a["status"] == "pending" for a in await _approvals(ann, tid))

        r = await ann.post(
            f"/approvals/{finance['approval_id']}/decision",
            json={"decision": "edit", "edits": {"amount": 100}, "comment": "cap at 100"},
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["approval"]["status"] == "decided" and answer["run"]["run_id"]
        assert "continues with 'join'" in answer["next"]
        assert answer["approval"]["decision"]["decided_by"].startswith("ann")
        # The same approval again: 409, whoever asks.
        again = await lee.post(f"/approvals/{finance['approval_id']}/decision", json={"decision": "reject"})
        assert "already decided" in expect_error(again, 409)

        await sdk.runs.join(tid, answer["run"]["run_id"])
        assert (await sdk.threads.get(tid))["status"] == "interrupted"  # legal still waits
        r = await lee.post(f"/approvals/{legal['approval_id']}/decision", json={"decision": "approve"})
        assert r.status_code == 200, r.text
        await sdk.runs.join(tid, r.json()["run"]["run_id"])
        state = await sdk.threads.get_state(tid)
        assert state["values"]["result"] == "signed and paid 100.00"
        assert (await sdk.threads.get(tid))["status"] == "idle"

        audit = (await ann.get(f"/approvals/{finance['approval_id']}/audit")).json()
        assert [e["event"] for e in audit] == ["requested", "decided"]
        assert audit[0]["request"]["summary"] == "Pay 120.00"
        assert audit[1]["decision"]["edits"] == {"amount": 100.0} and audit[1]["actor"].startswith("ann")
        export = await ann.get("/audit/export")
        lines = [json.loads(line) for line in export.text.splitlines()]
        mine = [e for e in lines if e["thread_id"] == tid]
        assert len(mine) == 4 and all("entry_id" in e for e in mine)
        rest = await ann.get("/audit/export", params={"after": lines[-1]["entry_id"]})
        assert rest.text == ""


async def test_another_tenant_sees_nothing(service: ServiceProcess, sdk: LangGraphClient) -> None:
    tid = await _start(sdk, "escalating")
    async with _http(service, "admin") as acme, _http(service, "globex") as globex:
        approval = (await _approvals(acme, tid))[0]
        assert await _approvals(globex, tid) == []
        expect_error(await globex.get(f"/approvals/{approval['approval_id']}"), 404)
        expect_error(await globex.get(f"/approvals/{approval['approval_id']}/audit"), 404)
        expect_error(
            await globex.post(f"/approvals/{approval['approval_id']}/decision", json={"decision": "approve"}),
            404,
        )
        expect_error(await acme.get("/approvals/not-an-approval"), 404)
        assert (await acme.get(f"/approvals/{approval['approval_id']}")).json()["status"] == "pending"
        # Cleanup: decide it so its deadline does not fire during other tests.
        assert (
            await acme.post(f"/approvals/{approval['approval_id']}/decision", json={"decision": "approve"})
        ).status_code == 200


async def test_a_protocol_resume_decides_the_approval_too(
    service: ServiceProcess, sdk: LangGraphClient
) -> None:
    tid = await _start(sdk, "escalating")
    async with _http(service, "approver") as ann:
        approval = (await _approvals(ann, tid))[0]
        result = await sdk.runs.wait(tid, "escalating", command={"resume": {"decision": "reject"}})
        assert isinstance(result, dict) and result["result"] == "done: reject"
        decided = (await ann.get(f"/approvals/{approval['approval_id']}")).json()
        assert decided["status"] == "decided" and decided["decision"]["decision"] == "reject"
        assert decided["decision"]["decided_by"] == "static (static-5)"  # the operator's key, unnamed
        expect_error(
            await ann.post(f"/approvals/{approval['approval_id']}/decision", json={"decision": "approve"}),
            409,
        )


def _notices(receiver: WebhookReceiver, thread_id: str) -> list[dict[str, Any]]:
    found = []
    for r in receiver.received("/approvals"):
        assert verify_signature("whsec_test_approvals", r.headers.get("x-interlock-signature"), r.body)
        body = r.json()
        assert r.headers["x-interlock-event"] == body["event"]
        if body["thread_id"] == thread_id:
            found.append(body)
    return found


async def test_deadlines_escalate_and_branch_across_a_restart(
    service: ServiceProcess, sdk: LangGraphClient, receiver: WebhookReceiver
) -> None:
    escalating = await _start(sdk, "escalating")
    expiring = await _start(sdk, "expiring")
    service.stop()  # every process: the deadlines pass while nothing runs
    await asyncio.sleep(2.5)
    service.start()
    async with _http(service, "approver") as ann, _http(service, "leads") as leads:

        async def escalated() -> dict[str, Any] | None:
            found = (await _approvals(ann, escalating))[0]
            return found if found["assignee"] == "group:leads" else None

        approval = await _until(escalated)
        assert approval["status"] == "pending" and approval["escalations"] == 1
        audit = (await ann.get(f"/approvals/{approval['approval_id']}/audit")).json()
        assert [e["event"] for e in audit] == ["requested", "escalated"]
        assert audit[1]["to_assignee"] == "group:leads" and audit[1]["actor"] == "system:deadline"
        # Now only the leads may decide it.
        expect_error(
            await ann.post(f"/approvals/{approval['approval_id']}/decision", json={"decision": "approve"}),
            403,
        )

        # People hear of it: requested, reminded, escalated; signed like every webhook.
        async def announced() -> list[str] | None:
            events = sorted(n["event"] for n in _notices(receiver, escalating))
            return events if "approval.escalated" in events else None

        events = await _until(announced)
        assert events == ["approval.escalated", "approval.reminder", "approval.requested"]
        escalation = next(n for n in _notices(receiver, escalating) if n["event"] == "approval.escalated")
        assert (
            escalation["assignee"] == "group:leads" and escalation["approval_id"] == approval["approval_id"]
        )
        r = await leads.post(f"/approvals/{approval['approval_id']}/decision", json={"decision": "approve"})
        assert r.status_code == 200, r.text
        await sdk.runs.join(escalating, r.json()["run"]["run_id"])
        assert (await sdk.threads.get_state(escalating))["values"]["result"] == "done: approve"

        async def expired() -> bool:
            state = await sdk.threads.get_state(expiring)
            return state["values"].get("result") == "expired"

        await _until(expired)
        timed_out = (await _approvals(ann, expiring))[0]
        assert timed_out["status"] == "decided" and timed_out["decision"]["decided_by"] == "system:deadline"
        assert timed_out["decision"]["decision"] == "timeout"
        runs = await sdk.runs.list(expiring)
        assert len(runs) == 2  # the start, and exactly one resume by the deadline


async def test_a_low_confidence_decision_is_an_approval_with_the_models_suggestion(
    service: ServiceProcess, sdk: LangGraphClient
) -> None:
    thread = await sdk.threads.create()
    tid = thread["thread_id"]
    paused = await sdk.runs.wait(tid, "reviewed", input={"text": "I want a refund"})
    assert isinstance(paused, dict) and paused["__interrupt__"]
    async with _http(service, "approver") as ann:
        approval = (await _approvals(ann, tid))[0]
        assert approval["node"] == "route_it_review" and approval["options"] == ["approve", "edit"]
        assert approval["suggestion"]["branch"] == "refund" and approval["suggestion"]["method"] == "llm"
        detail = (await ann.get(f"/approvals/{approval['approval_id']}")).json()
        assert [d["method"] for d in detail["decisions"]] == ["llm"]
        bad = {"decision": "edit", "edits": {"branch": "nowhere"}}
        expect_error(await ann.post(f"/approvals/{approval['approval_id']}/decision", json=bad), 422)
        r = await ann.post(
            f"/approvals/{approval['approval_id']}/decision",
            json={"decision": "edit", "edits": {"branch": "answer"}, "comment": "only a question"},
        )
        assert r.status_code == 200, r.text
        await sdk.runs.join(tid, r.json()["run"]["run_id"])
        state = (await sdk.threads.get_state(tid))["values"]
        assert state["handled_by"] == "answer_desk"
        assert (state["decision"]["chosen"], state["decision"]["model_choice"]) == ("answer", "refund")
        logged = (await ann.get("/decisions", params={"thread_id": tid})).json()
        human, model = logged  # newest first
        assert (human["method"], human["chosen"], human["overrides"]) == ("human", "answer", model["id"])
        assert human["decided_by"].startswith("ann") and model["chosen"] == "refund"
