"""The web console over HTTP, against the real service: login, who may look and who may
decide, the CSRF token, other tenants, and deciding through the console resuming the run
exactly like the JSON API does."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient

from tests.console.conftest import key_of, start_paused
from tests.service import ServiceProcess


@contextlib.asynccontextmanager
async def _login(service: ServiceProcess, who: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client logged in to the console (the session cookie in its jar)."""
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        r = await client.post("/console/login", data={"key": key_of(who), "next": "/console"})
        assert r.status_code == 303 and r.headers["location"] == "/console", r.text
        yield client


@pytest.fixture
async def ann(console_service: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    """Logged in to the console as an approver."""
    async with _login(console_service, "approver") as client:
        yield client


@pytest.fixture
async def api(console_service: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    """The JSON API as an admin of acme."""
    async with httpx.AsyncClient(
        base_url=console_service.url, headers={"x-api-key": key_of("admin")}, timeout=30
    ) as client:
        yield client


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def _approvals(api: httpx.AsyncClient, thread_id: str) -> dict[str, dict[str, Any]]:
    r = await api.get("/approvals", params={"status": "all", "thread_id": thread_id})
    assert r.status_code == 200, r.text
    return {a["node"]: a for a in r.json()}


async def _decide(client: httpx.AsyncClient, approval_id: str, **fields: str) -> httpx.Response:
    page = await client.get(f"/console/approvals/{approval_id}")
    assert page.status_code == 200, page.text
    return await client.post(
        f"/console/approvals/{approval_id}/decision", data={"csrf": _csrf(page.text), **fields}
    )


async def test_login_with_a_bad_key_shows_the_error_and_pages_need_a_login(
    console_service: ServiceProcess,
) -> None:
    async with httpx.AsyncClient(base_url=console_service.url) as anonymous:
        r = await anonymous.get("/console")
        assert r.status_code == 303 and r.headers["location"] == "/console/login?next=/console"
        r = await anonymous.get("/console/login")
        assert r.status_code == 200 and 'name="key"' in r.text
        r = await anonymous.post("/console/login", data={"key": "not-a-key-at-all-0000"})
        assert r.status_code == 401 and "unknown or revoked" in r.text
        assert "interlock_console" not in r.headers.get("set-cookie", "")
        r = await anonymous.post("/console/login", data={"key": ""})
        assert r.status_code == 401 and "Enter an API key" in r.text
        # The console reads its cookie only; an API key header does not log anyone in.
        r = await anonymous.get("/console/runs", headers={"x-api-key": key_of("admin")})
        assert r.status_code == 303
        # Assets are public and served by the service itself.
        css = await anonymous.get("/console/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")

    async with _login(console_service, "approver") as client:
        cookie = client.cookies.jar
        [session] = [c for c in cookie if c.name == "interlock_console"]
        assert session.path == "/console" and session.has_nonstandard_attr("HttpOnly")
        login_response = await client.post("/console/login", data={"key": key_of("approver")})
        set_cookie = login_response.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/console" in set_cookie
        inbox = await client.get("/console")
        assert inbox.status_code == 200
        assert "acme" in inbox.text and ">ann<" in inbox.text  # tenant and key name in the header
        assert "default-src 'self'" in inbox.headers["content-security-policy"]
        # Nothing is loaded from anywhere else: the console works offline.
        assert not re.search(r'(src|href)="(https?:)?//', inbox.text)
        # The session cookie is for the console only: the JSON API ignores it.
        r = await client.get("/approvals")
        assert r.status_code == 401
        # Logging out ends the session.
        r = await client.post("/console/logout")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        assert (await client.get("/console")).status_code == 303


async def test_a_viewer_sees_no_decide_buttons_and_gets_403_on_a_decision(
    console_service: ServiceProcess, sdk: LangGraphClient, api: httpx.AsyncClient
) -> None:
    thread_id, _ = await start_paused(
        sdk, "purchase", {"vendor": "Acme Tools", "amount": 80.0, "items": ["saw"]}
    )
    approval = (await _approvals(api, thread_id))["approve_purchase"]
    async with _login(console_service, "viewer") as vic:
        page = await vic.get(f"/console/approvals/{approval['approval_id']}")
        assert page.status_code == 200
        assert "Buy from Acme Tools for 80.00" in page.text
        assert 'name="decision"' not in page.text and "You can look, not decide" in page.text
        inbox = await vic.get("/console")
        assert approval["approval_id"] in inbox.text
        r = await vic.post(
            f"/console/approvals/{approval['approval_id']}/decision",
            data={"csrf": _csrf(page.text), "decision": "approve"},
        )
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
        assert "approver" in r.text
    assert (await api.get(f"/approvals/{approval['approval_id']}")).json()["status"] == "pending"


async def test_a_decision_needs_the_sessions_csrf_token_and_this_origin(
    console_service: ServiceProcess, sdk: LangGraphClient, api: httpx.AsyncClient, ann: httpx.AsyncClient
) -> None:
    thread_id, _ = await start_paused(
        sdk, "purchase", {"vendor": "Bolt & Co", "amount": 40.0, "items": ["bolts"]}
    )
    approval_id = (await _approvals(api, thread_id))["approve_purchase"]["approval_id"]
    url = f"/console/approvals/{approval_id}/decision"
    page = await ann.get(f"/console/approvals/{approval_id}")
    token = _csrf(page.text)
    assert f'name="csrf" value="{token}"' in page.text and 'value="approve"' in page.text
    for data in ({"decision": "approve"}, {"decision": "approve", "csrf": "0" * 64}):
        r = await ann.post(url, data=data)
        assert r.status_code == 403 and "reload the page" in r.text
    # Another login has another token.
    async with _login(console_service, "approver") as again:
        assert _csrf((await again.get("/console")).text) != token
    r = await ann.post(
        url, data={"decision": "approve", "csrf": token}, headers={"origin": "https://evil.example"}
    )
    assert r.status_code == 403 and "another site" in r.text
    r = await ann.post(url, content=b'{"decision": "approve"}', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert (await api.get(f"/approvals/{approval_id}")).json()["status"] == "pending"
    # With the token (and from this origin) it goes through.
    r = await ann.post(
        url,
        data={"decision": "reject", "csrf": token, "comment": "not now"},
        headers={"origin": console_service.url},
    )
    assert r.status_code == 303, r.text
    result = await sdk.runs.join(
        thread_id, (await api.get(f"/approvals/{approval_id}")).json()["resume_run_id"]
    )
    assert isinstance(result, dict) and result["result"] == "cancelled"


async def test_another_tenants_approval_and_run_are_404(
    console_service: ServiceProcess, sdk: LangGraphClient, api: httpx.AsyncClient
) -> None:
    thread_id, run_id = await start_paused(sdk, "purchase", {"vendor": "Acme", "amount": 10.0, "items": []})
    approval_id = (await _approvals(api, thread_id))["approve_purchase"]["approval_id"]
    async with _login(console_service, "globex") as gus:
        inbox = await gus.get("/console")
        assert inbox.status_code == 200 and approval_id not in inbox.text and "globex" in inbox.text
        r = await gus.get(f"/console/approvals/{approval_id}")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert "not found" in r.text
        r = await gus.post(
            f"/console/approvals/{approval_id}/decision",
            data={"csrf": _csrf(inbox.text), "decision": "approve"},
        )
        assert r.status_code == 404
        assert (await gus.get(f"/console/threads/{thread_id}/runs/{run_id}")).status_code == 404
        assert run_id not in (await gus.get("/console/runs")).text
    assert (await api.get(f"/approvals/{approval_id}")).json()["status"] == "pending"


async def test_deciding_in_the_console_resumes_the_run_and_a_second_answer_is_409(
    console_service: ServiceProcess, sdk: LangGraphClient, api: httpx.AsyncClient, ann: httpx.AsyncClient
) -> None:
    thread_id, run_id = await start_paused(sdk, "contract", {"amount": 120.0})
    found = await _approvals(api, thread_id)
    finance, legal = found["finance"]["approval_id"], found["legal"]["approval_id"]

    page = await ann.get(f"/console/approvals/{finance}")
    assert page.status_code == 200
    assert '<svg class="graph"' in page.text
    assert re.search(r'class="node node--approval node--waiting node--here" data-node="finance"', page.text)
    assert re.search(r'class="node node--approval node--waiting" data-node="legal"', page.text)
    assert 'name="edit.amount"' in page.text and 'value="120.0"' in page.text
    # Ann may decide finance (role approver) but not legal (group legal): no buttons there.
    assert 'name="decision"' not in (await ann.get(f"/console/approvals/{legal}")).text

    # An invalid edit is shown on the page, with what was typed; nothing is written.
    r = await _decide(ann, finance, decision="edit", **{"edit.amount": "-5", "comment": "too much"})
    assert r.status_code == 422 and "Not done." in r.text and "greater than 0" in r.text
    assert 'value="-5"' in r.text and "too much" in r.text
    r = await _decide(ann, finance, decision="edit", **{"edit.amount": "lots"})
    assert r.status_code == 422 and "must be a number" in r.text

    r = await _decide(ann, finance, decision="edit", **{"edit.amount": "100", "comment": "cap at 100"})
    assert r.status_code == 303 and r.headers["location"] == "/console"
    inbox = await ann.get("/console")
    assert "Edited and approved: Pay 120.00" in inbox.text and "continues with &#39;join&#39;" in inbox.text
    assert "cap at 100" in inbox.text  # in "Recently decided"
    assert (await ann.get("/console")).text.count("Edited and approved: Pay") == 0  # shown once

    # The second answer to the same approval: 409, shown on the page.
    r = await _decide(ann, finance, decision="approve")
    assert (
        r.status_code == 409
        and "already decided" in r.text
        and r.headers["content-type"].startswith("text/html")
    )

    async with _login(console_service, "legal") as lee:
        r = await _decide(lee, legal, decision="approve", comment="fine")
        assert r.status_code == 303, r.text
    decided = (await api.get(f"/approvals/{legal}")).json()
    result = await sdk.runs.join(thread_id, decided["resume_run_id"])
    assert isinstance(result, dict) and result["result"] == "signed and paid 100.00"
    assert (await sdk.threads.get(thread_id))["status"] == "idle"
    audit = (await api.get(f"/approvals/{finance}/audit")).json()
    assert audit[-1]["decision"]["edits"] == {"amount": 100.0} and audit[-1]["actor"].startswith("ann")

    # The decided approval's page says who decided and links the run it resumed.
    page = await ann.get(f"/console/approvals/{finance}")
    assert (
        "Approved with edits" in page.text
        and "cap at 100" in page.text
        and 'name="decision"' not in page.text
    )
    # The run page: the path, the approvals of the thread, the trace link.
    resumed = decided["resume_run_id"]
    run_page = await ann.get(f"/console/threads/{thread_id}/runs/{resumed}")
    assert run_page.status_code == 200
    assert f"http://traces.example/sessions/{thread_id}?run={resumed}" in run_page.text
    assert re.search(r'class="node node--step node--visited" data-node="join"', run_page.text)
    assert 'class="node node--end node--visited"' in run_page.text
    assert "Pay 120.00" in run_page.text and "Sign the contract worth 120.00" in run_page.text
    first = await ann.get(f"/console/threads/{thread_id}/runs/{run_id}")
    assert first.status_code == 200 and "Interrupted" in first.text
    runs = await ann.get("/console/runs")
    assert resumed[-8:] in runs.text and run_id[-8:] in runs.text
    assert (await ann.get("/console/runs", params={"status": "nonsense"})).status_code == 422


async def test_reviewing_a_model_decision_in_the_console(
    console_service: ServiceProcess, sdk: LangGraphClient, api: httpx.AsyncClient, ann: httpx.AsyncClient
) -> None:
    thread_id, _ = await start_paused(sdk, "reviewed", {"text": "I want a refund"})
    approval_id = (await _approvals(api, thread_id))["route_it_review"]["approval_id"]
    page = await ann.get(f"/console/approvals/{approval_id}")
    assert "The model suggests" in page.text and "Accept “refund”" in page.text
    assert 'class="node node--decision node--visited" data-node="route_it"' in page.text
    assert 'class="method method--llm"' in page.text  # the decision that led here
    r = await _decide(ann, approval_id, decision="edit", **{"edit.branch": "answer", "comment": "a question"})
    assert r.status_code == 303, r.text
    resumed = (await api.get(f"/approvals/{approval_id}")).json()["resume_run_id"]
    await sdk.runs.join(thread_id, resumed)
    state = (await sdk.threads.get_state(thread_id))["values"]
    assert state["handled_by"] == "answer_desk" and state["decision"]["model_choice"] == "refund"
    run_page = await ann.get(f"/console/threads/{thread_id}/runs/{resumed}")
    assert 'class="method method--human"' in run_page.text and "model chose refund" in run_page.text
