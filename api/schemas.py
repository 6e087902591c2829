"""Request bodies of the HTTP API (LangGraph Agent Server protocol), one model per route
family. Fields the ``langgraph-sdk`` client sends but Interlock does not act on yet are
accepted and ignored; wrong types are a 422 with the field named."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runs.payload import ResumeCommand, StreamMode


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as the ISO 8601 string the protocol uses."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    thread_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


class AssistantSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    graph_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class HistoryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=10, ge=1, le=1000)
    before: str | dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None


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
    durability: Literal["sync", "async", "exit"] | None = None

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
