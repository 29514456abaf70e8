"""Events that no retry could ever publish as they are: records over the broker's size limit, and
fan-outs too large in all. Each ends as exactly one dead letter, answered 200 (never 503 forever)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge_devtools.platform import Platform, compact
from tests.support.kafka import read_topic
from tests.support.samples import sample_event

pytestmark = pytest.mark.integration


async def test_a_legal_body_whose_record_cannot_fit_is_one_dead_letter_without_its_payload(
    broker: Any, start_bridge: Any
) -> None:
    # Plaintext mode: a body just under the 1 MiB body limit makes an envelope over the 1 MiB
    # record limit (the producer would refuse it on every retry).
    bridge = await start_bridge(broker.bootstrap_servers, BRIDGE_LARK_ENCRYPT_KEY="")
    body = sample_event("vc.room.created_v1", event_id="too-large-1")
    body["event"]["room"]["floor_plan"] = ""
    filler = bridge.settings.http_max_body_bytes - len(compact(body)) - 64
    body["event"]["room"]["floor_plan"] = "x" * filler
    req = Platform().request(body)
    assert bridge.settings.http_max_body_bytes - 100 < len(req.body) <= bridge.settings.http_max_body_bytes
    assert await bridge.send(req) == (200, {"msg": "success"})
    assert await bridge.send(Platform().request(body)) == (200, {"msg": "success"})  # a retry: duplicate
    [dl] = await read_topic(broker.bootstrap_servers, bridge.settings.topic_dead_letter, expect=1)
    data = json.loads(dl.value)["data"]
    assert dl.key == b"too-large-1" and data["reason"] == "record_too_large" and data["path"] == "$"
    assert data["error"].startswith("record too large") and "payload not carried" in data["error"]
    assert data["payload"] == {} and len(dl.value) < 4096
    assert await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=0, timeout_s=3) == []


async def test_a_fan_out_too_large_in_all_is_one_dead_letter_with_its_payload(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, BRIDGE_KAFKA_MAX_RECORD_BYTES="65536")
    body = sample_event("third_party_meeting_room_event_created", event_id="fan-too-large")
    body["event"]["meeting_rooms"] = [{"open_id": f"omm_{i:032x}"} for i in range(30)]
    body["event"]["notes"] = "n" * 40_000  # carried in every one of the 30 records: 1.2 MB in all
    assert await bridge.send(bridge.platform.request(body)) == (200, {"msg": "success"})
    [dl] = await read_topic(broker.bootstrap_servers, bridge.settings.topic_dead_letter, expect=1)
    data = json.loads(dl.value)["data"]
    assert data["error"].startswith("record too large: 30 record(s)")
    assert data["payload"]["event"]["notes"] == "n" * 40_000 and data["payload"]["token"] == "[REDACTED]"
    third_party = bridge.settings.topic_third_party_meeting_room_event
    assert await read_topic(broker.bootstrap_servers, third_party, expect=0, timeout_s=3) == []


async def test_a_record_at_the_limit_is_published(broker: Any, start_bridge: Any) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, BRIDGE_KAFKA_MAX_RECORD_BYTES="65536")
    body = sample_event("vc.room.created_v1", event_id="near-limit")
    body["event"]["room"]["floor_plan"] = "y" * 60_000
    assert await bridge.send(bridge.platform.request(body)) == (200, {"msg": "success"})
    [rec] = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert json.loads(rec.value)["data"]["_unmodelled"]["/event/room/floor_plan"] == "y" * 60_000
