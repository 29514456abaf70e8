"""A producer stuck on a fatal idempotence error is replaced, and publishing resumes.

Fault injection on a real producer against the real broker: the first ``send`` of the first
producer raises ``OutOfOrderSequenceNumber`` (what aiokafka's idempotent producer can get stuck
with after an outage); everything else is the real aiokafka producer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber

from bridge.kafka import build_producer
from tests.support.kafka import FirstSendFails, read_topic
from tests.support.samples import sample_event

pytestmark = pytest.mark.integration


async def test_fatal_idempotence_error_replaces_the_producer(broker: Any, start_bridge: Any) -> None:
    made: list[Any] = []

    def factory(settings: Any) -> Any:
        producer = build_producer(settings)
        wrapped = FirstSendFails(producer, OutOfOrderSequenceNumber()) if not made else producer
        made.append(wrapped)
        return wrapped

    bridge = await start_bridge(broker.bootstrap_servers, producer_factory=factory)
    body = sample_event("vc.room.created_v1", event_id="stuck-1")
    status, _ = await bridge.send(bridge.platform.request(body))
    assert status == 503  # not delivered: the platform will retry
    await bridge.wait_ready()
    status, _ = await bridge.send(bridge.platform.request(body))
    assert status == 200
    assert len(made) == 2 and isinstance(made[0], FirstSendFails)
    m = bridge.metrics
    assert m.producer_replacements.labels(reason="OutOfOrderSequenceNumber")._value.get() == 1
    assert m.producer_starts._value.get() == 2
    msgs = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert [json.loads(x.value)["id"] for x in msgs] == ["stuck-1"]
