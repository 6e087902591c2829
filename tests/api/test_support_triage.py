"""``support_triage`` end to end: the real service process, real Redis, the real
``langgraph-sdk`` client, and the fake OpenAI-compatible server for the decision node."""

from __future__ import annotations

from typing import Any

from langgraph_sdk.client import LangGraphClient

from tests.fakes.openai_server import FakeOpenAI
from tests.service import ServiceProcess

CANDIDATES = ["refund", "answer", "technical", "escalate"]


async def _wait(client: LangGraphClient, ticket: str, customer_id: str = "c-001") -> dict[str, Any]:
    thread = await client.threads.create()
    result = await client.runs.wait(
        thread["thread_id"], "support_triage", input={"ticket": ticket, "customer_id": customer_id}
    )
    assert isinstance(result, dict)
    return result


async def test_large_refund_waits_for_approval_across_a_restart(
    client: LangGraphClient, service: ServiceProcess, fake_llm: FakeOpenAI
) -> None:
    fake_llm.reset()
    thread = await client.threads.create()
    tid = thread["thread_id"]
    events = [
        (part.event, part.data)
        async for part in client.runs.stream(
            tid,
            "support_triage",
            input={"ticket": "Please refund order o-10063, it broke.", "customer_id": "c-001"},
            stream_mode=["values", "updates"],
        )
    ]
    names = [e for e, _ in events]
    assert names[0] == "metadata"
    assert {"values", "updates"} <= set(names)
    interrupts = [d["__interrupt__"] for e, d in events if e == "updates" and "__interrupt__" in d]
    assert len(interrupts) == 1
    request = interrupts[0][0]["value"]
    assert {k: request[k] for k in ("type", "action", "amount", "options", "assignee", "on_timeout")} == {
        "type": "approval",
        "action": "issue_refund",
        "amount": 87.87,
        "options": ["approve", "reject", "edit"],
        "assignee": "approver",
        "on_timeout": "escalate",
    }
    assert request["editable"] == {"amount": 87.87}
    assert request["edit_schema"]["properties"]["amount"]["exclusiveMinimum"] == 0
    assert request["details"]["order"]["order_id"] == "o-10063"
    assert request["deadline_s"] == 24 * 3600 and request["escalate_to"] == "group:support-leads"
    assert "o-10063" in request["summary"]
    assert (await client.threads.get(tid))["status"] == "interrupted"

    service.restart()  # nothing of the thread lives in the process

    state = await client.threads.get_state(tid)
    assert state["next"] == ["approval"]
    assert [i["id"] for i in state["interrupts"]] == [interrupts[0][0]["id"]]
    history = await client.threads.get_history(tid, limit=50)
    assert len(history) >= 4

    final = await client.runs.wait(
        tid, "support_triage", command={"resume": {"decision": "approve", "comment": "fine"}}
    )
    assert isinstance(final, dict)
    assert final["refund"] == {"order_id": "o-10063", "amount": 87.87, "status": "issued"}
    assert final["route"] == "refund"
    assert final["decision"]["chosen"] == "refund"
    assert final["decision"]["method"] == "llm"
    assert final["decision"]["candidates"] == CANDIDATES
    assert "refunded 87.87" in final["resolution"]
    thread_after = await client.threads.get(tid)
    assert thread_after["status"] == "idle"
    runs = await client.runs.list(tid)
    assert [r["status"] for r in runs] == ["success", "interrupted"]


async def test_rejected_refund_is_denied(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    first = await client.runs.wait(
        tid, "support_triage", input={"ticket": "refund o-10063 now", "customer_id": "c-001"}
    )
    assert isinstance(first, dict)
    assert first["__interrupt__"][0]["value"]["action"] == "issue_refund"
    final = await client.runs.wait(
        tid,
        "support_triage",
        command={"resume": {"decision": "reject", "comment": "outside the return window"}},
    )
    assert isinstance(final, dict)
    assert final["refund"]["status"] == "denied"
    assert "outside the return window" in final["resolution"]


async def test_invalid_approval_answer_asks_again(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "support_triage", input={"ticket": "refund o-10063", "customer_id": "c-001"})
    again = await client.runs.wait(tid, "support_triage", command={"resume": {"decision": "maybe"}})
    assert isinstance(again, dict)
    assert "answer not accepted" in again["__interrupt__"][0]["value"]["error"]
    final = await client.runs.wait(tid, "support_triage", command={"resume": {"decision": "approve"}})
    assert isinstance(final, dict)
    assert final["refund"]["status"] == "issued"


async def test_small_refund_is_issued_without_approval(client: LangGraphClient) -> None:
    result = await _wait(client, "I want a refund for o-10028, the mouse is broken")
    assert result["route"] == "refund"
    assert result["refund"] == {"order_id": "o-10028", "amount": 34.69, "status": "issued"}
    assert "__interrupt__" not in result


async def test_refund_without_order_id_uses_most_recent_order(client: LangGraphClient) -> None:
    result = await _wait(client, "refund please, the last thing I bought is useless", "c-001")
    # c-001's most recent order is o-10101 (25.41): below the approval threshold.
    assert result["refund"] == {"order_id": "o-10101", "amount": 25.41, "status": "issued"}


async def test_unknown_customer_is_not_an_error(client: LangGraphClient) -> None:
    result = await _wait(client, "I want a refund", "c-999")
    assert result["route"] == "refund"
    assert result["refund"] is None
    assert "could not find an order" in result["resolution"]


async def test_answer_branch(client: LangGraphClient) -> None:
    result = await _wait(client, "Quick question I need an answer on: how long does shipping take?")
    assert result["route"] == "answer"
    assert result["refund"] is None
    assert "ship within 2 working days" in result["resolution"]


async def test_technical_branch_opens_a_ticket(client: LangGraphClient) -> None:
    result = await _wait(client, "technical problem: the app crashes on login")
    assert result["route"] == "technical"
    assert result["ticket_ref"].startswith("ISS-")
    assert result["ticket_ref"] in result["resolution"]


async def test_escalate_branch_hands_off(client: LangGraphClient) -> None:
    result = await _wait(client, "escalate this to your manager immediately")
    assert result["route"] == "escalate"
    assert "CASE-" in result["resolution"]


async def test_model_failure_takes_the_fallback_branch(client: LangGraphClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script([{"kind": "garbage"}, {"kind": "status", "status": 500}, {"kind": "unknown_branch"}])
    try:
        result = await _wait(client, "I want a refund for o-10028")
    finally:
        fake_llm.reset()
    assert result["route"] == "escalate"
    assert result["decision"]["method"] == "fallback"
    assert result["decision"]["attempts"] == 3
    assert len(result["decision"]["errors"]) == 3
    assert "CASE-" in result["resolution"]


async def test_decisions_are_logged_and_searchable(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    result = await client.runs.wait(
        tid, "support_triage", input={"ticket": "technical: app crashes", "customer_id": "c-002"}
    )
    assert isinstance(result, dict)
    found = await client.http.get("/decisions", params={"thread_id": tid})
    assert len(found) == 1
    entry = found[0]
    assert entry["id"] == result["decision"]["log_id"]
    assert (entry["graph_id"], entry["node"], entry["chosen"], entry["method"]) == (
        "support_triage",
        "triage",
        "technical",
        "llm",
    )
    assert entry["inputs"] == {"ticket": "technical: app crashes"}
    assert entry["candidates"] == CANDIDATES
    assert await client.http.get(f"/decisions/{entry['id']}") == entry
    only_technical = await client.http.get(
        "/decisions", params={"graph_id": "support_triage", "branch": "technical"}
    )
    assert entry in only_technical
    assert all(e["chosen"] == "technical" for e in only_technical)
