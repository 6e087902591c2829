"""Which metric exporters the standard OTEL_* variables select."""

from __future__ import annotations

from core.metrics import exporters_from_env


def test_no_exporter_by_default() -> None:
    assert exporters_from_env({}) == []


def test_otlp_when_an_endpoint_is_set() -> None:
    assert exporters_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == ["otlp"]
    assert exporters_from_env({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x/v1/metrics"}) == ["otlp"]


def test_explicit_exporter_list_wins() -> None:
    # Phoenix takes traces only: OTEL_METRICS_EXPORTER=none keeps metrics off OTLP.
    assert (
        exporters_from_env({"OTEL_METRICS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) == []
    )
    assert exporters_from_env({"OTEL_METRICS_EXPORTER": "console,prometheus"}) == ["console"]
