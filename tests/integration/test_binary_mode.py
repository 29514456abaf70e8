"""Binary content mode on a real broker: every kind through a bridge whose topics are all in
binary mode (the dead-letter topic too), read back with a real consumer — value, headers, key —
read by the CloudEvents SDK, deduplicated by a second bridge that rebuilt its ledger from the
binary records' headers, and listed by the dead-letter tools; with a real schema registry, each
topic's data schema registered and the framed values read by confluent-kafka's own serdes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bridge import envelope as ev
from bridge.dead_letters import Selection, read
from bridge.decode import decode
from bridge.inbound import read_inbound
from bridge.normalize import Topics, normalize
from bridge.registry import schema_texts, subject_of
from bridge.samples import SAMPLE_TYPES
from bridge.schemas import topic_schema
from bridge_devtools.platform import compact
from bridge_devtools.registry import LocalRegistry
from tests.support.bridges import topic_settings
from tests.support.kafka import read_topic
from tests.support.registry import call
from tests.support.samples import fresh_id, sample_event
from tests.support.schemas import validator

pytestmark = pytest.mark.integration

TOPIC_VARIABLES = (
    "topic_room_created",
    "topic_room_updated",
    "topic_room_deleted",
    "topic_room_level_created",
    "topic_room_level_updated",
    "topic_room_level_deleted",
    "topic_reserve_config_updated",
    "topic_third_party_meeting_room_event",
    "topic_dead_letter",
)


def data_schema_of(lark_type: str) -> str:
    stem = "third_party_meeting_room_event" if lark_type in ev.THIRD_PARTY_TYPES else lark_type
    return f"envelope/v1/data/{stem}.schema.json"


async def test_every_kind_lands_in_binary_mode_and_reads_back_as_the_same_event(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, BRIDGE_CLOUDEVENTS_MODE="binary")
    topics = Topics.from_settings(bridge.settings)
    assert topics.binary == set(topics.all())
    expected: dict[str, list[Any]] = {}
    for kind in SAMPLE_TYPES:
        body = sample_event(kind, event_id=f"binary-{kind}")
        expected[kind] = normalize(decode(read_inbound(compact(body))), topics)
        assert await bridge.send(bridge.platform.request(body)) == (200, {"msg": "success"})
    broken = sample_event(ev.ROOM_CREATED, event_id="binary-broken")
    del broken["event"]["room"]["room_id"]
    assert await bridge.send(bridge.platform.request(broken)) == (200, {"msg": "success"})

    fmt = JSONFormat()
    for kind, records in expected.items():
        got = await read_topic(broker.bootstrap_servers, records[0].topic, expect=len(records))
        assert len(got) == len(records), kind
        by_key = {m.key: m for m in got}
        for record in records:
            m = by_key[record.key]
            # value and headers exactly as normalize made them (no tracing configured here)
            assert (m.value, tuple(m.headers)) == (record.value, record.headers), kind
            headers = dict(m.headers)
            assert headers["content-type"] == b"application/json"
            assert headers["ce_type"] == kind.encode() and headers["ce_specversion"] == b"1.0"
            assert headers["ce_partitionkey"] == headers["ce_subject"] == m.key
            assert headers[ev.EVENT_ID_HEADER] == headers["ce_larkeventid"] == f"binary-{kind}".encode()
            validator(data_schema_of(kind)).validate(json.loads(m.value))
            event = ce_kafka.from_kafka(ce_kafka.KafkaMessage(headers=headers, key=m.key, value=m.value), fmt)
            attributes = event.get_attributes()
            assert (attributes["type"], attributes["id"], attributes["envelopeversion"]) == (
                kind,
                headers["ce_id"].decode(),
                "1",
            )
            assert event.get_data() == json.loads(m.value)

    [dead] = await read_topic(broker.bootstrap_servers, topics.dead_letter, expect=1)
    assert dict(dead.headers)["ce_type"] == ev.DEAD_LETTER_TYPE.encode()
    assert json.loads(dead.value)["reason"] == "invalid_event"
    validator("dead_letter/v1/data/dead_letter.schema.json").validate(json.loads(dead.value))
    listed = [dl async for dl in read(bridge.settings, Selection())]
    assert [(dl.event_id, dl.reason, dl.lark_type) for dl in listed] == [
        ("binary-broken", "invalid_event", ev.ROOM_CREATED)
    ]

    # A second replica on the same topics rebuilds its ledger from the binary records' headers:
    # every event, the dead letter too, is a duplicate there and writes nothing.
    same_topics = {f"BRIDGE_{name.upper()}": getattr(bridge.settings, name) for name in TOPIC_VARIABLES}
    replica = await start_bridge(broker.bootstrap_servers, BRIDGE_CLOUDEVENTS_MODE="binary", **same_topics)
    for kind in SAMPLE_TYPES:
        again = sample_event(kind, event_id=f"binary-{kind}")
        assert await replica.send(replica.platform.request(again)) == (200, {"msg": "success"})
    assert await replica.send(replica.platform.request(broken)) == (200, {"msg": "success"})
    suppressed = replica.metrics.registry.get_sample_value("bridge_duplicates_suppressed_total", {"source": "log"})
    assert suppressed == len(SAMPLE_TYPES) + 1
    for records in expected.values():
        assert len(await read_topic(broker.bootstrap_servers, records[0].topic, expect=len(records))) == len(records)


async def test_with_a_registry_each_binary_topic_registers_its_data_schema_and_confluents_serdes_read_it(
    broker: Any, registry: LocalRegistry, start_bridge: Any
) -> None:
    topics = topic_settings(f"srb-{uuid.uuid4().hex[:8]}")
    bridge = await start_bridge(
        broker.bootstrap_servers,
        BRIDGE_SCHEMA_REGISTRY_URL=registry.url,
        BRIDGE_CLOUDEVENTS_MODE="binary",
        **topics,
    )
    unknown = sample_event(ev.ROOM_CREATED, event_id=fresh_id())
    unknown["header"]["event_type"] = "vc.room.exploded_v1"  # one dead letter
    for body in (*(sample_event(kind, event_id=fresh_id()) for kind in SAMPLE_TYPES), unknown):  # a topic each
        assert await bridge.send(bridge.platform.request(body)) == (200, {"msg": "success"})

    texts = schema_texts(Topics.from_settings(bridge.settings))
    assert json.loads(texts[topics["BRIDGE_TOPIC_DEAD_LETTER"]]) == topic_schema(None, binary=True)
    assert json.loads(texts[topics["BRIDGE_TOPIC_THIRD_PARTY_MEETING_ROOM_EVENT"]]) == topic_schema(
        frozenset(ev.THIRD_PARTY_TYPES), binary=True
    )
    by_topic = {"subject.name.strategy.type": "TOPIC"}
    with SchemaRegistryClient({"url": registry.url, "timeout": 10}) as client:
        expected = {"BRIDGE_TOPIC_THIRD_PARTY_MEETING_ROOM_EVENT": 2}
        for setting, topic in topics.items():
            status, latest = call("GET", f"{registry.url}/subjects/{subject_of(topic)}/versions/latest")
            assert status == 200 and json.loads(latest["schema"]) == json.loads(texts[topic])
            assert "data" not in json.loads(texts[topic])["properties"]  # data's schema, not the envelope's
            records = await read_topic(broker.bootstrap_servers, topic, expect=expected.get(setting, 1))
            assert len(records) == expected.get(setting, 1)
            for record in records:
                value = record.value
                assert value[:1] == b"\x00" and int.from_bytes(value[1:5], "big") == latest["id"]
                headers = dict(record.headers)
                assert headers["content-type"] == b"application/json" and b"ce_type" not in value
                document = json.loads(value[5:])
                ctx = SerializationContext(topic, MessageField.VALUE)
                deserializer = JSONDeserializer(None, schema_registry_client=client, conf=by_topic)
                assert deserializer(value, ctx) == document  # validated against the data schema
                serializer = JSONSerializer(texts[topic], client, conf={"auto.register.schemas": False, **by_topic})
                assert serializer(document, ctx) == value
                event = ce_kafka.from_binary(
                    ce_kafka.KafkaMessage(headers=headers, key=record.key, value=value[5:]), JSONFormat()
                )
                assert event.get_attributes()["id"] == headers["ce_id"].decode() and event.get_data() == document
    listed = [dl async for dl in read(bridge.settings, Selection())]  # framed and binary: read all the same
    assert [(dl.event_id, dl.reason) for dl in listed] == [(unknown["header"]["event_id"], "unknown_event_type")]
