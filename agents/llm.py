"""The one way Interlock reaches an LLM: :class:`LLMClient`, over any OpenAI-compatible API.

OpenAI, vLLM, Ollama and llama.cpp all speak ``/v1/chat/completions``. The client makes
exactly one HTTP call per :meth:`LLMClient.complete` — the ``openai`` client's own retries
are off, because decision nodes retry themselves and record every attempt — and turns
every failure into one of two errors that say whether trying again can help:

```
InterlockError
├── LLMRejected          no  — 4xx other than 408/409/429: the request itself is wrong
└── TransientError
    └── LLMUnavailable   yes — timeout, refused connection, 408/409/429, 5xx, bad response
```

The error's ``message`` is a short reason ("timeout", "http 429", "connection refused")
meant to be recorded as is.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Self, cast
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
from pydantic import BaseModel, ConfigDict

from core import metrics
from core.errors import ConfigurationError, InterlockError, LLMUnavailable
from core.settings import Settings
from core.tracing import session_attributes

__all__ = ["LLMClient", "LLMRejected", "LLMReply", "LLMUnavailable", "StructuredOutput"]

StructuredOutput = Literal["json_schema", "json_object"]
"""How a JSON schema is sent: OpenAI's ``{"type": "json_schema", "json_schema": {…}}``
(OpenAI, vLLM, Ollama, llama-server) or llama-cpp-python's
``{"type": "json_object", "schema": …}`` (its server answers 500 to the other one)."""

TRACER_NAME = "interlock.agents"

_RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Besides 5xx: the statuses the ``openai`` client itself would retry."""


class LLMRejected(InterlockError):
    """The endpoint refused this request for good (400, 401, 404, 422, …)."""


TOP_LOGPROBS = 20
"""Alternatives asked for per token: enough to see every branch's first token."""


class TokenLogprob(BaseModel):
    """One generated token with its log-probability and the top alternatives there."""

    model_config = ConfigDict(frozen=True)

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


class LLMReply(BaseModel):
    """What one chat completion call returned. ``problem`` says whether it is usable."""

    model_config = ConfigDict(frozen=True)

    content: str | None
    finish_reason: str | None
    refusal: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str
    """The model that answered, as the server reports it."""
    latency_ms: float
    logprob: float | None = None
    """Sum of the reply tokens' log-probabilities, when asked for and reported."""
    tokens: tuple[TokenLogprob, ...] = ()
    """Per reply token: text, log-probability and the most likely alternatives."""

    @property
    def problem(self) -> str | None:
        """Why the reply cannot be used, in a few words, or None when it can."""
        if self.refusal:
            return "refusal"
        if self.finish_reason == "length":
            # Schema grammars allow unbounded whitespace: a cut-off reply is invalid JSON.
            return "finish_reason=length"
        if not self.content or not self.content.strip():
            return "empty reply"
        return None


