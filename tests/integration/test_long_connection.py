"""The long-connection ingress against a fake platform that speaks the real frames (built and read
with the official SDK's own ``Frame`` class, bridge_devtools.lark_ws) and a real Kafka broker —
only what needs the broker: records land once (split fan-outs and dead letters included, the same
as the webhook's), a failed or lost broker acks 500 and the re-push lands, replicas share the
ledger, SIGTERM with events in flight acks 200 only what is in Kafka, a refused app exits non-zero.

Everything about the session itself (acks and their codes, split messages, pings, deadlines,
reconnects, refusals, shutdown) runs without Kafka in tests/unit/test_long_connection_session.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from bridge.decode import decode
from bridge.inbound import read_inbound
from bridge.kafka import build_producer
from bridge.normalize import Topics, normalize
from bridge.samples import sample
from bridge.state import STATE
from bridge_devtools.broker import free_port
from bridge_devtools.lark_ws import FakeLongConnectionPlatform
from tests.support.bridges import spawn_bridge, topic_settings
from tests.support.kafka import FirstSendFails, read_topic
from tests.support.samples import fresh_id, with_token
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

APP_ID = "cli_fake_app"
APP_SECRET = "fake-app-secret-7d1c"


@pytest.fixture
async def platform() -> AsyncIterator[FakeLongConnectionPlatform]:
    """The fake platform; tests list it before ``start_bridge`` so that it outlives the bridges
    (a bridge reconnecting to a closing server would leave sockets behind)."""
    fake = FakeLongConnectionPlatform(APP_ID, APP_SECRET)
    await fake.start()
    yield fake
    await fake.close()


def settings_for(fake: FakeLongConnectionPlatform, **extra: str) -> dict[str, str]:
    return {
        "BRIDGE_LARK_SUBSCRIPTION_MODE": "long_connection",
        "BRIDGE_LARK_APP_ID": APP_ID,
        "BRIDGE_LARK_APP_SECRET": APP_SECRET,
        "BRIDGE_LARK_DOMAIN": fake.url,
        **extra,
    }


def payload(kind: str = "vc.room.created_v1", event_id: str | None = None) -> tuple[bytes, str]:
    """A plaintext event as the long connection carries it (no encryption), and its event id."""
    event_id = event_id or fresh_id()
    body = with_token(sample(kind), None, event_id=event_id)
    return json.dumps(body, ensure_ascii=False).encode(), event_id


async def test_an_event_is_acked_200_after_its_record_is_in_kafka(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, **settings_for(platform))
    assert platform.endpoint_calls == 1 and platform.open_connections == 1
    body, event_id = payload()
    message_id = await platform.push(body)
    assert (await platform.wait_ack(message_id)).code == 200
    records = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert [json.loads(r.value)["id"] for r in records] == [event_id]
    # The same delivery pushed again (the platform redelivers): acked, no second record.
    again = await platform.push(body)
    assert (await platform.wait_ack(again)).code == 200
    assert len(await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)) == 1
    # No webhook with the long connection alone; readiness follows the connection.
    assert (await bridge.get(bridge.settings.http_path))[0] in (404, 405)
    assert (await bridge.get("/readyz"))[0] == 200
    assert bridge.metrics.registry.get_sample_value("bridge_long_connection_up") == 1


async def test_a_failed_publish_is_acked_500_and_the_re_push_lands_once(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(
        broker.bootstrap_servers,
        producer_factory=lambda s: FirstSendFails(build_producer(s), KafkaTimeoutError()),
        **settings_for(platform),
    )
    body, event_id = payload()
    first = await platform.push(body)
    assert (await platform.wait_ack(first)).code == 500  # the platform re-pushes
    second = await platform.push(body)
    assert (await platform.wait_ack(second)).code == 200
    records = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert [json.loads(r.value)["id"] for r in records] == [event_id]


async def test_wrong_credentials_make_the_process_exit_non_zero_without_logging_secrets(
    broker: Any, platform: FakeLongConnectionPlatform, tmp_path: Any
) -> None:
    log_path = tmp_path / "bridge.log"
    with log_path.open("w") as log_file:
        proc = spawn_bridge(
            broker.bootstrap_servers,
            free_port(),
            f"lc-{uuid.uuid4().hex[:6]}",
            log_file,
            **settings_for(platform, BRIDGE_LARK_APP_SECRET="wrong-secret-5e9a", BRIDGE_LOG_LEVEL="INFO"),
        )
        try:
            code = await asyncio.to_thread(proc.wait, 60)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
    output = log_path.read_text()
    assert code == 1, output[-2000:]
    assert "long connection stopped for good" in output
    assert "wrong-secret-5e9a" not in output and "ticket=" not in output


async def test_each_kind_split_or_whole_and_an_unknown_type_give_the_webhook_path_s_records(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, **settings_for(platform))
    topics = Topics.from_settings(bridge.settings)
    expected: dict[str, list[Any]] = {}
    for kind, parts in (
        ("vc.room.created_v1", 1),
        ("vc.reserve_config.updated_v1", 1),
        ("third_party_meeting_room_event_created", 3),  # a schema 1.0 fan-out, split, out of order
        ("vc.room.updated_v1", 1),
        ("vc.room.deleted_v1", 1),
        ("vc.room_level.created_v1", 3),  # split, out of order
        ("vc.room_level.updated_v1", 1),
        ("vc.room_level.deleted_v1", 1),
    ):
        body, _ = payload(kind)
        records = normalize(decode(read_inbound(body)), topics)
        expected.setdefault(records[0].topic, []).extend(records)
        order = [2, 0, 1] if parts == 3 else None
        message_id = await platform.push(body, parts=parts, order=order)
        assert (await platform.wait_ack(message_id)).code == 200
    unknown = with_token(sample("vc.room.created_v1"), None, event_id=fresh_id())
    unknown["header"]["event_type"] = "im.message.receive_v1"
    assert (await platform.wait_ack(await platform.push(json.dumps(unknown).encode()))).code == 200
    for topic, records in expected.items():
        got = await read_topic(broker.bootstrap_servers, topic, expect=len(records))
        assert sorted(r.value for r in got) == sorted(e.value for e in records)
        assert sorted(r.key or b"" for r in got) == sorted(e.key or b"" for e in records)
    dead = await read_topic(broker.bootstrap_servers, bridge.settings.topic_dead_letter, expect=1)
    assert json.loads(dead[0].value)["data"]["reason"] == "unknown_event_type"


async def test_sigterm_with_events_in_flight_exits_0_and_acks_200_only_what_is_in_kafka(
    broker: Any, platform: FakeLongConnectionPlatform, tmp_path: Any
) -> None:
    prefix = f"lcs-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path / "bridge.log"
    with log_path.open("w") as log_file:
        proc = spawn_bridge(broker.bootstrap_servers, free_port(), prefix, log_file, **settings_for(platform))
        try:
            await wait_until(
                lambda: platform.open_connections >= 1 or proc.poll() is not None,
                timeout_s=60,
                message="the bridge did not connect",
            )
            assert proc.poll() is None, log_path.read_text()[-2000:]
            sent: dict[str, str] = {}

            async def stream() -> None:
                # At most 20 events unacked at a time: a steady stream, paced by the bridge's acks.
                while proc.poll() is None and platform.open_connections:
                    body, event_id = payload()
                    message_id = await platform.push(body)
                    sent[message_id] = event_id
                    if len(sent) - len(platform.acks) >= 20:
                        with contextlib.suppress(TimeoutError):
                            await platform.wait_ack(message_id, timeout_s=5)

            streaming = asyncio.create_task(stream())
            await wait_until(lambda: len(platform.acks) >= 30, timeout_s=30, interval_s=0.01, message="no acks")
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await streaming
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, log_path.read_text()[-2000:]
    acked = {a.message_id for a in platform.acks if a.code == 200}
    assert len(acked) > 20
    records = await read_topic(broker.bootstrap_servers, f"{prefix}.room", expect=len(acked), timeout_s=30)
    published = {json.loads(r.value)["id"] for r in records}
    assert {sent[m] for m in acked} <= published  # never acked 200 without its record
    assert APP_SECRET not in log_path.read_text()


async def test_replicas_each_hold_a_connection_and_a_re_push_to_the_other_is_one_record(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    topics = topic_settings(f"lcr-{uuid.uuid4().hex[:6]}")
    a = await start_bridge(broker.bootstrap_servers, **settings_for(platform), **topics)
    b = await start_bridge(broker.bootstrap_servers, **settings_for(platform), **topics)
    assert platform.open_connections == 2
    body, event_id = payload()
    first = await platform.push(body, connection=0)  # the older connection: replica A's
    assert (await platform.wait_ack(first)).code == 200
    ledger = b.server.app[STATE].ledger  # the platform's re-push comes ≥ 15 s later; B's ledger follows in ms
    assert ledger is not None
    await wait_until(lambda: ledger.delivered(event_id), timeout_s=10, interval_s=0.01, message="B never saw it")
    again = await platform.push(body, connection=1)  # replica B's
    ack = await platform.wait_ack(again)
    assert ack.code == 200 and ack.connection != (await platform.wait_ack(first)).connection
    records = await read_topic(broker.bootstrap_servers, topics["BRIDGE_TOPIC_ROOM_CREATED"], expect=1)
    assert [json.loads(r.value)["id"] for r in records] == [event_id]
    suppressed = b.metrics.registry.get_sample_value("bridge_duplicates_suppressed_total", {"source": "log"})
    assert suppressed == 1 and a.metrics.registry.get_sample_value("bridge_long_connection_up") == 1


async def test_broker_down_acks_500_and_the_re_push_lands_once_it_is_back(
    spare_broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    await asyncio.to_thread(spare_broker.start, 120)
    bridge = await start_bridge(spare_broker.bootstrap_servers, **settings_for(platform))
    await asyncio.to_thread(spare_broker.stop)
    body, event_id = payload()
    while True:  # the connection stays up; every push is acked 500 until the broker is back
        message_id = await platform.push(body)
        ack = await platform.wait_ack(message_id, timeout_s=10)
        assert ack.code == 500
        if (await bridge.get("/readyz"))[0] == 503:
            break
    assert platform.open_connections == 1
    await asyncio.to_thread(spare_broker.start, 120)
    await bridge.wait_ready(timeout_s=60)
    re_push = await platform.push(body)
    assert (await platform.wait_ack(re_push, timeout_s=10)).code == 200
    records = await read_topic(spare_broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert [json.loads(r.value)["id"] for r in records] == [event_id]
