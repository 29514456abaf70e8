"""OpenTelemetry tracing: a span per event, a child span per broker publish, W3C trace context in
each record's Kafka headers — so that a platform team follows an event from the webhook (or the
long connection) to its consumer.

Off unless configured, at no cost then: :func:`configure_from_environment` builds an SDK tracer
provider only when an ``OTEL_*`` variable asks for traces (``OTEL_TRACES_EXPORTER``,
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, and not
``OTEL_SDK_DISABLED=true``); everything else is read by the SDK and exporter themselves (service
name and resource, sampler, endpoint, headers, propagators: the OpenTelemetry environment-variable
specification). Without one, :class:`Tracing` is disabled: no span object, no header, one boolean
test per event. The SDK and the OTLP exporter are the optional extra ``lark-bridge[otel]`` (in
the container image); the API is a dependency.

Spans (OpenTelemetry semantic conventions for HTTP and for Kafka messaging):

* webhook request — ``POST {BRIDGE_HTTP_PATH}``, kind SERVER: ``http.request.method``,
  ``url.path``, ``http.response.status_code``; long-connection event — ``lark event``, kind
  CONSUMER. Both: ``lark.event_type``, ``lark.event_id`` (the delivery id), ``lark.outcome``
  (published, dead_lettered, duplicate, unauthorized, unavailable, …) and ``lark.reason`` (the
  dead-letter or error reason). Never a token, key or body.
* broker publish — ``send {topic}``, kind PRODUCER, child of the above: ``messaging.system``
  ``kafka``, ``messaging.operation.type``/``.name`` ``send``, ``messaging.destination.name``,
  ``messaging.batch.message_count`` (records of the event), after the ack
  ``messaging.destination.partition.id`` and ``messaging.kafka.offset`` (of the first record).
  Its context is written into every record's headers as ``traceparent`` (and ``tracestate``) by
  the global propagator (W3C trace context unless ``OTEL_PROPAGATORS`` says otherwise): a
  consumer extracts it to continue the trace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, ProxyTracerProvider, Span, SpanKind, Status, StatusCode

from bridge import __version__

log = logging.getLogger("bridge.tracing")

#: Variables that turn tracing on (any of them set, non-empty, and not the exporter "none").
ENABLING_VARIABLES: Final = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)
INSTRUMENTATION_NAME: Final = "lark-bridge"


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """True when ``environ`` asks for traces (module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENABLING_VARIABLES)


def configure_from_environment(environ: Mapping[str, str]) -> Any | None:
    """An SDK ``TracerProvider`` exporting with ``OTEL_TRACES_EXPORTER`` (``otlp``, the default,
    over HTTP/protobuf; or ``console``) through a batch span processor, or None when tracing is not
    requested or the SDK is not installed (a warning then). The caller shuts it down at exit (it
    flushes the batch)."""
    if not tracing_requested(environ):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log.warning(
            "OTEL_* asks for traces but the OpenTelemetry SDK is not installed (pip install 'lark-bridge[otel]')"
        )
        return None
    kinds = [k.strip().lower() for k in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if k.strip()]
    provider = TracerProvider(
        resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or "lark-bridge"})
    )
    for kind in kinds:
        exporter: SpanExporter
        if kind == "console":
            exporter = ConsoleSpanExporter()
        elif kind == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp but the OTLP exporter is not installed (lark-bridge[otel])")
                continue
            exporter = OTLPSpanExporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored (otlp, console or none)", kind)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _is_noop(provider: Any) -> bool:
    if isinstance(provider, ProxyTracerProvider):  # the API's default: nothing was configured
        return True
    return type(provider).__name__ == "NoOpTracerProvider"


class Tracing:
    """The bridge's spans, from ``provider`` (default: the global one). ``enabled`` is False for
    the API's no-op providers: then every method is a no-op context manager yielding None and no
    header is written (module docstring)."""

    __slots__ = ("enabled", "tracer")

    def __init__(self, provider: Any | None = None) -> None:
        provider = provider if provider is not None else trace.get_tracer_provider()
        self.enabled = not _is_noop(provider)
        self.tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__) if self.enabled else None

    @contextlib.contextmanager
    def event_span(self, name: str, kind: SpanKind, attributes: Mapping[str, Any]) -> Iterator[Span | None]:
        """The span of one webhook request (SERVER) or long-connection event (CONSUMER), current
        while it runs; None when disabled."""
        if self.tracer is None:
            yield None
            return
        with self.tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes)) as span:
            yield span

    @contextlib.contextmanager
    def publish_span(self, topic: str, count: int) -> Iterator[Span | None]:
        """The PRODUCER span of one publish of ``count`` records (the first record's ``topic``
        names it), current while the records are sent and acknowledged; None when disabled."""
        if self.tracer is None:
            yield None
            return
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": topic,
        }
        if count > 1:
            attributes["messaging.batch.message_count"] = count
        with self.tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes) as span:
            yield span

    @staticmethod
    def headers(span: Span | None) -> list[tuple[str, bytes]]:
        """``traceparent`` / ``tracestate`` (per the global propagator) of ``span``'s context as
        Kafka headers; empty without a span or for a span that is not sampled-in."""
        if span is None or (isinstance(span, NonRecordingSpan) and not span.get_span_context().is_valid):
            return []
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return [(k, v.encode("ascii")) for k, v in carrier.items()]


def set_outcome(
    span: Span | None,
    outcome: str,
    *,
    reason: str | None = None,
    status_code: int | None = None,
    error: bool = False,
) -> None:
    """Record ``lark.outcome`` (``lark.reason``, the HTTP status) on ``span``; an ERROR status
    when ``error``."""
    if span is None:
        return
    span.set_attribute("lark.outcome", outcome)
    if reason is not None:
        span.set_attribute("lark.reason", reason)
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    if error:
        span.set_status(Status(StatusCode.ERROR, outcome))


def set_lark(span: Span | None, event_type: str | None, event_id: str | None) -> None:
    """``lark.event_type`` and ``lark.event_id`` (the delivery id; capped by the caller) on ``span``."""
    if span is None:
        return
    if event_type is not None:
        span.set_attribute("lark.event_type", event_type)
    if event_id is not None:
        span.set_attribute("lark.event_id", event_id)


def set_acked(span: Span | None, partitions_offsets: Sequence[tuple[int, int]]) -> None:
    """After the broker's ack: partition and offset of the first record on ``span``."""
    if span is None or not partitions_offsets:
        return
    partition, offset = partitions_offsets[0]
    span.set_attribute("messaging.destination.partition.id", str(partition))
    span.set_attribute("messaging.kafka.offset", offset)
