"""The queue payload: everything a worker needs to execute a run, written by the API in
the same transaction as the run record (one pydantic model per boundary)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StreamMode = Literal[
    "values",
    "updates",
    "messages",
    "messages-tuple",
    "custom",
    "events",
    "debug",
    "tasks",
    "checkpoints",
]


class ResumeCommand(BaseModel):
    """LangGraph ``Command`` as the protocol sends it."""

    model_config = ConfigDict(extra="forbid")

    resume: Any = None
    update: Any = None
    goto: Any = None


class SegmentLink(BaseModel):
    """The run segment a resume continues, as the thread record keeps it: the resumed
    segment's trace links to it (``runs/segment.py``)."""

    model_config = ConfigDict(extra="ignore")

    segment: int = 1
    """Number of the continued segment (the first run of a thread is segment 1)."""
    trace_id: str | None = None
    """Its trace (32 hex digits); None when it was not traced."""
    span_id: str | None = None
    """Its root span (16 hex digits)."""
    interrupts: int = 0
    """Interrupts it left pending (this resume answers them)."""
    interrupted_at: int | None = None
    """When it paused (ms since the epoch)."""


class RunPayload(BaseModel):
    """A run as queued. Fields may be added; workers ignore what they do not know."""

    model_config = ConfigDict(extra="ignore")

    graph_id: str
    assistant_id: str
    input: Any = None
    command: ResumeCommand | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    stream_mode: list[StreamMode] = Field(default_factory=list)
    """Modes whose events are published; empty for ``/wait`` (only the outcome matters)."""
    stream_subgraphs: bool = False
    interrupt_before: list[str] | Literal["*"] | None = None
    interrupt_after: list[str] | Literal["*"] | None = None
    checkpoint_id: str | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    trace_context: dict[str, str] = Field(default_factory=dict)
    """W3C trace context of the request that created the run (``traceparent``…)."""
    continues: SegmentLink | None = None
    """For a resume: the segment paused on the interrupts it answers."""
    tenant: str = "default"
    """Whose run it is; decisions and anything else the run writes carry it."""
    webhook: str | None = None
    """http(s) URL that gets a signed POST of the run when it ends (``runs/webhooks.py``)."""
