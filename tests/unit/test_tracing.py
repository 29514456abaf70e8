"""Tracing is off unless an OTEL_* variable asks for it, and then costs nothing."""

from __future__ import annotations

import timeit

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from bridge.tracing import Tracing, configure_from_environment, set_lark, set_outcome, tracing_requested


def test_tracing_is_requested_only_by_the_standard_variables() -> None:
    assert not tracing_requested({})
    assert not tracing_requested({"OTEL_SERVICE_NAME": "bridge"})  # naming the service is not enough
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing_requested({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not tracing_requested({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})


def test_the_provider_follows_the_environment() -> None:
    assert configure_from_environment({}) is None
    provider = configure_from_environment({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "lark-bridge-x"})
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "lark-bridge-x"
    provider.shutdown()
    otlp = configure_from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert isinstance(otlp, TracerProvider)
    otlp.shutdown()


def test_disabled_tracing_makes_no_span_and_no_header() -> None:
    tracing = Tracing()  # the global provider: the API's no-op one in this process
    assert not tracing.enabled
    with tracing.event_span("x", SpanKind.SERVER, {}) as span, tracing.publish_span("t", 2) as child:
        assert span is None and child is None and Tracing.headers(child) == []
    enabled = Tracing(TracerProvider())
    with enabled.publish_span("t", 1) as span:
        assert span is not None and [k for k, _ in Tracing.headers(span)] == ["traceparent"]


def test_the_cost_of_disabled_tracing_per_event_is_well_under_a_microsecond_of_calls() -> None:
    """What an event pays with tracing off: the ``enabled`` tests and the attribute setters'
    early returns. Measured against a no-op loop; printed for BENCHMARKS.md."""
    tracing = Tracing()

    def per_event() -> None:
        if tracing.enabled:
            raise AssertionError
        set_lark(None, "vc.room.created_v1", "id")
        set_outcome(None, "published", status_code=200)
        if tracing.enabled:
            raise AssertionError

    n = 200_000
    cost = min(timeit.repeat(per_event, number=n, repeat=3)) / n
    base = min(timeit.repeat(lambda: None, number=n, repeat=3)) / n
    print(f"disabled tracing: {(cost - base) * 1e6:.3f} µs per event")
    assert cost - base < 2e-6  # an event costs ~1,000 µs of CPU on the benchmark machine
