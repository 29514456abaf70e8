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
  CONSUMER. Both: ``lark.event_type``, ``lark.event_id`` (the event id), ``lark.outcome``
  (published, dead_lettered, duplicate, unauthorized, unavailable, …) and ``lark.reason`` (the
  dead-letter or error reason). Never a token, key or body.
* broker publish — ``send {topic}``, kind PRODUCER, child of the above: ``messaging.system``
  ``kafka``, ``messaging.operation.type``/``.name`` ``send``, ``messaging.destination.name``,
  ``messaging.batch.message_count`` (records of the event), after the ack
  ``messaging.destination.partition.id`` and ``messaging.kafka.offset`` (of the first record).
  Its context is written into every record's headers as ``traceparent`` (and ``tracestate``) by
  the global propagator (W3C trace context unless ``OTEL_PROPAGATORS`` says otherwise): a
  consumer extracts it to continue the trace.

Operating it: docs/operations.md, "Traces".
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
#: The instrumentation scope's name (its version is the bridge's).
INSTRUMENTATION_NAME: Final = "lark-bridge"


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Tell whether the environment asks for traces.

    Source: the OpenTelemetry environment-variable specification.

    Args:
        environ: The process environment (or a stand-in).

    Returns:
        True when one of :data:`ENABLING_VARIABLES` is set and not empty, unless
        ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` (any case).
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENABLING_VARIABLES)


def configure_from_environment(environ: Mapping[str, str]) -> Any | None:
    """Build the SDK tracer provider the environment asks for.

    Each exporter ``OTEL_TRACES_EXPORTER`` lists (comma-separated: ``otlp``, the default, over
    HTTP/protobuf; or ``console``) gets a batch span processor; an unknown one, or ``otlp``
    without the OTLP exporter installed, is skipped with a warning. The service name is
    ``OTEL_SERVICE_NAME`` (default ``lark-bridge``); the SDK and exporter read the rest of
    ``OTEL_*`` themselves. The caller shuts the provider down at exit (it flushes the batch).

    Args:
        environ: The process environment (or a stand-in).

    Returns:
        An SDK ``TracerProvider``, or None when tracing is not requested
        (:func:`tracing_requested`) or the SDK is not installed (a warning then; it is the
        optional extra ``lark-bridge[otel]``).
    """
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
    """The bridge's spans (the module docstring lists them and their attributes).

    When disabled, every method is a no-op context manager yielding None and no header is
    written.

    Args:
        provider: The tracer provider. Default: the global one.

    Attributes:
        enabled: False for the API's no-op providers (nothing configured).
        tracer: The tracer, or None when disabled.
    """

    __slots__ = ("enabled", "tracer")

    def __init__(self, provider: Any | None = None) -> None:
        provider = provider if provider is not None else trace.get_tracer_provider()
        self.enabled = not _is_noop(provider)
        self.tracer = provider.get_tracer(INSTRUMENTATION_NAME, __version__) if self.enabled else None

    @contextlib.contextmanager
    def event_span(self, name: str, kind: SpanKind, attributes: Mapping[str, Any]) -> Iterator[Span | None]:
        """Open the span of one webhook request or long-connection event, current while it runs.

        Args:
            name: The span's name (``POST {BRIDGE_HTTP_PATH}``, ``lark event``).
            kind: ``SpanKind.SERVER`` (webhook request) or ``SpanKind.CONSUMER`` (long
                connection).
            attributes: The span's attributes at its start.

        Yields:
            The span, or None when disabled.
        """
        if self.tracer is None:
            yield None
            return
        with self.tracer.start_as_current_span(name, kind=kind, attributes=dict(attributes)) as span:
            yield span

    @contextlib.contextmanager
    def publish_span(self, topic: str, count: int) -> Iterator[Span | None]:
        """Open the PRODUCER span of one publish, current while the records are sent and acknowledged.

        Named ``send {topic}``; attributes per the OpenTelemetry semantic conventions for Kafka
        messaging.

        Args:
            topic: The first record's topic; it names the span (``messaging.destination.name``).
            count: How many records the publish sends (``messaging.batch.message_count``, set
                only when more than 1).

        Yields:
            The span, or None when disabled.
        """
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
        """Write a span's context as Kafka headers, per the global propagator.

        W3C trace context (``traceparent``, ``tracestate``) unless ``OTEL_PROPAGATORS`` says
        otherwise.

        Args:
            span: The span, or None.

        Returns:
            ``(name, ASCII value)`` pairs; empty without a span or for a span that is not
            sampled-in.
        """
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
    """Record an event's outcome on its span. Does nothing without a span.

    Args:
        span: The event's span, or None.
        outcome: ``lark.outcome`` (published, dead_lettered, duplicate, unauthorized,
            unavailable, …).
        reason: ``lark.reason``, the dead-letter or error reason. Default: not set.
        status_code: ``http.response.status_code``. Default: not set.
        error: Whether to set an ERROR status (described by ``outcome``). Default False.
    """
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
    """Record an event's type and event id on its span. Does nothing without a span.

    Args:
        span: The event's span, or None.
        event_type: ``lark.event_type``; not set when None.
        event_id: ``lark.event_id``, the event id, capped by the caller; not set when None.
    """
    if span is None:
        return
    if event_type is not None:
        span.set_attribute("lark.event_type", event_type)
    if event_id is not None:
        span.set_attribute("lark.event_id", event_id)


def set_acked(span: Span | None, partitions_offsets: Sequence[tuple[int, int]]) -> None:
    """Record, after the broker's ack, the partition and offset of the first record on a span.

    Sets ``messaging.destination.partition.id`` (a string) and ``messaging.kafka.offset``.
    Does nothing without a span or without records.

    Args:
        span: The publish span, or None.
        partitions_offsets: ``(partition, offset)`` of each record acknowledged, in publish
            order.
    """
    if span is None or not partitions_offsets:
        return
    partition, offset = partitions_offsets[0]
    span.set_attribute("messaging.destination.partition.id", str(partition))
    span.set_attribute("messaging.kafka.offset", offset)