class LLMClient:
    """An OpenAI-compatible chat endpoint plus the knobs decision nodes call it with.

    Built once at start-up (:meth:`from_settings`) and shared; close it with :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        structured_output: StructuredOutput = "json_schema",
        max_tokens: int = 32,
        temperature: float = 0.0,
        logprobs: bool = False,
        record_content: bool = False,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """Args:
        base_url: the endpoint's ``…/v1`` URL.
        model: model name sent with every request.
        api_key: bearer token; local servers ignore it.
        timeout_s: limit of one attempt, connect to last byte.
        max_attempts: calls a decision node makes before it takes its fallback branch.
        structured_output: the ``response_format`` dialect the server understands.
        max_tokens: completion budget; a branch name needs few, and schema grammars allow
            endless whitespace, so keep it small.
        temperature: 0 for repeatable routing.
        logprobs: ask for token log-probabilities (decision confidence); not every
            server supports them.
        record_content: put prompts and replies on spans (they may hold personal data).
        tracer_provider: where spans go; None uses the global provider.
        """
        if timeout_s <= 0:
            raise ConfigurationError(f"LLM timeout must be positive, got {timeout_s}")
        if max_attempts < 1:
            raise ConfigurationError(f"LLM max_attempts must be at least 1, got {max_attempts}")
        if max_tokens < 1:
            raise ConfigurationError(f"LLM max_tokens must be at least 1, got {max_tokens}")
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.structured_output: StructuredOutput = structured_output
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.logprobs = logprobs
        self.record_content = record_content
        self.tracer: Tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        """Tracer for LLM spans and for the decision spans around them."""
        url = urlsplit(base_url)
        self._server_attributes: dict[str, str | int] = {"server.address": url.hostname or ""}
        if url.port is not None:
            self._server_attributes["server.port"] = url.port
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        structured_output: StructuredOutput | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> Self:
        """The client the service uses, configured by ``INTERLOCK_LLM_*``."""
        if not settings.llm_base_url:
            raise ConfigurationError(
                "No LLM endpoint: set INTERLOCK_LLM_BASE_URL to an OpenAI-compatible …/v1 URL"
            )
        return cls(
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=settings.llm_api_key.get_secret_value(),
            timeout_s=settings.llm_timeout_s,
            max_attempts=settings.llm_max_attempts,
            structured_output=structured_output or settings.llm_structured_output,
            logprobs=settings.llm_logprobs,
            record_content=settings.trace_content,
            tracer_provider=tracer_provider,
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def response_format(self, name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
        """``response_format`` asking for JSON that matches ``schema``, in this server's dialect."""
        if self.structured_output == "json_object":
            return {"type": "json_object", "schema": dict(schema)}
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "strict": True, "schema": dict(schema)},
        }

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        schema_name: str,
        schema: Mapping[str, Any],
        timeout_s: float | None = None,
        temperature: float | None = None,
    ) -> LLMReply:
        """Make one chat completion call constrained to ``schema``, traced as ``chat <model>``.

        Returns the reply even when it is unusable (see :attr:`LLMReply.problem`; the span
        is then marked as an error); raises :class:`LLMUnavailable` (worth retrying) or
        :class:`LLMRejected` (not) when no reply came. ``timeout_s`` overrides the
        client's per-attempt limit, which bounds the whole call, not just each read.
        """
        limit_s = timeout_s if timeout_s is not None else self.timeout_s
        temperature = self.temperature if temperature is None else temperature
        with self.tracer.start_as_current_span(
            f"chat {self.model}", kind=SpanKind.CLIENT, record_exception=False
        ) as span:
            span.set_attributes(
                {
                    **session_attributes(),
                    "openinference.span.kind": "LLM",
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": "openai",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": self.model,
                    "gen_ai.request.max_tokens": self.max_tokens,
                    "gen_ai.request.temperature": temperature,
                    **self._server_attributes,
                }
            )
            if self.record_content:
                span.set_attribute("gen_ai.input.messages", _dump(list(messages)))
            started = time.perf_counter()
            try:
                reply = await self._call(messages, schema_name, schema, limit_s, temperature)
            except InterlockError as exc:
                span.set_attribute("error.type", exc.message)
                span.set_status(Status(StatusCode.ERROR, exc.message))
                self._measure(time.perf_counter() - started, None, exc.message)
                raise
            self._measure(time.perf_counter() - started, reply, reply.problem)
            span.set_attributes(
                {
                    "gen_ai.response.model": reply.model,
                    "gen_ai.usage.input_tokens": reply.prompt_tokens,
                    "gen_ai.usage.output_tokens": reply.completion_tokens,
                    "gen_ai.response.finish_reasons": [reply.finish_reason or "unknown"],
                }
            )
            if self.record_content:
                output = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
                span.set_attribute("gen_ai.output.messages", _dump([output]))
            if reply.problem:
                span.set_attribute("error.type", reply.problem)
                span.set_status(Status(StatusCode.ERROR, reply.problem))
            return reply

    def _measure(self, seconds: float, reply: LLMReply | None, error: str | None) -> None:
        """GenAI client metrics: operation duration and token usage."""
        instruments = metrics.instruments()
        if instruments is None:
            return
        attrs: dict[str, str] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": self.model,
        }
        instruments.llm_duration.record(seconds, {**attrs, "error.type": error} if error else attrs)
        if reply is not None:
            instruments.tokens.record(reply.prompt_tokens, {**attrs, "gen_ai.token.type": "input"})
            instruments.tokens.record(reply.completion_tokens, {**attrs, "gen_ai.token.type": "output"})

    async def _call(
        self,
        messages: Sequence[Mapping[str, Any]],
        schema_name: str,
        schema: Mapping[str, Any],
        limit_s: float,
        temperature: float,
    ) -> LLMReply:
        started = time.perf_counter()
        try:
            # httpx's timeout applies per read; asyncio's bounds the whole call, so a server
            # that trickles bytes cannot hold a decision past its budget.
            async with asyncio.timeout(limit_s):
                completion = await self._client.chat.completions.create(
                    model=self.model,
                    messages=cast(list[ChatCompletionMessageParam], list(messages)),
                    max_tokens=self.max_tokens,
                    temperature=temperature,
                    stream=False,
                    # A plain dict: the json_object dialect's "schema" key is not in the
                    # openai package's TypedDicts, and servers read it from the body anyway.
                    extra_body={"response_format": self.response_format(schema_name, schema)},
                    timeout=limit_s,
                    logprobs=True if self.logprobs else openai.omit,
                    top_logprobs=TOP_LOGPROBS if self.logprobs else openai.omit,
                )
        except (TimeoutError, openai.APITimeoutError) as exc:
            raise LLMUnavailable("timeout") from exc
        except openai.APIConnectionError as exc:
            reason = "connection refused" if _refused(exc) else "connection error"
            raise LLMUnavailable(reason) from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in _RETRYABLE_STATUS or status >= 500:
                raise LLMUnavailable(f"http {status}", status=status) from exc
            raise LLMRejected(f"http {status}", status=status) from exc
        except openai.OpenAIError as exc:
            raise LLMUnavailable("invalid response") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        return _reply(completion, self.model, latency_ms)


