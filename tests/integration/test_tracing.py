"""Trace context from the webhook and the long connection into Kafka, with the OpenTelemetry SDK's
in-memory exporter and the real broker: the spans, their attributes (no secrets), and a consumer
continuing the trace from a record's headers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bridge import envelope as ev
from bridge_devtools.lark_ws import FakeLongConnectionPlatform
from tests.support.credentials import KEY, TOKEN
from tests.support.kafka import read_topic
from tests.support.samples import fresh_id, sample_event

pytestmark = pytest.mark.integration
APP_ID = "cli_tracing_test"
APP_SECRET = "tracing-app-secret-a91f"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
async def platform() -> Any:
    fake = FakeLongConnectionPlatform(APP_ID, APP_SECRET)
    await fake.start()
    yield fake
    await fake.close()


def one(spans: list[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def carrier(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def no_secret_in(spans: list[ReadableSpan]) -> None:
    text = json.dumps([dict(s.attributes or {}) for s in spans])
    for secret in (TOKEN, KEY, APP_SECRET):
        assert secret not in text


async def test_a_webhook_event_is_one_trace_from_the_request_to_each_record(
    broker: Any, start_bridge: Any, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    bridge = await start_bridge(broker.bootstrap_servers, tracer_provider=provider)
    event = sample_event(ev.THIRD_PARTY_CREATED, event_id=fresh_id())  # lists rooms: a fan-out
    assert (await bridge.send(bridge.platform.request(event)))[0] == 200
    finished = list(exporter.get_finished_spans())
    server, producer = one(finished, SpanKind.SERVER), one(finished, SpanKind.PRODUCER)
    assert server.name == f"POST {bridge.settings.http_path}"
    attrs = dict(server.attributes or {})
    assert attrs["lark.event_type"] == ev.THIRD_PARTY_CREATED and attrs["lark.event_id"] == event["uuid"]
    assert attrs["lark.outcome"] == "published" and attrs["http.response.status_code"] == 200
    assert producer.parent is not None and producer.parent.span_id == server.context.span_id
    topic = bridge.settings.topic_third_party_meeting_room_event
    p = dict(producer.attributes or {})
    assert producer.name == f"send {topic}" and p["messaging.system"] == "kafka"
    assert p["messaging.destination.name"] == topic and p["messaging.operation.type"] == "send"
    assert "messaging.kafka.offset" in p and "messaging.destination.partition.id" in p

    records = await read_topic(broker.bootstrap_servers, topic, expect=2)
    trace_id = format_trace_id(producer.context.trace_id)
    for record in records:
        headers = carrier(record)
        version, trace, parent, flags = headers["traceparent"].split("-")
        assert (version, trace, parent) == ("00", trace_id, format_span_id(producer.context.span_id))
        assert int(flags, 16) & 1  # sampled
        # A consumer continues the trace from the record's headers.
        ctx = TraceContextTextMapPropagator().extract(headers)
        with provider.get_tracer("consumer").start_as_current_span(
            f"process {topic}", context=ctx, kind=SpanKind.CONSUMER
        ) as consumer_span:
            assert consumer_span.get_span_context().trace_id == producer.context.trace_id
    consumers = [s for s in exporter.get_finished_spans() if s.name == f"process {topic}"]
    assert len(consumers) == 2 and all(s.parent and s.parent.span_id == producer.context.span_id for s in consumers)
    no_secret_in(list(exporter.get_finished_spans()))


async def test_duplicates_and_refusals_are_spans_without_a_publish(
    broker: Any, start_bridge: Any, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    bridge = await start_bridge(broker.bootstrap_servers, tracer_provider=provider)
    event = sample_event(ev.ROOM_CREATED, event_id=fresh_id())
    assert (await bridge.send(bridge.platform.request(event)))[0] == 200
    exporter.clear()
    assert (await bridge.send(bridge.platform.request(event)))[0] == 200
    (dup,) = exporter.get_finished_spans()
    assert dict(dup.attributes or {})["lark.outcome"] == "duplicate"
    exporter.clear()
    req = bridge.platform.request(sample_event(ev.ROOM_CREATED, event_id=fresh_id()))
    req.headers["X-Lark-Signature"] = "0" * 64
    assert (await bridge.send(req))[0] == 401
    (refused,) = exporter.get_finished_spans()
    attrs = dict(refused.attributes or {})
    assert attrs["lark.outcome"] == "unauthorized" and attrs["lark.reason"] == "signature_mismatch"
    assert attrs["http.response.status_code"] == 401 and "lark.event_id" not in attrs
    no_secret_in([dup, refused])


async def test_without_tracing_records_carry_no_trace_headers(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    assert (await bridge.send(bridge.platform.request(sample_event(ev.ROOM_CREATED, event_id=fresh_id()))))[0] == 200
    (record,) = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert not {"traceparent", "tracestate"} & set(carrier(record))


async def test_a_long_connection_event_is_a_consumer_span_with_its_publish(
    broker: Any,
    platform: FakeLongConnectionPlatform,
    start_bridge: Any,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    bridge = await start_bridge(
        broker.bootstrap_servers,
        tracer_provider=provider,
        BRIDGE_LARK_SUBSCRIPTION_MODE="long_connection",
        BRIDGE_LARK_APP_ID=APP_ID,
        BRIDGE_LARK_APP_SECRET=APP_SECRET,
        BRIDGE_LARK_DOMAIN=platform.url,
    )
    event = sample_event(ev.ROOM_CREATED, token=None, event_id=fresh_id())
    assert (await platform.wait_ack(await platform.push(json.dumps(event).encode()))).code == 200
    finished = list(exporter.get_finished_spans())
    consumer, producer = one(finished, SpanKind.CONSUMER), one(finished, SpanKind.PRODUCER)
    attrs = dict(consumer.attributes or {})
    assert consumer.name == "lark event" and attrs["lark.ingress"] == "long_connection"
    assert attrs["lark.outcome"] == "published" and attrs["lark.event_id"] == event["header"]["event_id"]
    assert producer.parent is not None and producer.parent.span_id == consumer.context.span_id
    (record,) = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert carrier(record)["traceparent"].split("-")[1] == format_trace_id(consumer.context.trace_id)
    no_secret_in(finished)
