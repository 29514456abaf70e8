"""End to end on a real broker: samples land keyed and enveloped; fan-out; dedup; dead letters;
ordering; compression. Read back with a real consumer."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from bridge import envelope as ev
from bridge.decode import decode
from bridge.envelope import THIRD_PARTY_TYPES
from bridge.inbound import read_inbound
from bridge.normalize import Topics, normalize
from bridge.samples import SAMPLE_TYPES
from bridge_devtools.platform import compact
from tests.support.credentials import TOKEN
from tests.support.kafka import read_topic
from tests.support.samples import sample_event
from tests.support.schemas import dead_letter_validator, envelope_validators

pytestmark = pytest.mark.integration


def topic_of(settings: Any, lark_type: str) -> str:
    return Topics.from_settings(settings).by_type[lark_type]


async def test_each_sample_lands_with_key_topic_and_envelope(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    for kind in SAMPLE_TYPES:
        # The two documented 2.0 samples share one event_id: give each its own event id.
        status, body = await bridge.send(bridge.platform.request(sample_event(kind, event_id=f"sample-{kind}")))
        assert (status, body) == (200, {"msg": "success"})
    expected_keys = {
        "vc.room.created_v1": [b"omm_4de32cf10a4358788ff4e09e37ebbf9b"],
        "vc.reserve_config.updated_v1": [b"omm_3c5dd7e09bac0c1758fcf9511bd1a771"],
        "third_party_meeting_room_event_created": [
            b"omm_c4e2da9493fbd2ceea4f37aae6b3ee78",
            b"omm_a5ab469c8e012e2a0b48fe4a8e344f94",
        ],
        "vc.room.updated_v1": [b"omm_4de32cf10a4358788ff4e09e37ebbf9b"],
        "vc.room.deleted_v1": [b"omm_4de32cf10a4358788ff4e09e37ebbf9b"],
        "vc.room_level.created_v1": ["层级ID".encode()],  # the doc sample's placeholder id
        "vc.room_level.updated_v1": ["层级ID".encode()],
        "vc.room_level.deleted_v1": [b"omb_8d020b12fe49e82847c2af3c193d5754"],
    }
    assert set(expected_keys) == set(SAMPLE_TYPES)
    partitioner = DefaultPartitioner()
    for kind, keys in expected_keys.items():
        msgs = await read_topic(broker.bootstrap_servers, topic_of(bridge.settings, kind), expect=len(keys))
        assert sorted(m.key for m in msgs) == sorted(keys)
        for m in msgs:
            env = json.loads(m.value)
            assert env["type"] == kind and env["partitionkey"].encode() == m.key == env["subject"].encode()
            assert dict(m.headers)["content-type"] == b"application/cloudevents+json; charset=utf-8"
            # Java-compatible murmur2 partitioning: consumers can compute a room's partition.
            assert m.partition == partitioner(m.key, [0, 1, 2], [0, 1, 2])
            assert TOKEN not in m.value.decode()


async def test_fan_out_and_all_third_party_kinds_share_a_topic(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    for i, lark_type in enumerate(THIRD_PARTY_TYPES):
        body = sample_event("third_party_meeting_room_event_created", event_id=f"fan-{i}")
        body["event"]["type"] = lark_type
        assert (await bridge.send(bridge.platform.request(body)))[0] == 200
    msgs = await read_topic(broker.bootstrap_servers, bridge.settings.topic_third_party_meeting_room_event, expect=6)
    assert len(msgs) == 6
    by_room: dict[bytes, list[str]] = {}
    for m in sorted(msgs, key=lambda m: m.offset):
        by_room.setdefault(m.key, []).append(json.loads(m.value)["type"])
    # Per room, created → updated → deleted in order, in one partition.
    assert all(types == list(THIRD_PARTY_TYPES) for types in by_room.values()) and len(by_room) == 2


#: The room and room-level kinds, each with a change to its sample that no model admits and the
#: JSON path its dead letter names.
ROOM_AND_LEVEL_KINDS = {
    ev.ROOM_UPDATED: (lambda e: e["room"].update(capacity="many"), "$.event.room.capacity"),
    ev.ROOM_DELETED: (lambda e: e["room"].pop("room_id"), "$.event.room"),
    ev.ROOM_LEVEL_CREATED: (lambda e: e["room_level"].update(room_level_id=""), "$.event.room_level.room_level_id"),
    ev.ROOM_LEVEL_UPDATED: (lambda e: e.pop("room_level"), "$.event"),
    ev.ROOM_LEVEL_DELETED: (lambda e: e.update(delete_child="maybe"), "$.event.delete_child"),
}


async def test_room_and_room_level_kinds_land_on_their_own_topics_and_malformed_ones_are_dead_letters(
    broker: Any, start_bridge: Any
) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    topics = Topics.from_settings(bridge.settings)
    validators = envelope_validators()
    expected: dict[str, tuple[str, bytes, dict[str, Any]]] = {}
    for n, (kind, (break_it, _)) in enumerate(ROOM_AND_LEVEL_KINDS.items()):
        body = sample_event(kind, event_id=f"new-kind-{n}")
        [record] = normalize(decode(read_inbound(compact(body))), topics)
        expected[kind] = (record.topic, record.key or b"", json.loads(record.value))
        assert await bridge.send(bridge.platform.request(body)) == (200, {"msg": "success"})
        broken = sample_event(kind, event_id=f"new-kind-bad-{n}")
        break_it(broken["event"])
        assert await bridge.send(bridge.platform.request(broken)) == (200, {"msg": "success"})
    assert len({topic for topic, _, _ in expected.values()}) == len(ROOM_AND_LEVEL_KINDS)  # a topic each
    for kind, (topic, key, envelope) in expected.items():
        [m] = await read_topic(broker.bootstrap_servers, topic, expect=1)
        assert m.key == key and json.loads(m.value) == envelope, kind
        assert dict(m.headers)[ev.EVENT_ID_HEADER] == envelope["larkeventid"].encode()
        validators[kind].validate(json.loads(m.value))
    dead = await read_topic(broker.bootstrap_servers, topics.dead_letter, expect=len(ROOM_AND_LEVEL_KINDS))
    got = {json.loads(m.value)["data"]["lark_type"]: (m.key, json.loads(m.value)) for m in dead}
    for n, (kind, (_, path)) in enumerate(ROOM_AND_LEVEL_KINDS.items()):
        key, letter = got[kind]
        assert key == f"new-kind-bad-{n}".encode()
        assert (letter["data"]["reason"], letter["data"]["path"]) == ("invalid_event", path)
        dead_letter_validator().validate(letter)


async def test_sequential_and_concurrent_duplicates_give_one_record(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    seq = bridge.platform.request(sample_event("vc.room.created_v1", event_id="dup-seq"))
    assert [await bridge.send(seq) for _ in range(3)] == [(200, {"msg": "success"})] * 3
    # Concurrent: the platform's retry may race the first attempt; each re-signed, same id.
    body = sample_event("vc.room.created_v1", event_id="dup-conc")
    results = await asyncio.gather(*(bridge.send(bridge.platform.request(body)) for _ in range(10)))
    assert all(r == (200, {"msg": "success"}) for r in results)
    msgs = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=2)
    assert sorted(json.loads(m.value)["id"] for m in msgs) == ["dup-conc", "dup-seq"]
    registry = bridge.metrics.registry
    sources = ("local", "log")  # log: the record was read back before its ack (a race, still one record)
    assert (
        sum(registry.get_sample_value("bridge_duplicates_suppressed_total", {"source": s}) or 0 for s in sources) == 11
    )


async def test_dead_letters_are_acknowledged_then_answered_200(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    unknown = sample_event("vc.room.created_v1", event_id="dl-unknown")
    unknown["header"]["event_type"] = "im.message.receive_v1"
    invalid = sample_event("vc.room.created_v1", event_id="dl-invalid")
    del invalid["event"]["room"]["room_id"]
    for body in (unknown, invalid, invalid):  # the second invalid one is a duplicate
        assert await bridge.send(bridge.platform.request(body)) == (200, {"msg": "success"})
    msgs = await read_topic(broker.bootstrap_servers, bridge.settings.topic_dead_letter, expect=2)
    got = {m.key: json.loads(m.value)["data"] for m in msgs}
    assert len(msgs) == 2
    assert got[b"dl-unknown"]["reason"] == "unknown_event_type"
    assert got[b"dl-invalid"]["reason"] == "invalid_event" and got[b"dl-invalid"]["path"] == "$.event.room"
    assert got[b"dl-invalid"]["payload"]["header"]["token"] == "[REDACTED]"


async def test_unauthenticated_requests_never_reach_kafka(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    bad = bridge.platform.request(sample_event("vc.room.created_v1", event_id="unauth"), sign_key="nope")
    assert (await bridge.send(bad))[0] == 401
    good = bridge.platform.request(sample_event("vc.room.created_v1", event_id="auth-ok"))
    assert (await bridge.send(good))[0] == 200
    msgs = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert [json.loads(m.value)["id"] for m in msgs] == ["auth-ok"]


async def test_ordering_across_1000_interleaved_events_for_20_rooms(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers)
    rooms = [f"omm_order_{i:02d}" for i in range(20)]
    plan = [rooms[i % 20] for i in range(1000)]
    random.Random(7).shuffle(plan)
    sent: dict[str, list[str]] = {r: [] for r in rooms}
    queues: dict[str, list[str]] = {r: [] for r in rooms}
    for n, room in enumerate(plan):
        queues[room].append(f"ord-{n:04d}")

    async def room_writer(room: str) -> None:
        # Per room: the next event is sent only after the previous one was answered 200.
        for event_id in queues[room]:
            body = sample_event("vc.room.created_v1", event_id=event_id)
            body["event"]["room"]["room_id"] = room
            status, _ = await bridge.send(bridge.platform.request(body))
            assert status == 200
            sent[room].append(event_id)

    await asyncio.gather(*(room_writer(r) for r in rooms))
    msgs = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1000, timeout_s=60)
    assert len(msgs) == 1000
    seen: dict[str, list[tuple[int, int, str]]] = {r: [] for r in rooms}
    for m in msgs:
        seen[m.key.decode()].append((m.partition, m.offset, json.loads(m.value)["id"]))
    for room in rooms:
        records = sorted(seen[room])
        assert len({p for p, _, _ in records}) == 1, "one room, one partition"
        assert [i for _, _, i in records] == sent[room], "offsets follow the order of 200s"


@pytest.mark.parametrize("codec", ["lz4", "zstd", "gzip"])
async def test_compression(broker: Any, start_bridge: Any, codec: str) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, BRIDGE_KAFKA_COMPRESSION=codec)
    body = sample_event("vc.reserve_config.updated_v1", event_id=f"codec-{codec}")
    assert (await bridge.send(bridge.platform.request(body)))[0] == 200
    msgs = await read_topic(broker.bootstrap_servers, bridge.settings.topic_reserve_config_updated, expect=1)
    assert json.loads(msgs[0].value)["id"] == f"codec-{codec}"
