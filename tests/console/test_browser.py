"""The console in a real browser: Playwright driving Debian's Chromium (headless), the
way a person uses it — log in, open the inbox, open an approval, see the picture of the
graph with the waiting node marked, approve, see the inbox update and the run succeed.

Screenshots go to the test's ``tmp_path`` and to ``test-artifacts/console/`` in the
repository (git-ignored), to be looked at.

Needs ``playwright`` (pip) and ``chromium`` (apt; Playwright's own browser download does
not work here): skipped where either is missing, but a failure under CI (``CI=true``),
where ``.ci/run`` installs both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk.client import LangGraphClient

from tests.console.conftest import key_of, start_paused
from tests.service import ServiceProcess

CHROMIUM = Path(os.environ.get("INTERLOCK_TEST_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


def _missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install playwright"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
    return None


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The browser to drive; checked before anything else starts."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser tests; {reason}")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
async def page(chromium: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(chromium), headless=True, args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            yield await context.new_page()
        finally:
            await browser.close()


class Screenshots:
    def __init__(self, tmp_path: Path) -> None:
        self.dirs = [tmp_path, ARTIFACTS]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async def take(self, page: Any, name: str, *, full_page: bool = True) -> None:
        path = self.dirs[0] / f"{name}.png"
        await page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        shutil.copy(path, self.dirs[1] / path.name)


async def test_log_in_open_an_approval_see_the_graph_approve_and_see_the_run_succeed(
    chromium: Path, console_service: ServiceProcess, sdk: LangGraphClient, page: Any, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    shots = Screenshots(tmp_path)
    base = console_service.url
    await start_paused(sdk, "contract", {"amount": 4200.0})
    await start_paused(sdk, "reviewed", {"text": "Where is my parcel?"})
    await start_paused(
        sdk,
        "support_triage",
        {"ticket": "Please refund order o-10063, it arrived broken.", "customer_id": "c-001"},
    )
    thread_id, _ = await start_paused(
        sdk,
        "purchase",
        {
            "vendor": "Northwind Supplies",
            "amount": 1840.0,
            "items": ["standing desk", "monitor arm", "chair"],
        },
    )

    # Log in: a wrong key first, then the approver's.
    await page.goto(f"{base}/console")
    await expect(page).to_have_url(f"{base}/console/login?next=/console")
    await page.fill("#key", "not-a-real-key-000000")
    await page.click("button[type=submit]")
    await expect(page.locator(".alert--error")).to_contain_text("unknown or revoked")
    await shots.take(page, "01-login-error")
    await page.fill("#key", key_of("approver"))
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{base}/console")

    # The inbox: the purchase is there, with its deadline; the header says who is in.
    await expect(page.locator(".who")).to_contain_text("acme")
    await expect(page.locator(".who")).to_contain_text("ann")
    row = page.locator("#inbox tbody tr", has_text="Buy from Northwind Supplies for 1840.00")
    await expect(row).to_have_count(1)
    await expect(row.locator(".deadline")).to_contain_text("in 59 min")
    await shots.take(page, "02-inbox")
    await shots.take(page, "docs-inbox", full_page=False)

    # The built-in graph's refund approval: the path through the decision node is drawn.
    await page.locator("#inbox tbody tr", has_text="o-10063").click()
    graph = page.locator("svg.graph")
    await expect(graph.locator('g.node--waiting[data-node="approval"]')).to_have_count(1)
    await expect(graph.locator('g.node--decision.node--visited[data-node="triage"]')).to_have_count(1)
    await expect(page.locator(".decisions, table").first).to_contain_text("refund")
    await shots.take(page, "docs-approval", full_page=False)
    await page.go_back()

    # One click opens it: the picture of the graph marks where the run waits.
    await page.locator("#inbox tbody tr", has_text="Buy from Northwind Supplies for 1840.00").click()
    await expect(page.locator("h1")).to_have_text("Buy from Northwind Supplies for 1840.00")
    graph = page.locator("svg.graph")
    await expect(graph).to_be_visible()
    waiting = graph.locator('g.node--waiting[data-node="approve_purchase"]')
    await expect(waiting).to_have_count(1)
    await expect(graph.locator('g.node--visited[data-node="check_budget"]')).to_have_count(1)
    await expect(graph.locator("g.edge--taken")).to_have_count(2)  # START → check_budget → approve_purchase
    await expect(graph.locator("g.node--visited")).to_have_count(2)  # START and check_budget
    await expect(page.locator(".kv").first).to_contain_text("Northwind Supplies")
    await shots.take(page, "03-approval")

    # Approve with a comment; back in the inbox, it says what happens next.
    await page.fill("#comment", "within budget")
    await page.click("button[value=approve]")
    await expect(page).to_have_url(f"{base}/console")
    flash = page.locator(".flash")
    await expect(flash).to_contain_text("Approved: Buy from Northwind Supplies for 1840.00")
    await expect(flash).to_contain_text("place_order")
    await expect(page.locator("#inbox tbody tr", has_text="Northwind")).to_have_count(0)
    await shots.take(page, "04-inbox-after")

    # The run completes: the runs page shows the resumed run as a success.
    await flash.get_by_role("link", name="Follow the run →").click()
    status = page.locator(".head-pills .pill")
    for _ in range(100):
        if await status.inner_text() == "Success":
            break
        await page.wait_for_timeout(200)
        await page.reload()
    await expect(status).to_have_text("Success")
    await expect(page.locator("svg.graph g.node--end.node--visited")).to_have_count(1)
    await expect(page.locator("a", has_text="View trace")).to_have_attribute(
        "href", f"http://traces.example/sessions/{thread_id}?run={page.url.rsplit('/', 1)[-1]}"
    )
    await shots.take(page, "05-run")
    await page.goto(f"{base}/console/runs")
    first = page.locator("#runs tbody tr").first
    await expect(first.locator(".pill")).to_have_text("Success")
    await expect(first).to_contain_text("purchase")
    await shots.take(page, "06-runs")

    state = (await sdk.threads.get_state(thread_id))["values"]
    assert state["result"] == "ordered from Northwind Supplies for 1840.00"
    async with httpx.AsyncClient(base_url=base, headers={"x-api-key": key_of("admin")}) as api:
        decided = (await api.get("/approvals", params={"status": "decided", "thread_id": thread_id})).json()
    assert decided[0]["decision"]["comment"] == "within budget"
