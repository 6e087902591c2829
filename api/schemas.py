"""Request bodies of the HTTP API (LangGraph Agent Server protocol), one model per route
family. Fields the ``langgraph-sdk`` client sends but Interlock does not act on yet are
accepted and ignored; wrong types are a 422 with the field named."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runs.payload import ResumeCommand, StreamMode


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as the ISO 8601 string the protocol uses."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


MAX_OFFSET = 1_000_000_000
"""Largest paging offset accepted (Redis ranges take 64-bit integers; a bound keeps every
offset a 422 or a page, never a 500)."""


def page_headers(response: Response, *, total: int, offset: int, limit: int) -> None:
    """``X-Pagination-Total`` and, when more follow, ``X-Pagination-Next`` (the offset of
    the next page), as the protocol's search routes answer them."""
    response.headers["X-Pagination-Total"] = str(total)
    if offset + limit < total:
        response.headers["X-Pagination-Next"] = str(offset + limit)


def selected(views: list[dict[str, Any]], select: Sequence[str] | None) -> list[dict[str, Any]]:
    """Only the ``select``ed fields of each view (all of them without a selection)."""
    if not select:
        return views
    return [{k: v for k, v in view.items() if k in select} for view in views]


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    thread_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


AssistantField = Literal[
    "assistant_id", "graph_id", "name", "description", "config", "context",
    "created_at", "updated_at", "metadata", "version",
]  # fmt: skip
ThreadField = Literal[
    "thread_id", "created_at", "updated_at", "metadata", "config", "context",
    "status", "values", "interrupts",
]  # fmt: skip
SortOrder = Literal["asc", "desc"]


def _check_config(config: dict[str, Any] | None) -> None:
    if config and not isinstance(config.get("configurable", {}), dict):
        raise ValueError("config.configurable must be an object")


class AssistantCreate(BaseModel):
    """Body of ``POST /assistants``."""

    model_config = ConfigDict(extra="ignore")

    graph_id: str
    assistant_id: str | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    name: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _config_shape(self) -> AssistantCreate:
        _check_config(self.config)
        return self


class AssistantPatch(BaseModel):
    """Body of ``PATCH /assistants/{id}``: each field sent replaces the current one in a new
    version (``metadata`` is merged)."""

    model_config = ConfigDict(extra="ignore")

    graph_id: str | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _config_shape(self) -> AssistantPatch:
        _check_config(self.config)
        return self


class AssistantCount(BaseModel):
    model_config = ConfigDict(extra="ignore")

    graph_id: str | None = None
    name: str | None = None
    """Case-insensitive substring of the assistant's name."""
    metadata: dict[str, Any] = Field(default_factory=dict)


class AssistantSearch(AssistantCount):
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    sort_by: Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"] = "created_at"
    sort_order: SortOrder = "desc"
    select: list[AssistantField] | None = None


class AssistantVersionsSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class AssistantLatest(BaseModel):
    """Body of ``POST /assistants/{id}/latest``."""

    model_config = ConfigDict(extra="ignore")

    version: int = Field(ge=1)


class ThreadCount(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, Any] = Field(default_factory=dict)
    values: dict[str, Any] = Field(default_factory=dict)
    status: Literal["idle", "busy", "interrupted", "error"] | None = None


class ThreadSearch(ThreadCount):
    ids: list[str] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at", "state_updated_at"] = "created_at"
    sort_order: SortOrder = "desc"
    select: list[ThreadField] | None = None


class ThreadPatch(BaseModel):
    """Body of ``PATCH /threads/{id}``: ``metadata`` is merged into the thread's."""

    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, Any] = Field(default_factory=dict)


class CheckpointRef(BaseModel):
    """A checkpoint as the protocol names one (``thread_id`` is the path's)."""

    model_config = ConfigDict(extra="ignore")

    thread_id: str | None = None
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class ThreadStateUpdate(BaseModel):
    """Body of ``POST /threads/{id}/state``."""

    model_config = ConfigDict(extra="ignore")

    values: dict[str, Any] | list[dict[str, Any]] | None = None
    as_node: str | None = None
    checkpoint_id: str | None = None
    checkpoint: CheckpointRef | None = None

    @property
    def target_checkpoint_id(self) -> str | None:
        return self.checkpoint_id or (self.checkpoint.checkpoint_id if self.checkpoint else None)

    @property
    def checkpoint_ns(self) -> str:
        return self.checkpoint.checkpoint_ns if self.checkpoint else ""


class ThreadPrune(BaseModel):
    """Body of ``POST /threads/prune``."""

    model_config = ConfigDict(extra="ignore")

    thread_ids: list[str] = Field(min_length=1, max_length=1000)
    strategy: Literal["delete", "keep_latest"] = "delete"


class HistoryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=10, ge=1, le=1000)
    before: str | dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None


class CheckpointAt(BaseModel):
    model_config = ConfigDict(extra="ignore")

    checkpoint_id: str = Field(min_length=1)
    checkpoint_ns: str = ""
    thread_id: str | None = None


class StateAtCheckpoint(BaseModel):
    """Body of ``POST /threads/{id}/state/checkpoint``."""

    model_config = ConfigDict(extra="ignore")

    checkpoint: CheckpointAt
    subgraphs: bool = False


class RunsCancel(BaseModel):
    """Body of ``POST /runs/cancel``."""

    model_config = ConfigDict(extra="forbid")

    thread_id: str | None = None
    run_ids: list[str] | None = None
    status: Literal["pending", "running", "all"] | None = None


def check_webhook_url(url: str | None) -> str | None:
    """An absolute http(s) URL with a host, as given; anything else is refused."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise ValueError("webhook must be an http:// or https:// URL; it is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "webhook must be an absolute http:// or https:// URL with a host, e.g. https://example.com/hook"
        )
    if len(url) > 2048 or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(
            "webhook must be a URL of at most 2048 characters without spaces or control characters"
        )
    return url


class RunCreate(BaseModel):
    """Body of ``POST /threads/{id}/runs{,/stream,/wait}``."""

    model_config = ConfigDict(extra="ignore")

    assistant_id: str
    input: dict[str, Any] | None = None
    command: ResumeCommand | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: StreamMode | list[StreamMode] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    checkpoint_id: str | None = None
    checkpoint: dict[str, Any] | None = None
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    on_completion: Literal["delete", "keep"] | None = None
    """Stateless runs (``/runs…``) only: delete their temporary thread afterwards (default) or keep it."""
    durability: Literal["sync", "async", "exit"] | None = None
    webhook: str | None = None
    """An http(s) URL that gets a signed POST of the run when it ends (README: Webhooks)."""

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, url: str | None) -> str | None:
        return check_webhook_url(url)

    @model_validator(mode="after")
    def _input_or_command(self) -> RunCreate:
        if self.input is not None and self.command is not None:
            raise ValueError("send either 'input' or 'command', not both")
        if self.config and not isinstance(self.config.get("configurable", {}), dict):
            raise ValueError("config.configurable must be an object")
        return self

    @property
    def stream_modes(self) -> list[StreamMode]:
        return [self.stream_mode] if isinstance(self.stream_mode, str) else list(self.stream_mode)
