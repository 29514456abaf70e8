"""Decode + normalize: the documented samples, keys, fan-out, type normalization, dead letters."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from bridge import envelope as ev
from bridge.decode import decode, parse_create_time, parse_ts_seconds
from bridge.errors import DeadLetterCause
from bridge.inbound import InboundEvent, read_inbound
from bridge.normalize import MAX_FANOUT_ROOMS, MAX_LISTED_ROOMS, dead_letter, normalize, rfc3339_ms
from bridge.samples import SAMPLE_TYPES, sample
from bridge_devtools.platform import compact
from tests.support.topics import TOPICS

TOKENS = ("rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV", "41a9425ea7df4536a7623e38fa321bae")


def authenticate(payload: dict[str, Any]) -> InboundEvent:
    return read_inbound(compact(payload))


def records(payload: dict[str, Any]) -> list[tuple[str, bytes | None, dict[str, Any]]]:
    return [(r.topic, r.key, json.loads(r.value)) for r in normalize(decode(authenticate(payload)), TOPICS)]


def failure(payload: dict[str, Any]) -> DeadLetterCause:
    with pytest.raises(DeadLetterCause) as info:
        decode(authenticate(payload))
    return info.value


def test_room_created_sample() -> None:
    [(topic, key, env)] = records(sample("vc.room.created_v1"))
    assert topic == "t.room"
    assert key == b"omm_4de32cf10a4358788ff4e09e37ebbf9b"
    assert env["specversion"] == "1.0"
    assert env["id"] == env["larkeventid"] == "5e3702a84e847582be8db7fb73283c02"
    assert env["source"] == "/lark/apps/cli_9f5343c580712544/tenants/2ca1d211f64f6438"
    assert env["type"] == "vc.room.created_v1"
    assert env["subject"] == env["partitionkey"] == key.decode()
    assert env["time"] == "2020-12-23T12:19:49.000Z"  # create_time 1608725989000 ms
    assert env["tenantkey"] == "2ca1d211f64f6438" and env["appid"] == "cli_9f5343c580712544"
    assert env["envelopeversion"] == 1 and env["datacontenttype"] == "application/json"
    assert env["dataschema"] == ev.dataschema_id("vc.room.created_v1")
    status = env["data"]["room"]["room_status"]
    assert status["disable_start_time"] == 1652356050 and status["disable_end_time"] == 1652442450
    assert env["data"]["room"]["name"] == "测试会议室"
    assert "_unmodelled" not in env["data"]


def test_reserve_config_sample_keys_by_scope_and_normalizes_seconds_of_day() -> None:
    [(topic, key, env)] = records(sample("vc.reserve_config.updated_v1"))
    assert topic == "t.cfg" and key == b"omm_3c5dd7e09bac0c1758fcf9511bd1a771"
    tc = env["data"]["time_config"]
    assert (tc["opening_hour"], tc["start_time"], tc["end_time"]) == (27900, 0, 86400)
    assert (
        env["data"]["reserve_scope_config"]["allow_depts"][0]["department_id"] == "od-47d8b570b0a011e9679a755efcc5f61a"
    )


def test_reserve_config_room_level_scope() -> None:
    body = sample("vc.reserve_config.updated_v1")
    body["event"].update(scope_id="omb_4ad1a2c7a2fbc5fc9570f38456931293", scope_type=1)
    [(_, key, env)] = records(body)
    assert key == b"omb_4ad1a2c7a2fbc5fc9570f38456931293" and env["data"]["scope_type"] == 1


@pytest.mark.parametrize("lark_type", ev.THIRD_PARTY_TYPES)
def test_third_party_fans_out_one_record_per_room(lark_type: str) -> None:
    body = sample("third_party_meeting_room_event_created")
    body["event"]["type"] = lark_type
    out = records(body)
    rooms = [r["open_id"] for r in body["event"]["meeting_rooms"]]
    assert [k for _, k, _ in out] == [r.encode() for r in rooms]
    for (topic, _, env), room in zip(out, rooms, strict=True):
        assert topic == "t.3p" and env["type"] == lark_type
        assert env["id"] == f"bc447199585340d1f3728d26b1c0297a:{room}"
        assert env["larkeventid"] == "bc447199585340d1f3728d26b1c0297a"
        assert env["data"]["meeting_room"] == {"open_id": room}
        assert env["data"]["event_time"] == 1594979647635
        assert env["data"]["start"] == {"time_stamp": 1553853600000}
        assert env["time"] == "2020-07-17T09:54:07.635Z"
        assert "token" not in json.dumps(env)


def test_third_party_without_rooms_is_keyed_by_uid() -> None:
    body = sample("third_party_meeting_room_event_created")
    body["event"]["meeting_rooms"] = []
    [(_, key, env)] = records(body)
    assert key == b"bff6b51f-b7c1-40c6-b8ef-aef966c9ffc7"
    assert env["id"] == "bc447199585340d1f3728d26b1c0297a" and "meeting_room" not in env["data"]


def test_duplicate_room_in_list_gives_one_record() -> None:
    body = sample("third_party_meeting_room_event_created")
    body["event"]["meeting_rooms"].append(dict(body["event"]["meeting_rooms"][0]))
    assert len(records(body)) == 2


def test_third_party_time_falls_back_to_ts() -> None:
    body = sample("third_party_meeting_room_event_created")
    del body["event"]["event_time"]
    env = records(body)[0][2]
    assert env["time"] == "2017-08-08T13:33:27.717Z"  # ts "1502199207.7171419" s


def test_microsecond_create_time() -> None:
    body = sample("vc.room.created_v1")
    body["header"]["create_time"] = "1603977298000000"
    assert records(body)[0][2]["time"] == "2020-10-29T13:14:58.000Z"


def test_unmodelled_fields_are_carried_with_json_pointers_and_tokens_dropped() -> None:
    body = sample("vc.room.created_v1")
    body["event"]["room"]["floor"] = {"name": "3F", "a/b": 1}
    body["event"]["room"]["device"][0]["model"] = "X1"
    body["header"]["region"] = "cn"
    body["event"]["room"]["access_token"] = "secret-looking"
    body["extra_top"] = [1, 2]
    env = records(body)[0][2]
    assert env["data"]["_unmodelled"] == {
        "/event/room/floor": {"name": "3F", "a/b": 1},
        "/event/room/device/0/model": "X1",
        "/header/region": "cn",
        "/extra_top": [1, 2],
    }
    assert "secret-looking" not in json.dumps(env)


def test_token_never_in_envelope() -> None:
    for t in SAMPLE_TYPES:
        for _, _, env in records(sample(t)):
            text = json.dumps(env)
            assert not any(tok in text for tok in TOKENS) and '"token"' not in text


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda b: b["event"]["room"].pop("room_id"), "$.event.room"),
        (lambda b: b["event"]["room"].update(room_id=""), "$.event.room.room_id"),
        (lambda b: b["event"]["room"].update(capacity="many"), "$.event.room.capacity"),
        (
            lambda b: b["event"]["room"]["room_status"].update(disable_start_time="soon"),
            "$.event.room.room_status.disable_start_time",
        ),
        (lambda b: b["header"].update(create_time="yesterday"), "$.header.create_time"),
        (lambda b: b["header"].update(create_time="160872598"), "$.header.create_time"),
        (lambda b: b["header"].pop("event_id"), "$.header"),
        (lambda b: b.update(event=[1]), "$.event"),
        (lambda b: b.update(schema="3.0"), "$.schema"),
    ],
)
def test_invalid_room_events(mutate: Any, path: str) -> None:
    body = sample("vc.room.created_v1")
    mutate(body)
    f = failure(body)
    assert f.reason == "invalid_event"
    assert f.path == path and path in f.error


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda b: b["event"]["meeting_rooms"][1].update(open_id=""), "$.event.meeting_rooms[1].open_id"),
        (lambda b: b["event"]["start"].update(time_stamp="noon"), "$.event.start.time_stamp"),
        (lambda b: b["event"].pop("uid"), "$.event"),
        (lambda b: b.pop("uuid"), "$.uuid"),
        (lambda b: b["event"].pop("tenant_key"), "$.event.tenant_key"),
        (lambda b: b["event"].update(event_time="12"), "$.event.event_time"),
    ],
)
def test_invalid_third_party_events(mutate: Any, path: str) -> None:
    body = sample("third_party_meeting_room_event_created")
    mutate(body)
    f = failure(body)
    assert f.reason == "invalid_event" and f.path == path


def test_unknown_types() -> None:
    v2 = sample("vc.room.created_v1")
    v2["header"]["event_type"] = "im.message.receive_v1"
    f = failure(v2)
    inbound = authenticate(v2)
    assert (f.reason, inbound.lark_type, inbound.event_id) == (
        "unknown_event_type",
        "im.message.receive_v1",
        v2["header"]["event_id"],
    )
    v1 = sample("third_party_meeting_room_event_created")
    v1["event"]["type"] = "third_party_meeting_room_event_moved"
    f = failure(v1)
    inbound = authenticate(v1)
    assert (f.reason, inbound.lark_type, inbound.event_id) == (
        "unknown_event_type",
        "third_party_meeting_room_event_moved",
        v1["uuid"],
    )


def test_dead_letter_record_redacts_tokens_and_keeps_the_rest() -> None:
    body = sample("vc.room.created_v1")
    del body["event"]["room"]["room_id"]
    auth = authenticate(body)
    f = failure(body)
    rec = dead_letter(auth, f, received_ms=1_700_000_000_123, topics=TOPICS)
    env = json.loads(rec.value)
    assert rec.topic == "t.dlq" and rec.key == body["header"]["event_id"].encode()
    assert env["type"] == "lark.bridge.dead_letter" and env["id"] == body["header"]["event_id"]
    data = env["data"]
    assert data["reason"] == "invalid_event" and data["path"] == "$.event.room"
    assert data["lark_type"] == "vc.room.created_v1" and data["lark_event_id"] == body["header"]["event_id"]
    assert data["received_at"] == "2023-11-14T22:13:20.123Z"
    assert data["payload"]["header"]["token"] == "[REDACTED]"
    assert data["payload"]["event"] == body["event"]
    assert TOKENS[0] not in rec.value.decode()


def test_time_helpers() -> None:
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"
    assert parse_create_time("1608725989000") == 1608725989000
    assert parse_create_time("1608725989000123") == 1608725989000
    assert parse_ts_seconds("1502199207") == 1502199207000
    for bad in ("", "12", "160872598900", "16087259890001", "-608725989000", "１６０８７２５９８９０００"):
        with pytest.raises(ValueError):
            parse_create_time(bad)


def test_inbound_event_reads_the_top_level_of_both_schemas_once() -> None:
    v2 = sample("vc.room.created_v1")
    e = authenticate(v2)
    h = v2["header"]
    assert (e.schema, e.event_id, e.lark_type, e.app_id, e.tenant_key, e.create_time, e.defect) == (
        "2.0",
        h["event_id"],
        "vc.room.created_v1",
        h["app_id"],
        h["tenant_key"],
        h["create_time"],
        None,
    )
    assert json.loads(bytes(e.event)) == v2["event"] and e.payload == compact(v2)
    v1 = sample("third_party_meeting_room_event_created")
    e = authenticate(v1)
    assert (e.schema, e.event_id, e.lark_type, e.app_id, e.tenant_key, e.create_time, e.defect) == (
        "1.0",
        v1["uuid"],
        v1["event"]["type"],
        v1["event"]["app_id"],
        v1["event"]["tenant_key"],
        v1["ts"],
        None,
    )


@pytest.mark.parametrize(
    ("mutate", "path", "event_id"),
    [
        (lambda b: b.update(header="not an object"), "$.header", None),
        (lambda b: b["header"].update(event_id=""), "$.header.event_id", None),
        (lambda b: b["header"].pop("tenant_key"), "$.header", "5e3702a84e847582be8db7fb73283c02"),
        (lambda b: b.pop("event"), "$", "5e3702a84e847582be8db7fb73283c02"),
        (lambda b: b.update(schema="3.0"), "$.schema", "5e3702a84e847582be8db7fb73283c02"),
        (lambda b: (b.pop("schema"), b.pop("header")), "$", None),
    ],
)
def test_a_malformed_top_level_is_still_an_inbound_event_and_one_dead_letter(
    mutate: Any, path: str, event_id: str | None
) -> None:
    body = sample("vc.room.created_v1")
    mutate(body)
    inbound = authenticate(body)
    assert inbound.defect is not None and inbound.defect.path == path and inbound.event_id == event_id
    f = failure(body)
    assert (f.reason, f.path) == ("invalid_event", path)
    env = json.loads(dead_letter(inbound, f, received_ms=1, topics=TOPICS).value)
    assert env["data"]["lark_event_id" if event_id else "path"] == (event_id or path)
    assert env["id"] == event_id if event_id else env["id"].startswith("sha256:")


@pytest.mark.parametrize("kind", SAMPLE_TYPES)
def test_vendored_envelope_models_pin_their_type(kind: str) -> None:
    model = ev.ENVELOPE_TYPES[kind]
    for _, _, env in records(sample(kind)):
        assert msgspec.convert(env, model).type == kind
        with pytest.raises(msgspec.ValidationError, match=r"\$\.type"):
            msgspec.convert({**env, "type": "vc.room.moved_v1"}, model)


def third_party_with_rooms(n: int) -> dict[str, Any]:
    body = sample("third_party_meeting_room_event_created")
    body["event"]["meeting_rooms"] = [{"open_id": f"omm_{i:032x}"} for i in range(n)]
    return body


def test_fan_out_records_carry_the_room_list_only_while_it_is_short() -> None:
    short = records(third_party_with_rooms(MAX_LISTED_ROOMS))
    assert len(short) == MAX_LISTED_ROOMS
    assert all(len(env["data"]["meeting_rooms"]) == MAX_LISTED_ROOMS for _, _, env in short)
    long = records(third_party_with_rooms(MAX_LISTED_ROOMS + 1))
    assert len(long) == MAX_LISTED_ROOMS + 1
    assert all("meeting_rooms" not in env["data"] for _, _, env in long)
    assert [env["data"]["meeting_room"]["open_id"] for _, _, env in long] == [
        f"omm_{i:032x}" for i in range(MAX_LISTED_ROOMS + 1)
    ]
    # A record's size no longer grows with the number of rooms.
    assert max(len(json.dumps(env)) for _, _, env in long) < max(len(json.dumps(env)) for _, _, env in short)


def test_fan_out_beyond_the_cap_is_an_invalid_event() -> None:
    assert len(records(third_party_with_rooms(MAX_FANOUT_ROOMS))) == MAX_FANOUT_ROOMS
    inbound = authenticate(third_party_with_rooms(MAX_FANOUT_ROOMS + 1))
    with pytest.raises(DeadLetterCause) as info:
        normalize(decode(inbound), TOPICS)
    assert (info.value.reason, info.value.path) == ("invalid_event", "$.event.meeting_rooms")


def test_fan_out_records_carry_their_index_of_count_and_single_records_do_not() -> None:
    payload = sample("third_party_meeting_room_event_created")
    payload["event"]["meeting_rooms"] = [{"open_id": f"omm_{i}"} for i in (3, 1, 3, 2)]
    fan_out = normalize(decode(authenticate(payload)), TOPICS)
    parts = [dict(r.headers)[ev.RECORD_PART_HEADER] for r in fan_out]
    assert [r.key for r in fan_out] == [b"omm_3", b"omm_1", b"omm_2"] and parts == [b"0/3", b"1/3", b"2/3"]
    assert [ev.parse_part(p) for p in parts] == [(0, 3), (1, 3), (2, 3)]
    single = normalize(decode(authenticate(sample("vc.room.created_v1"))), TOPICS)
    assert ev.RECORD_PART_HEADER not in dict(single[0].headers)


@pytest.mark.parametrize(
    "value", [b"", b"3", b"3/3", b"-1/3", b"1/", b"/3", b"a/b", b"1/3/4", b"1" * 12 + b"/2" + b"0" * 12]
)
def test_a_malformed_part_header_is_ignored(value: bytes) -> None:
    assert ev.parse_part(value) is None


# ---- the room and room-level kinds (docs/protocol.md §9.4-§9.8) ------------------------------------

#: Each new kind: its topic in TOPICS and the key its documented sample gets.
NEW_KINDS = {
    ev.ROOM_UPDATED: ("t.room_updated", "omm_4de32cf10a4358788ff4e09e37ebbf9b"),
    ev.ROOM_DELETED: ("t.room_deleted", "omm_4de32cf10a4358788ff4e09e37ebbf9b"),
    ev.ROOM_LEVEL_CREATED: ("t.level_created", "层级ID"),  # the doc sample's placeholder id, verbatim
    ev.ROOM_LEVEL_UPDATED: ("t.level_updated", "层级ID"),
    ev.ROOM_LEVEL_DELETED: ("t.level_deleted", "omb_8d020b12fe49e82847c2af3c193d5754"),
}


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_room_and_room_level_samples_become_one_keyed_record_on_their_topic(kind: str) -> None:
    body = sample(kind)
    [record] = normalize(decode(authenticate(body)), TOPICS)
    env = json.loads(record.value)
    topic, key = NEW_KINDS[kind]
    assert (record.topic, record.key, record.lark_type, record.event_id) == (
        topic,
        key.encode(),
        kind,
        "5e3702a84e847582be8db7fb73283c02",
    )
    assert dict(record.headers) == {
        "content-type": ev.CONTENT_TYPE.encode(),
        ev.EVENT_ID_HEADER: b"5e3702a84e847582be8db7fb73283c02",
    }
    assert env["type"] == kind and env["dataschema"] == ev.dataschema_id(kind)
    assert env["id"] == env["larkeventid"] == "5e3702a84e847582be8db7fb73283c02"
    assert env["subject"] == env["partitionkey"] == key
    assert env["source"] == "/lark/apps/cli_9f5343c580712544/tenants/2ca1d211f64f6438"
    assert env["time"] == "2020-12-23T12:19:49.000Z"
    assert (env["specversion"], env["envelopeversion"], env["datacontenttype"]) == ("1.0", 1, "application/json")
    assert (env["tenantkey"], env["appid"]) == ("2ca1d211f64f6438", "cli_9f5343c580712544")
    # Lark's event object, field for field (no field of the documented samples is unmodelled).
    if kind == ev.ROOM_UPDATED:
        status = dict(body["event"]["room"]["room_status"], disable_start_time=1652356050, disable_end_time=1652442450)
        assert env["data"] == {"room": {**body["event"]["room"], "room_status": status}}
    else:
        assert env["data"] == body["event"]
    assert "token" not in record.value.decode()


def test_room_deleted_carries_fields_beyond_the_room_id_as_unmodelled() -> None:
    # The doc page has room.room_id alone; the SDK's model is the whole room (docs/protocol.md §9.5).
    body = sample(ev.ROOM_DELETED)
    body["event"]["room"]["name"] = "测试会议室"
    body["event"]["room"]["room_status"] = {"status": False}
    [(_, key, env)] = records(body)
    assert key == b"omm_4de32cf10a4358788ff4e09e37ebbf9b"
    assert env["data"]["room"] == {"room_id": "omm_4de32cf10a4358788ff4e09e37ebbf9b"}
    assert env["data"]["_unmodelled"] == {
        "/event/room/name": "测试会议室",
        "/event/room/room_status": {"status": False},
    }


def test_room_level_deleted_without_delete_child_omits_it() -> None:
    body = sample(ev.ROOM_LEVEL_DELETED)
    del body["event"]["delete_child"]
    [(topic, key, env)] = records(body)
    assert (topic, key) == ("t.level_deleted", b"omb_8d020b12fe49e82847c2af3c193d5754")
    assert env["data"] == {"room_level_id": "omb_8d020b12fe49e82847c2af3c193d5754"}
    body["event"]["delete_child"] = True
    assert records(body)[0][2]["data"]["delete_child"] is True


def test_room_level_records_are_keyed_by_the_level_not_its_parent() -> None:
    body = sample(ev.ROOM_LEVEL_UPDATED)
    body["event"]["room_level"]["room_level_id"] = "omb_0123456789abcdef0123456789abcdef"
    [(_, key, env)] = records(body)
    assert key == b"omb_0123456789abcdef0123456789abcdef" != body["event"]["room_level"]["parent_id"].encode()
    assert env["data"]["room_level"]["path"] == ["omb_4ad1a2c7a2fbc5fc9570f38456931293"]


@pytest.mark.parametrize(
    ("kind", "mutate", "path"),
    [
        (ev.ROOM_UPDATED, lambda e: e.pop("room"), "$.event"),
        (ev.ROOM_UPDATED, lambda e: e["room"].update(room_id=""), "$.event.room.room_id"),
        (ev.ROOM_UPDATED, lambda e: e["room"].update(capacity="many"), "$.event.room.capacity"),
        (ev.ROOM_UPDATED, lambda e: e["room"].update(path="omb_x"), "$.event.room.path"),
        (
            ev.ROOM_UPDATED,
            lambda e: e["room"]["room_status"].update(disable_end_time="forever"),
            "$.event.room.room_status.disable_end_time",
        ),
        (
            ev.ROOM_UPDATED,
            lambda e: e["room"]["room_status"]["contact_ids"].append("ou_x"),
            "$.event.room.room_status.contact_ids[1]",
        ),
        (ev.ROOM_DELETED, lambda e: e.pop("room"), "$.event"),
        (ev.ROOM_DELETED, lambda e: e["room"].pop("room_id"), "$.event.room"),
        (ev.ROOM_DELETED, lambda e: e["room"].update(room_id=""), "$.event.room.room_id"),
        (ev.ROOM_DELETED, lambda e: e["room"].update(room_id=42), "$.event.room.room_id"),
        (ev.ROOM_DELETED, lambda e: e.update(room="omm_4de32cf10a4358788ff4e09e37ebbf9b"), "$.event.room"),
        (ev.ROOM_LEVEL_CREATED, lambda e: e.pop("room_level"), "$.event"),
        (ev.ROOM_LEVEL_CREATED, lambda e: e["room_level"].pop("room_level_id"), "$.event.room_level"),
        (ev.ROOM_LEVEL_CREATED, lambda e: e["room_level"].update(room_level_id=""), "$.event.room_level.room_level_id"),
        (ev.ROOM_LEVEL_CREATED, lambda e: e["room_level"].update(has_child="maybe"), "$.event.room_level.has_child"),
        (ev.ROOM_LEVEL_CREATED, lambda e: e["room_level"]["path"].append(7), "$.event.room_level.path[1]"),
        (ev.ROOM_LEVEL_UPDATED, lambda e: e["room_level"].update(parent_id=["omb_x"]), "$.event.room_level.parent_id"),
        (ev.ROOM_LEVEL_UPDATED, lambda e: e.update(room_level=None), "$.event.room_level"),
        (ev.ROOM_LEVEL_DELETED, lambda e: e.pop("room_level_id"), "$.event"),
        (ev.ROOM_LEVEL_DELETED, lambda e: e.update(room_level_id=""), "$.event.room_level_id"),
        (ev.ROOM_LEVEL_DELETED, lambda e: e.update(delete_child="maybe"), "$.event.delete_child"),
        # The level's fields nested as in the created/updated events: not the deleted event's shape.
        (ev.ROOM_LEVEL_DELETED, lambda e: e.update(room_level={"room_level_id": e.pop("room_level_id")}), "$.event"),
    ],
)
def test_malformed_room_and_room_level_events_are_one_dead_letter(kind: str, mutate: Any, path: str) -> None:
    body = sample(kind)
    mutate(body["event"])
    inbound = authenticate(body)
    f = failure(body)
    assert (f.reason, f.path) == ("invalid_event", path) and path in f.error
    rec = dead_letter(inbound, f, received_ms=1_700_000_000_123, topics=TOPICS)
    env = json.loads(rec.value)
    assert (rec.topic, rec.key, rec.lark_type) == ("t.dlq", b"5e3702a84e847582be8db7fb73283c02", kind)
    assert env["type"] == ev.DEAD_LETTER_TYPE
    assert (env["data"]["reason"], env["data"]["path"], env["data"]["lark_type"]) == ("invalid_event", path, kind)
    assert env["data"]["payload"]["event"] == body["event"]
    assert env["data"]["payload"]["header"]["token"] == "[REDACTED]"


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_the_new_kinds_under_schema_1_0_are_unknown_types(kind: str) -> None:
    body = sample("third_party_meeting_room_event_created")
    body["event"]["type"] = kind
    f = failure(body)
    assert (f.reason, f.path) == ("unknown_event_type", "$.event.type")


def test_a_room_level_payload_under_the_room_type_is_invalid() -> None:
    body = sample(ev.ROOM_LEVEL_CREATED)
    body["header"]["event_type"] = ev.ROOM_UPDATED
    f = failure(body)
    assert (f.reason, f.path) == ("invalid_event", "$.event")
