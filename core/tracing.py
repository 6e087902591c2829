"""OpenTelemetry set-up, driven by the standard ``OTEL_*`` environment variables.

Spans go to OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, or when ``OTEL_TRACES_EXPORTER`` names
``otlp``/``console``; otherwise no tracer provider is installed and spans cost nothing.
Set-up happens once per process, from the composition root, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

SERVICE_NAME = "interlock"

# Attribute names shared by every layer (OpenInference + GenAI semantic conventions).
SESSION_ID = "session.id"
CONVERSATION_ID = "gen_ai.conversation.id"
SPAN_KIND = "openinference.span.kind"

QUEUE_SIZE = 65_536
"""Spans the batch processor holds (the SDK's default, 2,048, dropped spans in bursts here)."""
BATCH_SIZE = 2_048
"""Spans per export request (~1 MB of OTLP): each request costs ~2 ms of the service's CPU
whatever its size, so fewer, larger ones (the SDK's default is 512)."""

_configured = False


def _ours_unless_set(variable: str, default: int) -> int | None:
    """``default``, or None when the standard ``variable`` is set: then the batch
    processor reads (and checks) it itself."""
    return None if os.environ.get(variable) else default


current_thread: ContextVar[str | None] = ContextVar("interlock_thread", default=None)
"""The thread whose run segment this task executes (set by the worker): spans made deep
inside a node (decisions, LLM calls) take their session from it."""

CheckpointListener = Callable[[str, str, int], None]
"""Called with ``(checkpoint_ns, checkpoint_id, step)`` after a checkpoint is stored."""

checkpoint_listener: ContextVar[CheckpointListener | None] = ContextVar(
    "interlock_checkpoint_listener", default=None
)
"""Set by the worker while it traces a segment, so node spans can carry the id of the
checkpoint written after them; unset (one lookup per checkpoint) otherwise."""


def session_attributes() -> dict[str, str]:
    """``session.id`` and ``gen_ai.conversation.id`` of the current thread, or nothing
    outside a run."""
    thread_id = current_thread.get()
    return {SESSION_ID: thread_id, CONVERSATION_ID: thread_id} if thread_id else {}


def checkpoint_written(checkpoint_ns: str, checkpoint_id: str, step: int) -> None:
    """Tell the segment being traced (if any) that a checkpoint was stored."""
    listener = checkpoint_listener.get()
    if listener is not None:
        listener(checkpoint_ns, checkpoint_id, step)


def exporters_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """Which span exporters the standard environment variables ask for."""
    env = os.environ if env is None else env
    named = [e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if named:
        return [e for e in named if e != "none"]
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return ["otlp"]
    return []


def configure_tracing(
    service_name: str = SERVICE_NAME, *, extra_processors: list[SpanProcessor] | None = None
) -> TracerProvider | None:
    """Install the global tracer provider once; returns it, or None if already done.

    The batch processor holds ``QUEUE_SIZE`` spans and exports ``BATCH_SIZE`` per request
    unless ``OTEL_BSP_MAX_QUEUE_SIZE`` / ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` say otherwise.
    """
    global _configured
    if _configured:
        return None
    _configured = True
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    exporters = exporters_from_env()
    if not exporters and not extra_processors:
        # Nowhere to send spans: keep the API's no-op tracer, whose spans cost nothing
        # (a recording provider without processors cost ~2.5 ms of CPU per 10-node run).
        # Incoming ``traceparent`` headers still propagate through the queue.
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    )
    for name in exporters:
        if name == "otlp":
            from core.otlp import SpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(
                    SpanExporter(),
                    max_queue_size=_ours_unless_set("OTEL_BSP_MAX_QUEUE_SIZE", QUEUE_SIZE),
                    max_export_batch_size=_ours_unless_set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", BATCH_SIZE),
                )
            )
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    for processor in extra_processors or []:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing() -> None:
    """Flush and stop exporters (call at process exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
