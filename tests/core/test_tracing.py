"""Which exporter the standard OTEL_* variables select."""

from __future__ import annotations

from core.tracing import exporters_from_env


def test_no_exporter_by_default() -> None:
    assert exporters_from_env({}) == []


def test_otlp_when_an_endpoint_is_set() -> None:
    assert exporters_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:6006"}) == ["otlp"]
    assert exporters_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x/v1/traces"}) == ["otlp"]


def test_explicit_exporter_list_wins() -> None:
    env = {"OTEL_TRACES_EXPORTER": "console,otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}
    assert exporters_from_env(env) == ["console", "otlp"]
    assert (
        exporters_from_env({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) == []
    )
