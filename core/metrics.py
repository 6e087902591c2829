"""OpenTelemetry metrics: the instruments every layer records into, and their set-up.

Metrics go over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``) is set or ``OTEL_METRICS_EXPORTER`` names
``otlp``/``console``, and to a Prometheus registry when the process serves ``/metrics``
(the API process). With neither, no meter provider is installed, :func:`instruments`
returns None and recording costs one global lookup.

Every process counts only what it did itself: ``/metrics`` of an API process shows its
own (in-process) workers; ``interlock worker`` processes export over OTLP. Sum over
processes in the backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, Meter, UpDownCounter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

METER_NAME = "interlock"

# Seconds: from a fast node (~1 ms) to an approval that waits for days.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_WAIT_SECONDS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 86_400, 3 * 86_400, 7 * 86_400)
_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16_384, 65_536)


@dataclass(frozen=True)
class Instruments:
    """What Interlock measures. Attribute names follow the span attributes."""

    runs_started: Counter
    """Run segments that began executing (``graph_id``, ``resume``)."""
    runs_finished: Counter
    """Run segments that ended (``graph_id``, ``status``)."""
    run_duration: Histogram
    """Execution time of a run segment, claim to outcome (``graph_id``, ``status``)."""
    node_duration: Histogram
    """One node execution (``graph_id``, ``node``, ``status``: ok | error | interrupt)."""
    queue_wait: Histogram
    """Time from entering the queue to a worker's claim (``graph_id``)."""
    decisions: Counter
    """Decisions taken (``node``, ``branch``, ``method``: llm | fallback)."""
    fallbacks: Counter
    """Decisions that took the fallback branch (``node``)."""
    interrupts_pending: UpDownCounter
    """Interrupts (approvals, reviews) opened minus answered (``graph_id``)."""
    interrupt_wait: Histogram
    """Time an interrupt waited for its answer: segment end to the resuming segment (``graph_id``)."""
    tokens: Histogram
    """``gen_ai.client.token.usage``: tokens per LLM call (``gen_ai.token.type``, model)."""
    llm_duration: Histogram
    """``gen_ai.client.operation.duration`` of LLM calls (model, ``error.type``)."""


_instruments: Instruments | None = None
_provider: MeterProvider | None = None
_prometheus = False


def instruments() -> Instruments | None:
    """The instruments, or None when this process records no metrics."""
    return _instruments


def make_instruments(meter: Meter) -> Instruments:
    return Instruments(
        runs_started=meter.create_counter(
            "interlock.runs.started", unit="{segment}", description="Run segments started"
        ),
        runs_finished=meter.create_counter(
            "interlock.runs.finished", unit="{segment}", description="Run segments ended, by status"
        ),
        run_duration=meter.create_histogram(
            "interlock.run.duration", unit="s", description="Run segment execution time"
        ),
        node_duration=meter.create_histogram(
            "interlock.node.duration", unit="s", description="Node execution time"
        ),
        queue_wait=meter.create_histogram(
            "interlock.queue.wait", unit="s", description="Time from enqueue to a worker's claim"
        ),
        decisions=meter.create_counter(
            "interlock.decisions", unit="{decision}", description="Decisions by node, branch and method"
        ),
        fallbacks=meter.create_counter(
            "interlock.decision.fallbacks", unit="{decision}", description="Decisions that fell back"
        ),
        interrupts_pending=meter.create_up_down_counter(
            "interlock.interrupts.pending",
            unit="{interrupt}",
            description="Interrupts (approvals) opened minus answered",
        ),
        interrupt_wait=meter.create_histogram(
            "interlock.interrupt.wait", unit="s", description="Time from an interrupt to its answer"
        ),
        tokens=meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens per LLM call"
        ),
        llm_duration=meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="LLM call duration"
        ),
    )


def _views() -> list[View]:
    def buckets(name: str, bounds: tuple[float, ...]) -> View:
        return View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(boundaries=bounds))

    return [
        *(
            buckets(n, _SECONDS)
            for n in (
                "interlock.run.duration",
                "interlock.node.duration",
                "interlock.queue.wait",
                "gen_ai.client.operation.duration",
            )
        ),
        buckets("interlock.interrupt.wait", _WAIT_SECONDS),
        buckets("gen_ai.client.token.usage", _TOKENS),
    ]


def exporters_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """Which metric exporters the standard environment variables ask for."""
    env = os.environ if env is None else env
    named = [e.strip() for e in env.get("OTEL_METRICS_EXPORTER", "").split(",") if e.strip()]
    if named:
        return [e for e in named if e in ("otlp", "console")]
    if env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return ["otlp"]
    return []


def configure_metrics(
    service_name: str, *, prometheus: bool = False, extra_readers: list[MetricReader] | None = None
) -> MeterProvider | None:
    """Install the global meter provider once per process; returns it (None when there is
    nowhere to send metrics, or it was done already).

    ``prometheus``: also keep metrics in ``prometheus_client``'s registry, which
    :func:`prometheus_text` serves.
    """
    global _instruments, _provider, _prometheus
    if _provider is not None or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    readers: list[MetricReader] = list(extra_readers or [])
    for name in exporters_from_env():
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        else:
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    if prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
        _prometheus = True
    if not readers:
        return None
    _provider = MeterProvider(
        metric_readers=readers,
        # Exemplars (the trace of a sample) are kept by default for every measurement made
        # inside a sampled span; Prometheus' text format does not carry them, and they
        # cost a sizeable share of the metrics' CPU (seen in py-spy profiles).
        exemplar_filter=AlwaysOffExemplarFilter(),
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}),
        views=_views(),
    )
    metrics.set_meter_provider(_provider)
    _instruments = make_instruments(_provider.get_meter(METER_NAME))
    return _provider


def prometheus_text() -> bytes | None:
    """The Prometheus exposition of this process's metrics, or None when it keeps none."""
    if _provider is None or not _prometheus:
        return None
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY)


def shutdown_metrics() -> None:
    """Export what is left and stop the readers (call at process exit). The global
    provider cannot be replaced, so metrics stay off in this process afterwards."""
    global _instruments
    if _provider is not None and _instruments is not None:
        _instruments = None
        _provider.shutdown()
