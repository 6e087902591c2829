"""Declared decisions wired into a real graph: routing, the decisions log in Redis, and
the review step that low confidence (or a fallback) sends to a person."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aredis
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from typing_extensions import TypedDict

from agents.context import Context
from agents.decision import Branch, DecisionSpec
from agents.llm import LLMClient
from agents.nodes import add_decision
from store.decisions import RedisDecisionLog
from tests.fakes.openai_server import FakeOpenAI, start_fake_openai


class State(TypedDict, total=False):
    text: str
    route: str
    decision: dict[str, Any]
    handled_by: str


def _spec(review_below: float | None) -> DecisionSpec:
    return DecisionSpec(
        name="route_it",
        instructions="Route the text.",
        branches=[
            Branch(name="refund", description="money back"),
            Branch(name="answer", description="question"),
        ],
        fallback="answer",
        inputs=["text"],
        review_below=review_below,
        max_attempts=2,
        timeout_s=2,
    )


def _graph(spec: DecisionSpec) -> Any:
    builder = StateGraph(State, context_schema=Context)
    for name in ("refund_desk", "answer_desk"):
        builder.add_node(name, lambda s, name=name: {"handled_by": name})
        builder.add_edge(name, END)
    builder.add_edge(START, spec.name)
    add_decision(builder, spec, {"refund": "refund_desk", "answer": "answer_desk"})
    return builder.compile(checkpointer=InMemorySaver())


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = start_fake_openai()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def context(fake: FakeOpenAI, redis_client: aredis.Redis, key_prefix: str) -> AsyncIterator[Context]:
    fake.reset()
    async with LLMClient(base_url=fake.base_url, model="m", timeout_s=2, logprobs=True) as llm:
        yield Context(
            llm=llm,
            redis=redis_client,
            key_prefix=key_prefix,
            decisions=RedisDecisionLog(redis_client, prefix=key_prefix),
        )


def _config() -> Any:
    return {"configurable": {"thread_id": str(uuid.uuid4())}, "metadata": {"graph_id": "g", "run_id": "r1"}}


async def test_confident_decision_routes_and_is_logged(context: Context) -> None:
    graph, config = _graph(_spec(review_below=0.5)), _config()
    out = await graph.ainvoke({"text": "I want a refund"}, config, context=context)
    assert out["handled_by"] == "refund_desk"
    decision = out["decision"]
    assert (decision["chosen"], decision["method"], decision["needs_review"]) == ("refund", "llm", False)
    assert decision["confidence"] == pytest.approx(0.9, abs=0.01)  # the fake's logprob -0.105
    log = context.decisions
    assert isinstance(log, RedisDecisionLog)
    entry = await log.get(decision["log_id"])
    assert entry is not None
    assert entry["inputs"] == {"text": "I want a refund"}
    assert (entry["graph_id"], entry["run_id"], entry["node"]) == ("g", "r1", "route_it")
    assert entry["thread_id"] == config["configurable"]["thread_id"]
    assert entry["candidates"] == ["refund", "answer"]


async def test_low_confidence_waits_for_a_person_who_can_change_the_branch(context: Context) -> None:
    graph, config = _graph(_spec(review_below=0.95)), _config()
    paused = await graph.ainvoke({"text": "I want a refund"}, config, context=context)
    request = paused["__interrupt__"][0].value
    assert request["type"] == "approval"
    assert request["suggestion"]["branch"] == "refund" and request["options"] == ["approve", "edit"]
    assert request["edit_schema"]["properties"]["branch"]["enum"] == ["refund", "answer"]
    assert request["confidence"] == pytest.approx(0.9, abs=0.01)
    assert request["details"] == {"text": "I want a refund"}
    assert "handled_by" not in paused

    again = await graph.ainvoke(Command(resume={"branch": "nope"}), config, context=context)
    assert "answer not accepted" in again["__interrupt__"][0].value["error"]

    done = await graph.ainvoke(
        Command(resume={"branch": "answer", "decided_by": "ana", "comment": "just a question"}),
        config,
        context=context,
    )
    assert done["handled_by"] == "answer_desk"
    human = done["decision"]
    assert (human["chosen"], human["method"], human["model_choice"], human["reviewed_by"]) == (
        "answer",
        "human",
        "refund",
        "ana",
    )
    log = context.decisions
    assert isinstance(log, RedisDecisionLog)
    entries = await log.search(thread_id=config["configurable"]["thread_id"])
    assert [e["method"] for e in entries] == ["human", "llm"]
    assert entries[0]["overrides"] == entries[1]["id"]
    assert entries[0]["comment"] == "just a question"
    assert (
        await log.search(thread_id=config["configurable"]["thread_id"], method="human", limit=5)
        == entries[:1]
    )


async def test_accepting_the_suggestion_keeps_the_branch(context: Context) -> None:
    graph, config = _graph(_spec(review_below=0.95)), _config()
    await graph.ainvoke({"text": "I want a refund"}, config, context=context)
    done = await graph.ainvoke(Command(resume={"comment": "looks right"}), config, context=context)
    assert done["handled_by"] == "refund_desk"
    assert done["decision"]["method"] == "human"


async def test_fallback_goes_to_review_when_review_is_declared(context: Context, fake: FakeOpenAI) -> None:
    fake.script([{"kind": "garbage"}, {"kind": "garbage"}])
    graph, config = _graph(_spec(review_below=0.5)), _config()
    paused = await graph.ainvoke({"text": "I want a refund"}, config, context=context)
    request = paused["__interrupt__"][0].value
    assert (request["suggestion"]["branch"], request["method"]) == ("answer", "fallback")


def test_every_branch_needs_a_route() -> None:
    builder = StateGraph(State, context_schema=Context)
    with pytest.raises(ValueError, match="no route for branches \\['answer'\\]"):
        add_decision(builder, _spec(None), {"refund": "x"})