def _reply(completion: ChatCompletion, requested_model: str, latency_ms: float) -> LLMReply:
    """Read a completion defensively: the openai client does not validate what servers send."""
    choices = completion.choices if isinstance(completion, ChatCompletion) else None
    if not choices:
        raise LLMUnavailable("invalid response")
    choice = choices[0]
    message = choice.message
    usage = completion.usage
    logprob: float | None = None
    tokens: tuple[TokenLogprob, ...] = ()
    if choice.logprobs is not None and choice.logprobs.content:
        values = [t.logprob for t in choice.logprobs.content]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            logprob = float(sum(values))
            tokens = tuple(_token(t) for t in choice.logprobs.content)
    return LLMReply(
        content=message.content if isinstance(message.content, str) else None,
        finish_reason=choice.finish_reason if isinstance(choice.finish_reason, str) else None,
        refusal=message.refusal if isinstance(message.refusal, str) else None,
        prompt_tokens=_int(usage.prompt_tokens) if usage else 0,
        completion_tokens=_int(usage.completion_tokens) if usage else 0,
        model=completion.model if isinstance(completion.model, str) else requested_model,
        latency_ms=latency_ms,
        logprob=logprob,
        tokens=tokens,
    )


def _token(t: Any) -> TokenLogprob:
    top = tuple(
        (a.token, float(a.logprob))
        for a in (t.top_logprobs or [])
        if isinstance(a.token, str) and isinstance(a.logprob, int | float) and math.isfinite(a.logprob)
    )
    return TokenLogprob(token=str(t.token), logprob=float(t.logprob), top=top)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _refused(exc: BaseException) -> bool:
    """Whether a ``ConnectionRefusedError`` lies somewhere in the exception's chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
