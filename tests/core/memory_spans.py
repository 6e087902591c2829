"""Shared by the span tests of ``tests/core``: a tracer provider whose spans land in
memory, and a remote parent to put spans under."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

REMOTE = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(TraceFlags.SAMPLED)
)


def memory_provider(
    resource: Mapping[str, Any] | None = None, **options: Any
) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider (``options`` as ``TracerProvider`` takes them) whose spans end in the
    returned exporter; the resource is ``service.name=interlock`` unless given."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(dict(resource or {"service.name": "interlock"})), **options
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory
