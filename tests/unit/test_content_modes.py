"""CloudEvents content modes of the records (docs/envelope.md, "Binary content mode"):
structured (the default) pinned byte for byte; binary mode's value and headers for every kind, as
the Kafka protocol binding maps them and as the CloudEvents SDK reads them; the settings; the
schemas; dead letters read back in either mode."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1 import kafka as ce_kafka_v1

from bridge import envelope as ev
from bridge.dead_letters import REPLAYED_HEADER, _dead_letter, records_of
from bridge.decode import decode
from bridge.errors import DeadLetterCause
from bridge.inbound import read_inbound
from bridge.normalize import Record, Topics, dead_letter, normalize
from bridge.registry import schema_texts, wire_prefix
from bridge.samples import SAMPLE_TYPES, sample
from bridge.schemas import topic_schema
from bridge.settings import SettingsError, load_settings
from bridge_devtools.platform import compact
from tests.support.schemas import validator
from tests.support.topics import NAMES, TOPICS

BASE_ENV = {"BRIDGE_LARK_VERIFICATION_TOKEN": "t"}
RECEIVED_MS = 1_608_725_990_000

#: sha256 over (topic, key, value, headers) of every record of each documented sample, and of the
#: dead letter of the room sample without its room id, as the bridge wrote them before content
#: modes existed: structured records never change.
STRUCTURED_DIGESTS = {
    "vc.room.created_v1": "e6a717b1b00f9d0d71f35ccd6050df9f358dcedc8a54072409be20c4e6e23045",
    "vc.reserve_config.updated_v1": "b3a26e165bddce0522b5b7100a480fdda3140ad954f8fbda38fadb1168337214",
    "third_party_meeting_room_event_created": "b4e2a08c55d1210d62da3004ea1e23ed12d03df1f93d866378ee7659afb41877",
    "vc.room.updated_v1": "041edfa91c7497bab5696b50d8bcf49e67b75dc883f6a6d660508d5635de748f",
    "vc.room.deleted_v1": "ae413580355cacdbb7eec4d9f41e0dc9ab0b083fa98c83c58208b79e7ccfe20f",
    "vc.room_level.created_v1": "6d82a8b65974454848ffbedb37671a059eb7052f161db54c314c1adb313b956f",
    "vc.room_level.updated_v1": "9c1e91b11c5d23c58bd3795d54b6cc19e6a1c118f8fc6bb43a0c59f39baf8619",
    "vc.room_level.deleted_v1": "82e3f9ec252a9928749dbb8ed1682fb63675b230cad1101f6e703cd3a2c3ffc3",
    "dead_letter": "70885b1e41a859b67bda502ea0774b08e73fd074ce195c16fc037da90b890096",
}


def digest(records: Sequence[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        parts = (r.topic.encode(), r.key or b"-", r.value, *(n.encode() + b"=" + v for n, v in r.headers))
        for part in parts:
            h.update(len(part).to_bytes(4, "big") + part)
    return h.hexdigest()


#: Every kind the bridge writes: the documented samples, the two third-party changes that share
#: the created sample, and a dead letter.
KINDS = (*SAMPLE_TYPES, ev.THIRD_PARTY_UPDATED, ev.THIRD_PARTY_DELETED, "dead_letter")


def records_of_kind(kind: str, topics: Topics) -> list[Record]:
    if kind in (ev.THIRD_PARTY_UPDATED, ev.THIRD_PARTY_DELETED):
        body = sample(ev.THIRD_PARTY_CREATED)
        body["event"]["type"] = kind
        return normalize(decode(read_inbound(compact(body))), topics)
    if kind != "dead_letter":
        return normalize(decode(read_inbound(compact(sample(kind)))), topics)
    body = sample("vc.room.created_v1")
    del body["event"]["room"]["room_id"]
    inbound = read_inbound(compact(body))
    with pytest.raises(DeadLetterCause) as failure:
        decode(inbound)
    return [dead_letter(inbound, failure.value, received_ms=RECEIVED_MS, topics=topics)]


#: Settings that leave every topic structured, or the ones the pinned records go to (an override
#: of another topic changes nothing here).
STRUCTURED_ENVS = {
    "default": {},
    "explicit": {"BRIDGE_CLOUDEVENTS_MODE": "structured"},
    "overridden back": {
        "BRIDGE_CLOUDEVENTS_MODE": "binary",
        "BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": ",".join(
            f"{t}=structured"
            for t in (
                "lark.vc.room.created_v1",
                "lark.vc.room.updated_v1",
                "lark.vc.room.deleted_v1",
                "lark.vc.room_level.created_v1",
                "lark.vc.room_level.updated_v1",
                "lark.vc.room_level.deleted_v1",
                "lark.vc.reserve_config.updated_v1",
                "lark.third_party_meeting_room_event",
                "lark.bridge.dead_letter",
            )
        ),
    },
}


@pytest.mark.parametrize("env", STRUCTURED_ENVS.values(), ids=STRUCTURED_ENVS.keys())
@pytest.mark.parametrize("kind", [*SAMPLE_TYPES, "dead_letter"])
def test_structured_records_are_byte_for_byte_as_before(kind: str, env: dict[str, str]) -> None:
    topics = Topics.from_settings(load_settings(BASE_ENV | env))
    assert digest(records_of_kind(kind, topics)) == STRUCTURED_DIGESTS[kind]


def test_an_override_of_one_topic_leaves_the_others_as_they_were() -> None:
    env = BASE_ENV | {"BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": "lark.vc.room.created_v1=binary"}
    topics = Topics.from_settings(load_settings(env))
    assert topics.binary == {"lark.vc.room.created_v1"}
    assert digest(records_of_kind(ev.ROOM_UPDATED, topics)) == STRUCTURED_DIGESTS[ev.ROOM_UPDATED]
    assert digest(records_of_kind(ev.ROOM_CREATED, topics)) != STRUCTURED_DIGESTS[ev.ROOM_CREATED]


# ---- binary mode: value and headers ----------------------------------------------------------

STRUCTURED = TOPICS
BINARY = Topics.from_names(**NAMES, binary=NAMES.values())
_raw_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])


def both_modes(kind: str) -> list[tuple[Record, Record]]:
    """Each record of ``kind`` in structured and in binary mode."""
    pairs = list(zip(records_of_kind(kind, STRUCTURED), records_of_kind(kind, BINARY), strict=True))
    assert pairs
    return pairs


def attribute_text(value: Any) -> bytes:
    """An attribute's canonical string (CloudEvents type system), UTF-8: what its header carries."""
    return (str(value) if isinstance(value, int) else value).encode("utf-8")


@pytest.mark.parametrize("kind", KINDS)
def test_binary_records_carry_data_as_the_value_and_every_other_attribute_as_a_header(kind: str) -> None:
    for structured, binary in both_modes(kind):
        assert (binary.topic, binary.key, binary.lark_type, binary.event_id) == (
            structured.topic,
            structured.key,
            structured.lark_type,
            structured.event_id,
        )
        # The value: the very bytes the structured envelope has under "data".
        assert binary.value == bytes(_raw_fields.decode(structured.value)["data"])
        envelope = json.loads(structured.value)  # attributes in the model's field order
        attributes = [(f"ce_{name}", attribute_text(v)) for name, v in envelope.items() if name != "data"]
        attributes.remove(("ce_datacontenttype", b"application/json"))
        own = [h for h in structured.headers if h[0] != "content-type"]  # lark_event_id, lark_record_part
        assert list(binary.headers) == [("content-type", b"application/json"), *attributes, *own]
        assert {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema"} <= {
            n for n, _ in binary.headers
        }
        if kind != "dead_letter" or envelope.get("subject"):
            assert {"ce_subject", "ce_partitionkey", "ce_larkeventid", "ce_tenantkey", "ce_appid"} <= {
                n for n, _ in binary.headers
            }
        # Back to the structured JSON: the same event.
        assert json.loads(ev.structured_from_binary(binary.headers, binary.value)) == envelope


def test_the_dead_letter_headers_follow_its_model_and_omit_what_it_lacks() -> None:
    body = sample(ev.ROOM_CREATED)
    del body["header"]["event_id"]
    del body["header"]["app_id"]
    inbound = read_inbound(compact(body))
    record = dead_letter(inbound, DeadLetterCause("invalid_event", "x", "$"), received_ms=RECEIVED_MS, topics=BINARY)
    names = [n for n, _ in record.headers]
    assert names[:1] == ["content-type"] and "ce_subject" not in names and "ce_appid" not in names
    assert dict(record.headers)["ce_id"] == dict(record.headers)[ev.EVENT_ID_HEADER] == inbound.dedup_key().encode()
    assert record.key is None and json.loads(record.value)["reason"] == "invalid_event"


# ---- the CloudEvents SDK reads both modes as one event ---------------------------------------


