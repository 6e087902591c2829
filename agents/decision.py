"""Decision nodes: an LLM picks one of N declared branches, or the fallback is taken.

A :class:`DecisionSpec` declares the branches, the fallback and the state fields the
model sees. :func:`decide` asks the model for ``{"branch": <one of the names>}`` under a
JSON schema, checks the reply itself (servers do not always honour schemas), retries a
bounded number of times and otherwise takes the fallback. It never raises because of the
model — timeouts, refused connections, HTTP errors and garbage all end in a
:class:`Decision` — and it takes at most ``attempts × timeout``.

Small models route far better with a few examples (SmolLM2-135M: 12/30 correct with
instructions only, 22–25/30 with three examples), so examples are sent as real
user/assistant turns rather than pasted into the instructions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from opentelemetry.trace import Span
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from agents.llm import LLMClient, LLMRejected, LLMReply
from core import metrics
from core.errors import InterlockError
from core.tracing import session_attributes

__all__ = ["Branch", "Decision", "DecisionSpec", "Example", "decide"]

logger = logging.getLogger(__name__)

_PROMPT_FORMAT = 1
"""Bump when the way messages are built changes: it is part of ``prompt_version``."""

BranchName = Annotated[str, StringConstraints(pattern=r"^\S+$")]
"""A branch name: non-empty, no whitespace (it is a routing key and a JSON enum value)."""


class Branch(BaseModel):
    """One way out of a decision node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: BranchName
    description: str
    """Shown to the model next to the name: say when this branch is the right one."""


class Example(BaseModel):
    """A worked example: these inputs should go to that branch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: dict[str, Any]
    """Values of (some of) the spec's ``inputs`` fields."""
    branch: str


