"""Authentication, tenants and roles, against the real service with real keys.

Tenant ``acme`` has one key per role; tenant ``globex`` has an operator. Everything acme
makes must be invisible to globex (404, as if it did not exist) and each role must be
able to do exactly what it is for.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from api.app import create_app
from api.auth import Access, required
from api.console import routes as console
from tests.api.support import expect_error
from tests.fakes.openai_server import FakeOpenAI
from tests.service import ServiceProcess

KEYS = {
    "admin": "acme-admin-key-000000000001",
    "operator": "acme-operator-key-0000000001",
    "approver": "acme-approver-key-0000000001",
    "viewer": "acme-viewer-key-000000000001",
    "globex": "globex-operator-key-00000001",
}
REFUND = {"ticket": "Please refund order o-10063, it broke.", "customer_id": "c-001"}


def _static_keys() -> str:
    acme = [
        {"key": KEYS[role], "tenant": "acme", "roles": [role]}
        for role in ("admin", "operator", "approver", "viewer")
    ]
    return json.dumps([*acme, {"key": KEYS["globex"], "tenant": "globex", "roles": ["operator"]}])


def _env(redis_url: str, fake_llm: FakeOpenAI, data: Path, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "INTERLOCK_KEY_PREFIX": f"t:{uuid.uuid4().hex[:12]}:",
        "INTERLOCK_LLM_BASE_URL": fake_llm.base_url,
        "INTERLOCK_LLM_TIMEOUT_S": "2",
        "INTERLOCK_NEAREST_EXAMPLES": "false",
        "INTERLOCK_DATA_DIR": str(data),
        **extra,
    }


@pytest.fixture(scope="module")
def service(
    redis_url: str, fake_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("auth")
    proc = ServiceProcess(
        _env(redis_url, fake_llm, root / "data", INTERLOCK_API_KEYS=_static_keys()), root / "service.log"
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def as_(service: ServiceProcess) -> AsyncIterator[dict[str, LangGraphClient]]:
    """One SDK client per key: ``as_["viewer"]``…"""
    clients = {name: get_client(url=service.url, api_key=key) for name, key in KEYS.items()}
    try:
        yield clients
    finally:
        for c in clients.values():
            await c.aclose()


def _http(service: ServiceProcess, key: str | None = None, *, bearer: bool = False) -> httpx.AsyncClient:
    headers = {}
    if key is not None:
        headers = {"Authorization": f"Bearer {key}"} if bearer else {"x-api-key": key}
    return httpx.AsyncClient(base_url=service.url, headers=headers)


async def test_no_key_or_an_unknown_one_is_401_and_public_routes_stay_open(service: ServiceProcess) -> None:
    async with _http(service) as anonymous:
        r = await anonymous.post("/threads", json={})
        assert "x-api-key" in expect_error(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        expect_error(await anonymous.get("/threads/00000000-0000-0000-0000-000000000000"), 401)
        assert (await anonymous.get("/ok")).status_code == 200
        assert (await anonymous.get("/info")).status_code == 200
        assert (await anonymous.get("/openapi.json")).status_code == 200
    async with _http(service, "not-a-key-at-all-000") as wrong:
        assert "unknown or revoked" in expect_error(await wrong.post("/threads", json={}), 401)
    async with _http(service, KEYS["operator"], bearer=True) as bearer:
        assert (await bearer.post("/threads", json={})).status_code == 200


async def test_another_tenants_resources_answer_404_and_stay_untouched(
    as_: dict[str, LangGraphClient], service: ServiceProcess
) -> None:
    acme, globex = as_["operator"], as_["globex"]
    thread = await acme.threads.create(metadata={"owner": "acme"})
    tid = thread["thread_id"]
    result = await acme.runs.wait(tid, "support_triage", input=REFUND)
    assert isinstance(result, dict) and result["__interrupt__"]
    run = (await acme.runs.list(tid))[0]
    assistant = await acme.assistants.create("support_triage", name="acme triage")

    async with _http(service, KEYS["globex"]) as g:
        paths = [
            f"/threads/{tid}",
            f"/threads/{tid}/state",
            f"/threads/{tid}/history",
            f"/threads/{tid}/runs",
            f"/threads/{tid}/runs/{run['run_id']}",
            f"/threads/{tid}/runs/{run['run_id']}/join",
            f"/assistants/{assistant['assistant_id']}",
            f"/assistants/{assistant['assistant_id']}/graph",
        ]
        for path in paths:
            expect_error(await g.get(path), 404)
        expect_error(await g.patch(f"/threads/{tid}", json={"metadata": {"owner": "globex"}}), 404)
        expect_error(await g.post(f"/threads/{tid}/copy"), 404)
        expect_error(await g.post(f"/threads/{tid}/state", json={"values": {"ticket": "x"}}), 404)
        expect_error(await g.post(f"/threads/{tid}/runs/{run['run_id']}/cancel"), 404)
        expect_error(
            await g.post(
                f"/threads/{tid}/runs", json={"assistant_id": "support_triage", "command": {"resume": "x"}}
            ),
            404,
        )
        expect_error(
            await g.post("/runs/wait", json={"assistant_id": assistant["assistant_id"], "input": REFUND}), 404
        )
        expect_error(await g.patch(f"/assistants/{assistant['assistant_id']}", json={"name": "mine"}), 404)
        expect_error(await g.delete(f"/assistants/{assistant['assistant_id']}"), 404)
        expect_error(await g.delete(f"/threads/{tid}"), 404)
        # The same id cannot be taken over by creating it.
        expect_error(await g.post("/threads", json={"thread_id": tid, "if_exists": "do_nothing"}), 409)

    assert tid not in [t["thread_id"] for t in await globex.threads.search(limit=1000)]
    assert assistant["assistant_id"] not in [
        a["assistant_id"] for a in await globex.assistants.search(limit=1000)
    ]
    assert await globex.threads.count(metadata={"owner": "acme"}) == 0
    globex_decisions = await globex.http.get("/decisions", params={"thread_id": tid})
    assert globex_decisions == []
    acme_decisions = await acme.http.get("/decisions", params={"thread_id": tid})
    assert acme_decisions and all(d["tenant"] == "acme" for d in acme_decisions)
    async with _http(service, KEYS["globex"]) as g:
        expect_error(await g.get(f"/decisions/{acme_decisions[0]['id']}"), 404)

    # Nothing of acme's changed.
    after = await acme.threads.get(tid)
    assert after["metadata"]["owner"] == "acme" and after["status"] == "interrupted"
    assert len(await acme.runs.list(tid)) == 1
    assert (await acme.assistants.get(assistant["assistant_id"]))["name"] == "acme triage"


async def test_roles_allow_exactly_what_they_are_for(
    as_: dict[str, LangGraphClient], service: ServiceProcess
) -> None:
    operator = as_["operator"]
    thread = await operator.threads.create()
    tid = thread["thread_id"]
    await operator.runs.wait(tid, "support_triage", input=REFUND)

    async with _http(service, KEYS["viewer"]) as viewer:
        assert (await viewer.get(f"/threads/{tid}")).status_code == 200
        assert (await viewer.post("/threads/search", json={})).status_code == 200
        assert (await viewer.post(f"/threads/{tid}/history", json={})).status_code == 200
        assert "operator" in expect_error(await viewer.post("/threads", json={}), 403)
        expect_error(await viewer.delete(f"/threads/{tid}"), 403)
        answer = {"assistant_id": "support_triage", "command": {"resume": {"decision": "approve"}}}
        assert "approver" in expect_error(await viewer.post(f"/threads/{tid}/runs/wait", json=answer), 403)

    async with _http(service, KEYS["approver"]) as approver:
        expect_error(await approver.post("/threads", json={}), 403)
        start = {"assistant_id": "support_triage", "input": REFUND}
        assert "answering an interrupt" in expect_error(
            await approver.post(f"/threads/{tid}/runs/wait", json=start), 403
        )
        steer = {"assistant_id": "support_triage", "command": {"resume": "x", "goto": "close"}}
        expect_error(await approver.post(f"/threads/{tid}/runs", json=steer), 403)
        assert (await operator.threads.get(tid))["status"] == "interrupted"  # nothing happened
        r = await approver.post(f"/threads/{tid}/runs/wait", json=answer)
        assert r.status_code == 200, r.text
        assert r.json()["refund"]["status"] == "issued"


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "api.cli", "keys", *args]
    return await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True)


async def test_keys_made_with_the_cli_work_until_revoked(service: ServiceProcess) -> None:
    made = await _cli(service.env, "create", "--tenant", "acme", "--role", "viewer", "--name", "ci")
    assert made.returncode == 0, made.stderr
    record = json.loads(made.stdout)
    assert record["key"].startswith("il_") and record["tenant"] == "acme" and record["roles"] == ["viewer"]
    listed = await _cli(service.env, "list", "--tenant", "acme")
    assert record["key"] not in listed.stdout  # secrets are never shown again
    assert record["id"] in listed.stdout
    async with _http(service, record["key"]) as c:
        assert (await c.post("/threads/search", json={})).status_code == 200
        expect_error(await c.post("/threads", json={}), 403)
        assert (await _cli(service.env, "revoke", record["id"])).returncode == 0
        for _ in range(200):  # revocation reaches every process within the cache time
            if (await c.post("/threads/search", json={})).status_code == 401:
                break
            await asyncio.sleep(0.1)
        expect_error(await c.post("/threads/search", json={}), 401)
    assert (await _cli(service.env, "revoke", record["id"])).returncode == 1
    bad = await _cli(service.env, "create", "--tenant", "no spaces", "--role", "viewer")
    assert bad.returncode != 0 and "tenant" in bad.stderr


def test_every_route_has_the_access_we_meant() -> None:
    """A new route must be added here on purpose: its access level is a decision."""
    expected = {
        ("GET", "/ok"): None,
        ("GET", "/info"): None,
        ("GET", "/metrics"): None,
        ("GET", "/openapi.json"): None,
        ("GET", "/docs"): None,
        ("GET", "/docs/oauth2-redirect"): None,
        ("GET", "/redoc"): None,
        ("POST", "/threads/{thread_id}/runs"): Access.ANSWER,
        ("POST", "/threads/{thread_id}/runs/wait"): Access.ANSWER,
        ("POST", "/threads/{thread_id}/runs/stream"): Access.ANSWER,
        ("POST", "/approvals/{approval_id}/decision"): Access.ANSWER,
        ("POST", "/triggers/{name}"): None,  # signed with the trigger's secret instead
        # The web console: its way in and out and its assets are public; deciding needs
        # the approver role (and the approval's assignee, checked by the route).
        ("GET", "/console/login"): None,
        ("POST", "/console/login"): None,
        ("GET", "/console/logout"): None,
        ("POST", "/console/logout"): None,
        ("GET", "/console/static"): None,
        ("POST", "/console/approvals/{approval_id}/decision"): Access.ANSWER,
    }
    app = create_app()
    routes = [(m.upper(), path) for path, item in app.openapi()["paths"].items() for m in item]
    routes += [("GET", p) for p in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")]
    # Console pages are not in the OpenAPI spec (they are not API).
    routes += [(m, r.path) for r in console.router.routes if isinstance(r, APIRoute) for m in r.methods]
    routes += [("GET", "/console/static")]
    assert ("GET", "/console") in routes and ("GET", "/console/approvals/{approval_id}") in routes
    seen = 0
    for method, path in routes:
        need = required(method, path)
        seen += 1
        if (method, path) in expected:
            assert need == expected[(method, path)], (method, path)
        elif method == "GET" or path.endswith(("/search", "/count", "/history", "/state/checkpoint")):
            assert need == Access.READ, (method, path)
        else:
            assert need == Access.WRITE, (method, path)
    assert seen > 40


async def test_first_start_without_keys_makes_an_admin_key(
    redis_url: str, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    proc = ServiceProcess(
        _env(redis_url, fake_llm, tmp_path / "data", INTERLOCK_API_KEYS="[]", INTERLOCK_WORKERS="0"),
        tmp_path / "service.log",
    )
    proc.start()
    try:
        key = (tmp_path / "data" / "admin-key").read_text().strip()
        assert oct((tmp_path / "data" / "admin-key").stat().st_mode & 0o777) == "0o600"
        async with _http(proc, key) as c:
            assert (await c.post("/threads", json={})).status_code == 200
        assert "no API keys existed" in proc.log_path.read_text()
    finally:
        proc.stop()


async def test_auth_off_is_for_development_and_says_so(
    redis_url: str, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    proc = ServiceProcess(
        _env(redis_url, fake_llm, tmp_path / "data", INTERLOCK_AUTH="off", INTERLOCK_WORKERS="0"),
        tmp_path / "service.log",
    )
    proc.start()
    try:
        async with _http(proc) as c:
            assert (await c.post("/threads", json={})).status_code == 200
        assert "AUTHENTICATION IS OFF" in proc.log_path.read_text()
    finally:
        proc.stop()