def canonical(attributes: Mapping[str, Any]) -> dict[str, str]:
    """Attributes as their canonical strings (CloudEvents type system: a binary-mode header has
    no type of its own, so the SDK gives an Integer extension as its string)."""

    def text(value: Any) -> str:
        if isinstance(value, datetime):
            return value.isoformat()
        return value.decode() if isinstance(value, bytes) else str(value)

    return {name: text(value) for name, value in attributes.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_the_sdk_reads_a_binary_record_and_a_structured_record_as_the_same_event(kind: str) -> None:
    fmt = JSONFormat()
    for structured, binary in both_modes(kind):
        b = ce_kafka.KafkaMessage(headers=dict(binary.headers), key=binary.key, value=binary.value)
        s = ce_kafka.KafkaMessage(headers=dict(structured.headers), key=structured.key, value=structured.value)
        from_binary = ce_kafka.from_binary(b, fmt)
        from_structured = ce_kafka.from_structured(s, fmt)
        assert canonical(from_binary.get_attributes()) == canonical(from_structured.get_attributes())
        assert from_binary.get_data() == from_structured.get_data() == json.loads(binary.value)
        assert from_binary.get_attributes()["type"] == json.loads(structured.value)["type"]
        # Its mode detection tells them apart, and so does ours (the binding's content-type rule).
        assert canonical(ce_kafka.from_kafka(b, fmt).get_attributes()) == canonical(from_binary.get_attributes())
        assert ev.is_structured(structured.headers) and not ev.is_structured(binary.headers)
        # The SDK's 1.x API (cloudevents.kafka then, cloudevents.v1.kafka now) reads them alike.
        old_b = ce_kafka_v1.from_binary(ce_kafka_v1.KafkaMessage(dict(binary.headers), binary.key, binary.value))
        old_s = ce_kafka_v1.from_structured(
            ce_kafka_v1.KafkaMessage(dict(structured.headers), structured.key, structured.value)
        )
        # (Its from_structured also takes every header of the record as an attribute, content-type
        # as datacontenttype: the headers beside the event are left out of the comparison.)
        quirk = {name.lower() for name, _ in structured.headers} | {"datacontenttype"}
        old_attributes = {k: v for k, v in old_s.get_attributes().items() if k not in quirk}
        assert canonical(old_b.get_attributes()) == canonical(old_attributes) | {"datacontenttype": "application/json"}
        assert old_b.get_data() == old_s.get_data()


def test_from_binary_refuses_an_integer_attribute_that_is_not_one() -> None:
    with pytest.raises(ValueError, match="ce_envelopeversion"):
        ev.structured_from_binary([("ce_envelopeversion", b"one")], b"{}")
    with pytest.raises(ValueError, match="ce_envelopeversion"):
        ev.structured_from_binary([("ce_envelopeversion", "١".encode())], b"{}")  # an Arabic-Indic digit


def test_is_structured_follows_the_bindings_content_type_rule() -> None:
    assert ev.is_structured([("content-type", b"Application/CloudEvents+json; charset=UTF-8")])
    assert not ev.is_structured([("content-type", b"application/json")])
    assert not ev.is_structured([])


# ---- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"BRIDGE_CLOUDEVENTS_MODE": "avro"}, "BRIDGE_CLOUDEVENTS_MODE: Input should be 'structured' or 'binary'"),
        ({"BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": "lark.vc.room.created_v2=binary"}, "'lark.vc.room.created_v2'"),
        ({"BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": "lark.vc.room.created_v1=avro"}, "mode 'avro'"),
        ({"BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": "lark.vc.room.created_v1"}, "is not topic=mode"),
        ({"BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": "=binary"}, "is not topic=mode"),
        (
            {"BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": "lark.bridge.dead_letter=binary,lark.bridge.dead_letter=structured"},
            "'lark.bridge.dead_letter' is named twice",
        ),
        (  # a topic renamed: the old default name is no topic of this bridge
            {"BRIDGE_TOPIC_DEAD_LETTER": "dlq", "BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": "lark.bridge.dead_letter=binary"},
            "'lark.bridge.dead_letter', not a topic of the bridge",
        ),
    ],
)
def test_bad_modes_are_settings_errors_naming_the_variable_and_the_topic(env: dict[str, str], said: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(BASE_ENV | env)
    message = str(info.value)
    assert said in message
    assert next(v for v in env if v.startswith("BRIDGE_CLOUDEVENTS_MODE")) in message


def test_overrides_name_the_configured_topics_with_blanks_and_a_trailing_comma_allowed() -> None:
    env = BASE_ENV | {
        "BRIDGE_TOPIC_DEAD_LETTER": "dlq",
        "BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": " dlq = binary , lark.vc.room.created_v1=structured, ",
        "BRIDGE_CLOUDEVENTS_MODE": "binary",
    }
    modes = load_settings(env).cloudevents_modes()
    assert modes["dlq"] == modes["lark.vc.room.updated_v1"] == "binary"
    assert modes["lark.vc.room.created_v1"] == "structured"
    assert Topics.from_settings(load_settings(env)).binary == set(modes) - {"lark.vc.room.created_v1"}
    assert load_settings(BASE_ENV | {"BRIDGE_CLOUDEVENTS_MODE_OVERRIDES": ""}).cloudevents_mode_overrides is None


# ---- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_binary_values_validate_against_their_data_schema(kind: str) -> None:
    rel = (
        "dead_letter/v1/data/dead_letter.schema.json"
        if kind == "dead_letter"
        else "envelope/v1/data/third_party_meeting_room_event.schema.json"
        if kind.startswith("third_party")
        else f"envelope/v1/data/{kind}.schema.json"
    )
    v = validator(rel)
    for structured, binary in both_modes(kind):
        v.validate(json.loads(binary.value))
        assert not v.is_valid(json.loads(structured.value))  # the envelope is not the data


def test_the_data_schema_is_the_envelope_schemas_data() -> None:
    for lark_type in ev.LARK_TYPES:
        data = topic_schema(frozenset({lark_type}), binary=True)
        envelope = topic_schema(frozenset({lark_type}))
        name = envelope["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
        inline = {k: v for k, v in envelope["definitions"][name].items() if k != "title"}
        assert {k: v for k, v in data.items() if k not in ("$schema", "title", "definitions")} == {
            k: v for k, v in inline.items() if k != "title"
        }


def test_a_binary_topic_registers_its_data_schema_and_the_third_party_topic_one_for_its_three_types() -> None:
    topics = Topics.from_names(**NAMES, binary=["t.room", "t.3p", "t.dlq"])
    texts = {t: json.loads(text) for t, text in schema_texts(topics).items()}
    assert texts["t.room"]["title"].startswith("Lark vc.room.created_v1, data of envelope v1")
    assert texts["t.3p"] == topic_schema(frozenset(ev.THIRD_PARTY_TYPES), binary=True)
    assert texts["t.3p"]["title"].startswith("Lark third_party_meeting_room_event_{created,updated,deleted}, data")
    assert texts["t.dlq"] == topic_schema(None, binary=True) and "reason" in texts["t.dlq"]["properties"]
    assert texts["t.cfg"] == topic_schema(frozenset({ev.RESERVE_CONFIG_UPDATED}))  # structured: the envelope


# ---- dead letters in either mode ----------------------------------------------------------------


@dataclass
class Message:
    """What aiokafka's consumer hands out, as far as a dead letter needs it."""

    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    partition: int = 0
    offset: int = 7
    timestamp: int = RECEIVED_MS


@pytest.mark.parametrize("framed", [False, True], ids=["plain", "registry"])
def test_dead_letters_are_read_back_alike_in_either_mode_and_replayed_to_each_topics_mode(framed: bool) -> None:
    body = sample(ev.ROOM_CREATED)
    inbound = read_inbound(compact(body))
    cause = DeadLetterCause("unknown_event_type", "not modelled then", "$.header.event_type")
    read = []
    for topics in (STRUCTURED, BINARY):
        record = dead_letter(inbound, cause, received_ms=RECEIVED_MS, topics=topics)
        value = wire_prefix(7) + record.value if framed else record.value
        read.append(_dead_letter("t.dlq", Message(value, record.headers)))
    assert read[0] is not None and read[0] == read[1]
    assert read[0].payload["event"] == body["event"] and read[0].event_id == inbound.event_id
    live = {"structured": normalize(decode(inbound), STRUCTURED), "binary": normalize(decode(inbound), BINARY)}
    for topics, mode in ((STRUCTURED, "structured"), (BINARY, "binary")):
        replayed = records_of(read[0], topics, 1 << 20)
        assert [(r.value, r.headers) for r in replayed] == [
            (r.value, (*r.headers, (REPLAYED_HEADER, b"t.dlq/0/7"))) for r in live[mode]
        ]


def test_a_binary_record_that_is_not_a_dead_letter_is_skipped() -> None:
    [record] = normalize(decode(read_inbound(compact(sample(ev.ROOM_CREATED)))), BINARY)
    assert _dead_letter("t.dlq", Message(record.value, record.headers)) is None
    assert _dead_letter("t.dlq", Message(b"not json", (("ce_specversion", b"1.0"),))) is None