class DecisionSpec(BaseModel):
    """The declaration of a decision node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1)]
    """Node name; also names the span (``decide <name>``) and the JSON schema."""
    instructions: str
    """System prompt: what the decision is about and how to choose."""
    branches: list[Branch] = Field(min_length=2)
    fallback: str
    """Branch taken when the model gives no valid answer within ``max_attempts``."""
    inputs: list[str]
    """State fields the model sees, in this order; other state stays private."""
    examples: list[Example] = []
    max_attempts: Annotated[int, Field(ge=1)] | None = None
    """Overrides the client's ``max_attempts`` for this node."""
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    """Overrides the client's per-attempt timeout for this node."""
    agreement_samples: Annotated[int, Field(ge=2, le=10)] = 4
    """When the server reports no log-probabilities and review is on: confidence is the
    share of this many answers (the first at temperature 0, the rest sampled at 0.8) that
    agree with the first."""
    example_pool: str | None = None
    """JSONL of labelled cases (``{"input": {...}, "expected": "<branch>"}``) to choose
    few-shot examples from, per input, by similarity (see ``agents/examples.py``)."""
    nearest_examples: Annotated[int, Field(ge=0, le=16)] = 0
    """How many of the pool's cases nearest to the input to show instead of ``examples``
    (0: always show ``examples``). Without the embedding model installed, ``examples``."""
    review_below: Annotated[float, Field(gt=0, le=1)] | None = None
    """Confidence below which a person reviews the choice before the workflow acts on it
    (also when the model gave no confidence or no valid answer). None: never review."""

    @model_validator(mode="after")
    def _check_branches(self) -> DecisionSpec:
        names = self.branch_names
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"branch names must be unique; repeated: {duplicates}")
        if self.fallback not in names:
            raise ValueError(f"fallback {self.fallback!r} is not one of the branches {names}")
        for i, example in enumerate(self.examples):
            if example.branch not in names:
                raise ValueError(f"examples[{i}].branch {example.branch!r} is not a branch")
            unknown = sorted(set(example.input) - set(self.inputs))
            if unknown:
                # The model would see fields in examples that it never sees when deciding.
                raise ValueError(f"examples[{i}].input has fields not in inputs: {unknown}")
        return self

    @property
    def branch_names(self) -> list[str]:
        return [b.name for b in self.branches]

    @property
    def prompt_version(self) -> str:
        """Short hash of everything that shapes the prompt, to tell prompt revisions apart."""
        canonical = json.dumps(
            {
                "format": _PROMPT_FORMAT,
                "instructions": self.instructions,
                "branches": [b.model_dump() for b in self.branches],
                "inputs": self.inputs,
                "examples": [e.model_dump() for e in self.examples],
                "pool": [Path(self.example_pool).name, self.nearest_examples] if self.example_pool else None,
            },
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def output_schema(self) -> dict[str, Any]:
        """JSON schema of the reply: ``{"branch": <one of the branch names>}``."""
        return {
            "type": "object",
            "properties": {"branch": {"type": "string", "enum": self.branch_names}},
            "required": ["branch"],
            "additionalProperties": False,
        }

    def messages(
        self, inputs: Mapping[str, Any], examples: Sequence[Example] | None = None
    ) -> list[dict[str, str]]:
        """Chat messages for one decision: instructions, examples as turns (``examples``,
        else the spec's own), then the inputs."""
        menu = "\n".join(f"- {b.name}: {b.description}" for b in self.branches)
        system = (
            f"{self.instructions.strip()}\n\n"
            f"Choose exactly one branch:\n{menu}\n\n"
            'Reply with JSON only: {"branch": "<branch name>"}'
        )
        messages = [{"role": "system", "content": system}]
        for example in self.examples if examples is None else examples:
            messages.append({"role": "user", "content": render_inputs(self.inputs, example.input)})
            messages.append({"role": "assistant", "content": _reply_json(example.branch)})
        messages.append({"role": "user", "content": render_inputs(self.inputs, inputs)})
        return messages


class Decision(BaseModel):
    """What a decision node chose and how; stored in workflow state (JSON-serialisable)."""

    node: str
    chosen: str
    candidates: list[str]
    method: Literal["llm", "fallback", "human"]
    """``llm``: the model's answer; ``fallback``: no valid answer in time; ``human``: a
    person's choice after review (the model's stays in ``model_choice``)."""
    model: str
    """Model that answered (as reported by the server), or the configured one on fallback."""
    latency_ms: float
    """Wall time of the whole decision, all attempts included."""
    attempts: int
    """LLM calls made."""
    errors: list[str]
    """One short reason per failed attempt ("timeout", "http 429", "invalid JSON", …)."""
    confidence: float | None = None
    """How sure the model was of ``chosen`` among the candidates (0–1); see
    ``confidence_method``. None when it could not be measured."""
    confidence_method: Literal["logprobs", "agreement"] | None = None
    """``logprobs``: the chosen branch's share of the probability the model put on the
    candidates' first tokens; ``agreement``: share of sampled answers that agree."""
    prompt_version: str
    prompt_tokens: int
    """Summed over all attempts."""
    completion_tokens: int
    """Summed over all attempts."""
    needs_review: bool = False
    """The spec asks for review and the confidence was below ``review_below``."""
    log_id: str | None = None
    """Id of this decision in the decisions log."""
    model_choice: str | None = None
    """For a human decision: what the model had chosen."""
    reviewed_by: str | None = None
    comment: str | None = None


async def decide(
    spec: DecisionSpec,
    inputs: Mapping[str, Any],
    llm: LLMClient,
    examples: Sequence[Example] | None = None,
) -> Decision:
    """Ask the model to pick a branch of ``spec`` for ``inputs``; fall back if it cannot.

    Makes up to ``spec.max_attempts`` (else ``llm.max_attempts``) calls of at most
    ``spec.timeout_s`` (else ``llm.timeout_s``) each. Every failure — no reply, an HTTP
    error, a refusal, a truncated, empty, non-JSON or off-list reply — costs one attempt
    and is recorded in ``Decision.errors``; an error that retrying cannot fix (say, HTTP
    401) ends the attempts early. Declared input fields missing from ``inputs`` are left
    out of the prompt. ``examples`` (chosen for this input) replace the spec's own.
    Only cancellation propagates.
    """
    max_attempts = spec.max_attempts or llm.max_attempts
    timeout_s = spec.timeout_s or llm.timeout_s
    messages = spec.messages(inputs, examples)
    schema = spec.output_schema()
    schema_name = re.sub(r"[^A-Za-z0-9_-]", "_", spec.name)[:64]
    candidates = spec.branch_names

    with llm.tracer.start_as_current_span(f"decide {spec.name}") as span:
        span.set_attributes(
            {
                **session_attributes(),
                "openinference.span.kind": "CHAIN",
                "agent.decision.node": spec.name,
                "agent.decision.candidates": candidates,
                "agent.decision.prompt_version": spec.prompt_version,
            }
        )
        if llm.record_content:
            span.set_attribute("input.value", messages[-1]["content"])

        started = time.perf_counter()
        errors: list[str] = []
        prompt_tokens = completion_tokens = 0
        attempts = 0
        chosen: str | None = None
        answer: LLMReply | None = None
        while attempts < max_attempts and chosen is None:
            attempts += 1
            try:
                reply = await llm.complete(
                    messages, schema_name=schema_name, schema=schema, timeout_s=timeout_s
                )
            except LLMRejected as exc:
                _failed(span, errors, attempts, exc.message)
                break
            except InterlockError as exc:
                _failed(span, errors, attempts, exc.message)
                continue
            except Exception as exc:
                # A server can send what no one foresaw; the run must still go on.
                logger.warning("decision %s: unexpected LLM error", spec.name, exc_info=True)
                _failed(span, errors, attempts, f"error {type(exc).__name__}")
                continue
            prompt_tokens += reply.prompt_tokens
            completion_tokens += reply.completion_tokens
            branch, problem = _read_branch(reply, candidates)
            if branch is None:
                _failed(span, errors, attempts, problem)
            else:
                chosen, answer = branch, reply

        confidence: float | None = None
        confidence_method: Literal["logprobs", "agreement"] | None = None
        if answer is not None and chosen is not None:
            confidence = branch_confidence(answer, chosen, candidates)
            if confidence is not None:
                confidence_method = "logprobs"
            elif spec.review_below is not None:
                confidence = await _agreement(spec, llm, messages, schema_name, schema, timeout_s, chosen)
                confidence_method = "agreement" if confidence is not None else None
        method: Literal["llm", "fallback"] = "llm" if chosen is not None else "fallback"
        needs_review = spec.review_below is not None and (
            method == "fallback" or confidence is None or confidence < spec.review_below
        )
        decision = Decision(
            node=spec.name,
            chosen=chosen if chosen is not None else spec.fallback,
            candidates=candidates,
            method=method,
            model=answer.model if answer is not None else llm.model,
            latency_ms=(time.perf_counter() - started) * 1000,
            attempts=attempts,
            errors=errors,
            confidence=confidence,
            confidence_method=confidence_method,
            prompt_version=spec.prompt_version,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            needs_review=needs_review,
        )
        span.set_attributes(
            {
                "agent.decision.chosen": decision.chosen,
                "agent.decision.method": decision.method,
                "agent.decision.attempts": decision.attempts,
                "agent.decision.needs_review": decision.needs_review,
            }
        )
        if errors:
            span.set_attribute("agent.decision.errors", errors)
        if confidence is not None:
            span.set_attribute("agent.decision.confidence", confidence)
        if llm.record_content:
            span.set_attribute("output.value", _reply_json(decision.chosen))
        _count(decision)
        return decision


def _count(decision: Decision) -> None:
    instruments = metrics.instruments()
    if instruments is None:
        return
    instruments.decisions.add(
        1, {"node": decision.node, "branch": decision.chosen, "method": decision.method}
    )
    if decision.method == "fallback":
        instruments.fallbacks.add(1, {"node": decision.node})


_VALUE_START = re.compile(r'"branch"\s*:\s*"')


def branch_confidence(reply: LLMReply, chosen: str, candidates: Sequence[str]) -> float | None:
    """The chosen branch's share of the probability the model gave the candidates.

    At the token where the branch name starts, every alternative the server reported
    whose text could begin a candidate's name (``ref`` → ``refund``) adds its probability
    to that candidate (split between candidates it could begin). The grammar would only
    ever let a candidate through, so renormalising over candidates is what the model
    "meant". None without per-token log-probabilities.
    """
    if not reply.tokens:
        return None
    text = "".join(t.token for t in reply.tokens)
    match = _VALUE_START.search(text)
    if match is None:
        return None
    start, offset = match.end(), 0
    for token in reply.tokens:
        if offset <= start < offset + len(token.token):
            break
        offset += len(token.token)
    else:
        return None
    head = start - offset  # characters of this token before the branch name
    mass = dict.fromkeys(candidates, 0.0)
    for alt, logprob in {token.token: token.logprob, **dict(token.top)}.items():
        if alt[:head] != token.token[:head] or not (value := alt[head:]):
            continue
        fits = [c for c in candidates if c.startswith(value) or value.startswith(c)]
        for c in fits:
            mass[c] += math.exp(logprob) / len(fits)
    total = sum(mass.values())
    return mass[chosen] / total if total > 0 and mass[chosen] > 0 else None


async def _agreement(
    spec: DecisionSpec,
    llm: LLMClient,
    messages: list[dict[str, str]],
    schema_name: str,
    schema: dict[str, Any],
    timeout_s: float,
    chosen: str,
) -> float | None:
    """Self-consistency: the share of sampled answers that agree with ``chosen``."""
    votes = [chosen]
    for _ in range(spec.agreement_samples - 1):
        try:
            reply = await llm.complete(
                messages, schema_name=schema_name, schema=schema, timeout_s=timeout_s, temperature=0.8
            )
        except InterlockError:
            continue
        branch, _ = _read_branch(reply, spec.branch_names)
        if branch is not None:
            votes.append(branch)
    return votes.count(chosen) / len(votes) if len(votes) > 1 else None


def render_inputs(fields: Sequence[str], values: Mapping[str, Any]) -> str:
    """``field: value`` lines for the declared fields present in ``values``.

    Strings go in as they are; anything else as compact JSON.
    """
    lines = []
    for field in fields:
        if field in values:
            value = values[field]
            text = value if isinstance(value, str) else _compact_json(value)
            lines.append(f"{field}: {text}")
    return "\n".join(lines) if lines else "(no input)"


def _read_branch(reply: LLMReply, candidates: list[str]) -> tuple[str | None, str]:
    """The branch named by a reply, or None and why not."""
    if reply.problem:
        return None, reply.problem
    try:
        data = json.loads(reply.content or "")
    except ValueError:
        return None, "invalid JSON"
    if not isinstance(data, dict) or not isinstance(data.get("branch"), str):
        return None, "no branch in reply"
    branch: str = data["branch"]
    if branch not in candidates:
        return None, f"unknown branch {branch[:40]!r}"
    return branch, ""


def _failed(span: Span, errors: list[str], attempt: int, reason: str) -> None:
    errors.append(reason)
    span.add_event("attempt failed", {"attempt": attempt, "reason": reason})


def _reply_json(branch: str) -> str:
    return json.dumps({"branch": branch}, ensure_ascii=False)


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)
