"""Decision nodes against the fake OpenAI server, over real HTTP with the real ``openai`` client.

Spans go to an in-memory exporter through a TracerProvider injected into the client, so
the process-wide OpenTelemetry provider is never touched.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import ValidationError

from agents.decision import Branch, Decision, DecisionSpec, Example, decide
from agents.llm import LLMClient, LLMRejected, LLMUnavailable, StructuredOutput
from core.errors import ConfigurationError
from core.redis import free_port
from core.settings import Settings
from tests.fakes.openai_server import FakeOpenAI, start_fake_openai

TIMEOUT_S = 1.0  # generous: a loaded 2-core machine answers the fake slowly
MODEL = "smollm2"

SPEC = DecisionSpec(
    name="triage",
    instructions="Route the customer's support ticket to the team that should handle it.",
    branches=[
        Branch(name="refund", description="The customer wants money back."),
        Branch(name="technical", description="Something is broken or does not work."),
        Branch(name="escalate", description="Anything else; a person will look at it."),
    ],
    fallback="escalate",
    inputs=["ticket", "plan"],
)
REFUND = {"ticket": "Please refund my last order, it arrived broken.", "plan": "pro"}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = start_fake_openai()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield tracer_provider
    finally:
        tracer_provider.shutdown()


@pytest.fixture(autouse=True)
def _clean(fake: FakeOpenAI, exporter: InMemorySpanExporter) -> None:
    fake.reset()
    exporter.clear()


def make_llm(base_url: str, provider: TracerProvider, **options: Any) -> LLMClient:
    settings: dict[str, Any] = {"model": MODEL, "timeout_s": TIMEOUT_S, "max_attempts": 3}
    return LLMClient(base_url=base_url, tracer_provider=provider, **(settings | options))


@pytest.fixture
async def llm(fake: FakeOpenAI, provider: TracerProvider) -> AsyncIterator[LLMClient]:
    client = make_llm(fake.base_url, provider)
    try:
        yield client
    finally:
        await client.aclose()


# --- routing ---------------------------------------------------------------------------


async def test_routes_to_the_branch_the_model_names(llm: LLMClient) -> None:
    decision = await decide(SPEC, REFUND, llm)

    assert decision.chosen == "refund"
    assert decision.method == "llm"
    assert decision.attempts == 1
    assert decision.errors == []
    assert decision.node == "triage"
    assert decision.candidates == ["refund", "technical", "escalate"]
    assert decision.model == MODEL
    assert decision.prompt_version == SPEC.prompt_version
    assert decision.prompt_tokens > 0
    assert decision.completion_tokens > 0
    assert 0 < decision.latency_ms < 1000 * TIMEOUT_S
    assert decision.confidence is None  # log-probabilities were not asked for


async def test_makes_one_http_request_per_attempt(llm: LLMClient, fake: FakeOpenAI) -> None:
    fake.script([{"kind": "status", "status": 500}] * 3)

    decision = await decide(SPEC, REFUND, llm)

    # The openai client's own retries are off: every request is an attempt we recorded.
    assert len(fake.requests()) == decision.attempts == 3


async def test_decision_is_json_serialisable(llm: LLMClient) -> None:
    decision = await decide(SPEC, REFUND, llm)

    restored = Decision.model_validate_json(json.dumps(decision.model_dump(mode="json")))
    assert restored == decision


async def test_confidence_comes_from_logprobs(fake: FakeOpenAI, provider: TracerProvider) -> None:
    async with make_llm(fake.base_url, provider, logprobs=True) as llm:
        decision = await decide(SPEC, REFUND, llm)

    request = fake.requests()[0]
    assert (request["logprobs"], request["top_logprobs"]) == (True, 20)
    assert decision.confidence == pytest.approx(0.9)  # the fake's default share for the choice
    assert decision.confidence_method == "logprobs"


async def test_confidence_is_renormalised_over_the_candidates(
    fake: FakeOpenAI, provider: TracerProvider
) -> None:
    branches = SPEC.branch_names
    # Probability outside the candidates (0.5 here) does not count: the grammar forbids it.
    probs = {branches[0]: 0.3, branches[1]: 0.1, branches[2]: 0.1}
    fake.script([{"kind": "branch", "value": branches[0], "probs": probs}])
    async with make_llm(fake.base_url, provider, logprobs=True) as llm:
        decision = await decide(SPEC, REFUND, llm)
    assert decision.chosen == branches[0]
    assert decision.confidence == pytest.approx(0.6)


def test_branch_confidence_counts_prefix_tokens() -> None:
    from agents.decision import branch_confidence
    from agents.llm import LLMReply, TokenLogprob

    tokens = (
        TokenLogprob(token='{"', logprob=-0.01),
        TokenLogprob(token="branch", logprob=-0.01),
        TokenLogprob(token='": "', logprob=-0.01),
        TokenLogprob(
            token="ref",
            logprob=math.log(0.4),
            top=(
                ("ref", math.log(0.4)),
                ("re", math.log(0.2)),
                ("esc", math.log(0.2)),
                ("tick", math.log(0.2)),
            ),
        ),
        TokenLogprob(token='und"}', logprob=-0.01),
    )
    reply = LLMReply(
        content='{"branch": "refund"}', finish_reason="stop", refusal=None, prompt_tokens=1,
        completion_tokens=5, model="m", latency_ms=1, tokens=tokens,
    )  # fmt: skip
    # "re" could begin refund or (nothing else here) → refund gets 0.4 + 0.2; escalate 0.2.
    assert branch_confidence(reply, "refund", ["refund", "escalate", "answer"]) == pytest.approx(0.75)
    assert branch_confidence(reply.model_copy(update={"tokens": ()}), "refund", ["refund"]) is None


async def test_agreement_confidence_without_logprobs(fake: FakeOpenAI, provider: TracerProvider) -> None:
    branches = SPEC.branch_names
    spec = SPEC.model_copy(update={"review_below": 0.9, "agreement_samples": 4})
    fake.script([{"kind": "branch", "value": v} for v in (branches[0], branches[0], branches[1], "nope")])
    async with make_llm(fake.base_url, provider, logprobs=False) as llm:
        decision = await decide(spec, REFUND, llm)
    assert decision.chosen == branches[0]
    # 3 usable votes (the off-list one is dropped), 2 agree.
    assert decision.confidence == pytest.approx(2 / 3)
    assert decision.confidence_method == "agreement"
    assert decision.needs_review is True
    temperatures = [r.get("temperature") for r in fake.requests()]
    assert temperatures == [0.0, 0.8, 0.8, 0.8]


# --- faults ----------------------------------------------------------------------------

FAULTS = [
    pytest.param({"kind": "garbage"}, "invalid JSON", id="garbage"),
    pytest.param({"kind": "unknown_branch"}, "unknown branch 'no_such_branch'", id="unknown"),
    pytest.param({"kind": "branch", "value": "billing"}, "unknown branch 'billing'", id="off-list"),
    pytest.param({"kind": "empty"}, "empty reply", id="empty"),
    pytest.param({"kind": "status", "status": 429}, "http 429", id="429"),
    pytest.param({"kind": "status", "status": 500}, "http 500", id="500"),
    pytest.param({"kind": "delay", "seconds": 3 * TIMEOUT_S}, "timeout", id="timeout"),
    pytest.param({"kind": "refusal"}, "refusal", id="refusal"),
    pytest.param({"kind": "length"}, "finish_reason=length", id="length"),
]


@pytest.mark.parametrize(("fault", "reason"), FAULTS)
async def test_fault_then_good_answer_is_retried(
    llm: LLMClient, fake: FakeOpenAI, fault: dict[str, Any], reason: str
) -> None:
    fake.script([fault])

    decision = await decide(SPEC, REFUND, llm)

    assert decision.chosen == "refund"
    assert decision.method == "llm"
    assert decision.attempts == 2
    assert decision.errors == [reason]


@pytest.mark.parametrize(("fault", "reason"), FAULTS)
async def test_fault_on_every_attempt_takes_the_fallback(
    llm: LLMClient, fake: FakeOpenAI, fault: dict[str, Any], reason: str
) -> None:
    fake.script([fault] * 3)

    decision = await decide(SPEC, REFUND, llm)

    assert decision.chosen == "escalate"
    assert decision.method == "fallback"
    assert decision.attempts == 3
    assert decision.errors == [reason] * 3
    assert decision.model == MODEL


async def test_refused_connection_takes_the_fallback(provider: TracerProvider) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    async with make_llm(closed, provider) as llm:
        decision = await decide(SPEC, REFUND, llm)

    assert decision.method == "fallback"
    assert decision.chosen == "escalate"
    assert decision.errors == ["connection refused"] * 3
    assert decision.prompt_tokens == decision.completion_tokens == 0


async def test_error_that_retrying_cannot_fix_stops_early(llm: LLMClient, fake: FakeOpenAI) -> None:
    fake.script([{"kind": "status", "status": 401}])

    decision = await decide(SPEC, REFUND, llm)

    assert decision.method == "fallback"
    assert decision.attempts == 1
    assert decision.errors == ["http 401"]


async def test_total_time_is_bounded_by_attempts_times_timeout(llm: LLMClient, fake: FakeOpenAI) -> None:
    spec = SPEC.model_copy(update={"max_attempts": 2, "timeout_s": 0.2})
    fake.script([{"kind": "delay", "seconds": 2.0}] * 2)

    started = time.perf_counter()
    decision = await decide(spec, REFUND, llm)
    elapsed = time.perf_counter() - started

    assert decision.errors == ["timeout", "timeout"]
    # Two 0.2 s attempts, not two 2 s server delays; the slack is for a loaded machine.
    assert 0.4 <= elapsed < 1.0
    assert 400 <= decision.latency_ms <= elapsed * 1000


async def test_complete_says_whether_to_retry(llm: LLMClient, fake: FakeOpenAI) -> None:
    schema = SPEC.output_schema()
    fake.script([{"kind": "status", "status": 429}, {"kind": "status", "status": 400}])

    with pytest.raises(LLMUnavailable) as unavailable:
        await llm.complete(SPEC.messages(REFUND), schema_name="triage", schema=schema)
    with pytest.raises(LLMRejected) as rejected:
        await llm.complete(SPEC.messages(REFUND), schema_name="triage", schema=schema)

    assert (unavailable.value.retryable, unavailable.value.message) == (True, "http 429")
    assert (rejected.value.retryable, rejected.value.message) == (False, "http 400")


# --- what is sent ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (
            "json_schema",
            {
                "type": "json_schema",
                "json_schema": {"name": "triage", "strict": True, "schema": SPEC.output_schema()},
            },
        ),
        ("json_object", {"type": "json_object", "schema": SPEC.output_schema()}),
    ],
)
async def test_structured_output_dialects(
    fake: FakeOpenAI,
    provider: TracerProvider,
    dialect: StructuredOutput,
    expected: dict[str, Any],
) -> None:
    async with make_llm(fake.base_url, provider, structured_output=dialect) as llm:
        decision = await decide(SPEC, REFUND, llm)

    assert decision.chosen == "refund"
    [request] = fake.requests()
    assert request["response_format"] == expected
    assert request["model"] == MODEL
    assert request["max_tokens"] == 32
    assert request["temperature"] == 0


async def test_schema_enumerates_the_branches(llm: LLMClient, fake: FakeOpenAI) -> None:
    await decide(SPEC, REFUND, llm)

    schema = fake.requests()[0]["response_format"]["json_schema"]["schema"]
    assert schema == {
        "type": "object",
        "properties": {"branch": {"type": "string", "enum": ["refund", "technical", "escalate"]}},
        "required": ["branch"],
        "additionalProperties": False,
    }


async def test_examples_are_user_and_assistant_turns(llm: LLMClient, fake: FakeOpenAI) -> None:
    spec = SPEC.model_copy(
        update={
            "examples": [
                Example(input={"ticket": "The app crashes on start."}, branch="technical"),
                Example(input={"ticket": "I was charged twice.", "plan": "free"}, branch="refund"),
            ]
        }
    )

    await decide(spec, {**REFUND, "email": "secret@example.com"}, llm)

    messages = fake.requests()[0]["messages"]
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    system = messages[0]["content"]
    assert SPEC.instructions in system
    assert all(f"- {b.name}: {b.description}" in system for b in SPEC.branches)
    assert messages[1]["content"] == "ticket: The app crashes on start."
    assert json.loads(messages[2]["content"]) == {"branch": "technical"}
    assert messages[3]["content"] == "ticket: I was charged twice.\nplan: free"
    assert json.loads(messages[4]["content"]) == {"branch": "refund"}
    assert messages[5]["content"] == f"ticket: {REFUND['ticket']}\nplan: pro"
    # Only declared inputs reach the model.
    assert "secret@example.com" not in json.dumps(messages)


def test_non_string_inputs_are_compact_json() -> None:
    messages = SPEC.messages({"ticket": {"subject": "refund", "lines": [1, 2]}, "plan": None})

    assert messages[-1]["content"] == 'ticket: {"subject":"refund","lines":[1,2]}\nplan: null'


# --- the spec --------------------------------------------------------------------------


def spec_with(**changes: Any) -> DecisionSpec:
    return DecisionSpec.model_validate(SPEC.model_dump() | changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fallback": "nowhere"}, "fallback 'nowhere' is not one of the branches"),
        (
            {"branches": [{"name": "a", "description": ""}, {"name": "a", "description": ""}]},
            "branch names must be unique",
        ),
        ({"branches": [{"name": "escalate", "description": ""}]}, "at least 2 items"),
        (
            {"examples": [{"input": {"ticket": "hi"}, "branch": "nowhere"}]},
            "examples[0].branch 'nowhere' is not a branch",
        ),
        (
            {"examples": [{"input": {"email": "x"}, "branch": "refund"}]},
            "fields not in inputs: ['email']",
        ),
        ({"max_attempts": 0}, "greater than or equal to 1"),
        ({"timeout_s": 0}, "greater than 0"),
    ],
)
def test_invalid_specs_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        spec_with(**changes)


def test_prompt_version_is_stable_and_tracks_the_prompt() -> None:
    assert spec_with().prompt_version == SPEC.prompt_version
    assert len(SPEC.prompt_version) == 12
    changed = [
        spec_with(instructions="Route it."),
        spec_with(branches=[*SPEC.model_dump()["branches"], {"name": "x", "description": ""}]),
        spec_with(examples=[{"input": {"ticket": "hi"}, "branch": "escalate"}]),
    ]
    assert len({SPEC.prompt_version, *(s.prompt_version for s in changed)}) == 4
    # Retry limits do not change the prompt.
    assert spec_with(max_attempts=5).prompt_version == SPEC.prompt_version


# --- tracing ---------------------------------------------------------------------------


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_spans_nest_llm_calls_under_the_decision(
    llm: LLMClient, exporter: InMemorySpanExporter
) -> None:
    await decide(SPEC, REFUND, llm)

    spans = exporter.get_finished_spans()
    [decision] = by_name(spans, "decide triage")
    [chat] = by_name(spans, f"chat {MODEL}")
    assert decision.attributes is not None and chat.attributes is not None
    assert chat.parent is not None and decision.context is not None
    assert chat.parent.span_id == decision.context.span_id
    assert chat.context is not None and chat.context.trace_id == decision.context.trace_id

    assert dict(decision.attributes) | {"agent.decision.prompt_version": "-"} == {
        "openinference.span.kind": "CHAIN",
        "agent.decision.node": "triage",
        "agent.decision.candidates": ("refund", "technical", "escalate"),
        "agent.decision.prompt_version": "-",
        "agent.decision.chosen": "refund",
        "agent.decision.method": "llm",
        "agent.decision.attempts": 1,
        "agent.decision.needs_review": False,
    }
    attributes = chat.attributes
    assert attributes["openinference.span.kind"] == "LLM"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.system"] == attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == MODEL
    assert isinstance(attributes["gen_ai.usage.input_tokens"], int)
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert isinstance(attributes["gen_ai.usage.output_tokens"], int)
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert chat.status.status_code == StatusCode.UNSET
    # Prompts and replies may hold personal data: not recorded unless asked for.
    everything = json.dumps([dict(s.attributes or {}) for s in spans], default=str)
    assert "refund my last order" not in everything
    assert not any(k.endswith(("messages", ".value")) for s in spans for k in s.attributes or {})


async def test_failed_attempts_show_on_spans(
    llm: LLMClient, fake: FakeOpenAI, exporter: InMemorySpanExporter
) -> None:
    fake.script([{"kind": "status", "status": 429}, {"kind": "length"}] * 2)

    await decide(SPEC, REFUND, llm)

    spans = exporter.get_finished_spans()
    [decision] = by_name(spans, "decide triage")
    chats = by_name(spans, f"chat {MODEL}")
    assert [c.status.status_code for c in chats] == [StatusCode.ERROR] * 3
    assert [(c.attributes or {}).get("error.type") for c in chats] == [
        "http 429",
        "finish_reason=length",
        "http 429",
    ]
    assert decision.attributes is not None
    assert decision.attributes["agent.decision.method"] == "fallback"
    assert decision.attributes["agent.decision.chosen"] == "escalate"
    assert decision.attributes["agent.decision.errors"] == (
        "http 429",
        "finish_reason=length",
        "http 429",
    )
    assert [(e.name, dict(e.attributes or {})) for e in decision.events] == [
        ("attempt failed", {"attempt": 1, "reason": "http 429"}),
        ("attempt failed", {"attempt": 2, "reason": "finish_reason=length"}),
        ("attempt failed", {"attempt": 3, "reason": "http 429"}),
    ]


async def test_content_is_recorded_when_enabled(
    fake: FakeOpenAI, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with make_llm(fake.base_url, provider, record_content=True, logprobs=True) as llm:
        await decide(SPEC, REFUND, llm)

    spans = exporter.get_finished_spans()
    [decision] = by_name(spans, "decide triage")
    [chat] = by_name(spans, f"chat {MODEL}")
    assert decision.attributes is not None and chat.attributes is not None
    assert "refund my last order" in str(decision.attributes["input.value"])
    assert json.loads(str(decision.attributes["output.value"])) == {"branch": "refund"}
    assert decision.attributes["agent.decision.confidence"] == pytest.approx(0.9)
    assert "refund my last order" in str(chat.attributes["gen_ai.input.messages"])
    output = json.loads(str(chat.attributes["gen_ai.output.messages"]))
    assert json.loads(output[0]["content"]) == {"branch": "refund"}


# --- construction ----------------------------------------------------------------------


async def test_from_settings(provider: TracerProvider) -> None:
    settings = Settings(
        llm_base_url="http://127.0.0.1:1/v1",
        llm_model="m",
        llm_timeout_s=2.5,
        llm_max_attempts=4,
        trace_content=True,
    )
    async with LLMClient.from_settings(settings, structured_output="json_object") as llm:
        assert (llm.model, llm.timeout_s, llm.max_attempts) == ("m", 2.5, 4)
        assert llm.record_content is True
        assert llm.structured_output == "json_object"
        assert llm.max_tokens == 32

    with pytest.raises(ConfigurationError, match="INTERLOCK_LLM_BASE_URL"):
        LLMClient.from_settings(Settings(llm_base_url=None))


# --- the fake itself -------------------------------------------------------------------


def http(url: str, body: object = None) -> tuple[int, Any]:
    """One blocking HTTP call with the standard library: (status, decoded JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def test_fake_runs_as_its_own_process_and_is_scripted_over_http() -> None:
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        root_url = base_url.removesuffix("/v1")
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

        status, models = http(f"{base_url}/models")
        assert (status, models["data"][0]["object"]) == (200, "model")
        assert http(f"{root_url}/_control/script", [{"kind": "status", "status": 429}])[0] == 200
        assert http(f"{base_url}/chat/completions", chat)[0] == 429
        status, completion = http(f"{base_url}/chat/completions", chat)
        assert (status, completion["object"]) == (200, "chat.completion")
        assert http(f"{root_url}/_control/requests") == (200, [chat, chat])
        assert http(f"{root_url}/_control/reset", {})[0] == 200
        assert http(f"{root_url}/_control/requests") == (200, [])
    finally:
        process.terminate()
        process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
