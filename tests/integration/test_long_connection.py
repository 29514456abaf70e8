"""The long-connection ingress against a fake platform that speaks the real frames (built and read
with the official SDK's own ``Frame`` class, bridge_devtools.lark_ws) and a real Kafka broker:
endpoint and handshake outcomes, acks only after the broker's, split messages, failures that
make the platform re-push, reconnection, half-open connections, shutdown, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from bridge.decode import decode
from bridge.inbound import read_inbound
from bridge.ingress import long_connection as lc_module
from bridge.kafka import build_producer
from bridge.normalize import Topics, normalize
from bridge.samples import sample
from bridge.state import STATE
from bridge_devtools.broker import free_port
from bridge_devtools.lark_ws import FakeLongConnectionPlatform
from tests.support.bridges import spawn_bridge, topic_settings
from tests.support.kafka import FirstSendFails, read_topic
from tests.support.samples import fresh_id, with_token

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


def payload(kind: str = "vc.room.created_v1", delivery_id: str | None = None) -> tuple[bytes, str]:
    """A plaintext event as the long connection carries it (no encryption), and its delivery id."""
    delivery_id = delivery_id or fresh_id()
    body = with_token(sample(kind), None, delivery_id=delivery_id)
    return json.dumps(body, ensure_ascii=False).encode(), delivery_id


def lc_of(bridge: Any) -> Any:
    return bridge.server.app[STATE].long_connection


async def test_an_event_is_acked_200_after_its_record_is_in_kafka(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, **settings_for(platform))
    assert platform.endpoint_calls == 1 and platform.open_connections == 1
    body, delivery_id = payload()
    message_id = await platform.push(body, seq_id=7, log_id=9, extra_headers={"timestamp": "1700000000000"})
    ack = await platform.wait_ack(message_id)
    assert ack.code == 200 and (ack.seq_id, ack.log_id, ack.method) == (7, 9, 1)
    keys = [k for k, _ in ack.headers]
    assert keys[:-1] == ["type", "message_id", "sum", "seq", "trace_id", "timestamp"] and keys[-1] == "biz_rt"
    assert int(dict(ack.headers)["biz_rt"]) >= 0
    records = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert [json.loads(r.value)["id"] for r in records] == [delivery_id]
    # The same delivery pushed again (the platform redelivers): acked, no second record.
    again = await platform.push(body)
    assert (await platform.wait_ack(again)).code == 200
    assert len(await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)) == 1
    # No webhook with the long connection alone; readiness follows the connection.
    assert (await bridge.get(bridge.settings.http_path))[0] in (404, 405)
    assert (await bridge.get("/readyz"))[0] == 200
    assert bridge.metrics.registry.get_sample_value("bridge_long_connection_up") == 1


async def test_a_split_schema_1_0_fan_out_is_one_event_and_one_ack(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, **settings_for(platform))
    body, delivery_id = payload("third_party_meeting_room_event_created")
    message_id = await platform.push(body, parts=3, order=[2, 0, 1])
    ack = await platform.wait_ack(message_id)
    assert ack.code == 200 and dict(ack.headers)["seq"] == "1"  # the part that completed it
    await asyncio.sleep(0.5)
    assert [a.message_id for a in platform.acks].count(message_id) == 1
    topic = bridge.settings.topic_third_party_meeting_room_event
    records = await read_topic(broker.bootstrap_servers, topic, expect=2)
    assert {dict(r.headers)["lark_event_id"] for r in records} == {delivery_id.encode()} and len(records) == 2


async def test_bad_splits_oversize_and_unreadable_payloads_are_acked_500_and_missing_parts_never(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(
        broker.bootstrap_servers, **settings_for(platform, BRIDGE_LONG_CONNECTION_MAX_PAYLOAD_BYTES="4096")
    )
    bad_seq = await platform.push(b"{}", extra_headers={"sum": "2", "seq": "5"})
    assert (await platform.wait_ack(bad_seq)).code == 500
    too_large = await platform.push(b'{"x":"' + b"a" * 5000 + b'"}', parts=2)
    assert (await platform.wait_ack(too_large)).code == 500
    unreadable = await platform.push(b"\xff not json")
    assert (await platform.wait_ack(unreadable)).code == 500
    body, _ = payload()
    incomplete = await platform.push(body, parts=3, order=[0, 2])  # part 1 never comes
    with pytest.raises(TimeoutError):
        await platform.wait_ack(incomplete, timeout_s=1.0)
    # Hostile frames: garbage and text messages change nothing; the connection stays and serves.
    await platform.send_raw(b"\x08\xff\xff")
    await platform.send_raw(b"not a frame at all")
    ok = await platform.push(payload()[0])
    assert (await platform.wait_ack(ok)).code == 200
    await asyncio.sleep(6.5)  # the incomplete message is dropped 5 s after its latest part
    dropped = bridge.metrics.registry.get_sample_value("bridge_long_connection_partials_dropped_total")
    assert dropped == 1
    invalid = bridge.metrics.registry.get_sample_value("bridge_long_connection_frames_total", {"kind": "invalid"})
    assert invalid == 2 and platform.open_connections == 1


async def test_unknown_types_are_dead_letters_acked_200(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, **settings_for(platform))
    body = with_token(sample("vc.room.created_v1"), None, delivery_id=fresh_id())
    body["header"]["event_type"] = "im.message.receive_v1"
    message_id = await platform.push(json.dumps(body).encode())
    assert (await platform.wait_ack(message_id)).code == 200
    records = await read_topic(broker.bootstrap_servers, bridge.settings.topic_dead_letter, expect=1)
    assert json.loads(records[0].value)["data"]["reason"] == "unknown_event_type"


async def test_a_failed_publish_is_acked_500_and_the_re_push_lands_once(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(
        broker.bootstrap_servers,
        producer_factory=lambda s: FirstSendFails(build_producer(s), KafkaTimeoutError()),
        **settings_for(platform),
    )
    body, delivery_id = payload()
    first = await platform.push(body)
    assert (await platform.wait_ack(first)).code == 500  # the platform re-pushes
    second = await platform.push(body)
    assert (await platform.wait_ack(second)).code == 200
    records = await read_topic(broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert [json.loads(r.value)["id"] for r in records] == [delivery_id]


class SlowAcks:
    """A real producer whose sends are acknowledged ``delay_s`` seconds late."""

    def __init__(self, real: AIOKafkaProducer, delay_s: float) -> None:
        self._real = real
        self._delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        future = await self._real.send(*args, **kwargs)

        async def late() -> Any:
            result = await future
            await asyncio.sleep(self._delay_s)
            return result

        return asyncio.ensure_future(late())


async def test_no_ack_before_the_broker_and_an_event_in_flight_at_shutdown_is_acked_before_the_close(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(
        broker.bootstrap_servers, producer_factory=lambda s: SlowAcks(build_producer(s), 0.8), **settings_for(platform)
    )
    message_id = await platform.push(payload()[0])
    with pytest.raises(TimeoutError):
        await platform.wait_ack(message_id, timeout_s=0.5)  # the broker has not acked yet
    assert (await platform.wait_ack(message_id)).code == 200

    in_flight = await platform.push(payload()[0])
    await asyncio.sleep(0.1)
    await bridge.server.close()  # the app's cleanup: the long connection closes first
    ack = await platform.wait_ack(in_flight, timeout_s=3)
    assert ack.code == 200 and platform.open_connections == 0


async def test_retryable_endpoint_answers_are_retried_and_a_dropped_connection_reconnects(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    platform.endpoint_script = [("code", 1), ("http", 503), ("code", 1000040343), ("handshake", 514, "1000040301")]
    bridge = await start_bridge(broker.bootstrap_servers, wait_ready=False, **settings_for(platform))
    await bridge.wait_ready(timeout_s=30)
    assert platform.endpoint_calls == 5 and lc_of(bridge).failed is None
    outcomes = {
        s.labels["outcome"]: s.value
        for m in bridge.metrics.registry.collect()
        if m.name == "bridge_long_connection_connects"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert outcomes == {
        "endpoint_code_1": 1,
        "endpoint_http_5xx": 1,
        "endpoint_code_1000040343": 1,
        "handshake_514": 1,
        "connected": 1,
    }
    await platform.drop_connections()
    await asyncio.sleep(0.3)
    await bridge.wait_ready(timeout_s=15)  # a new endpoint call, a new connection
    assert platform.endpoint_calls == 6 and platform.connects_total == 2
    message_id = await platform.push(payload()[0])
    assert (await platform.wait_ack(message_id)).code == 200


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ([("code", 10003)], "endpoint refused the app"),
        ([("handshake", 514, "1000040350")], "too many connections"),
        ([("handshake", 403, "")], "forbidden"),
    ],
)
async def test_a_refusal_no_retry_can_mend_stops_the_client_for_good(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any, script: list[Any], reason: str
) -> None:
    platform.endpoint_script = script
    bridge = await start_bridge(broker.bootstrap_servers, wait_ready=False, **settings_for(platform))
    client = lc_of(bridge)
    await asyncio.wait_for(client.stopped.wait(), 10)
    assert reason in (client.failed or "")
    status, text = await bridge.get("/readyz")
    assert (status, json.loads(text)["reason"]) == (503, "long_connection_down")


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


async def test_a_half_open_connection_is_noticed_and_replaced(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any, monkeypatch: Any, caplog: Any
) -> None:
    monkeypatch.setattr(lc_module, "HEARTBEAT_S", 1.0)
    caplog.set_level(logging.INFO)
    platform.answer_ws_pings = False  # the platform stops answering protocol pings
    bridge = await start_bridge(broker.bootstrap_servers, **settings_for(platform))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while platform.connects_total < 2:
        assert loop.time() < deadline, "the half-open connection was not replaced"
        await asyncio.sleep(0.1)
    platform.answer_ws_pings = True
    await bridge.wait_ready(timeout_s=15)
    message_id = await platform.push(payload()[0])
    assert (await platform.wait_ack(message_id)).code == 200
    lost = bridge.metrics.registry.get_sample_value("bridge_long_connection_disconnects_total", {"reason": "heartbeat"})
    assert lost is not None and lost >= 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert APP_SECRET not in logged and "ticket=" not in logged


async def test_the_client_pings_with_the_service_id_and_follows_a_pong_s_config(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    await start_bridge(broker.bootstrap_servers, **settings_for(platform))
    await asyncio.sleep(2.5)  # the fake's PingInterval is 2 s
    assert platform.pings and {service for service, _ in platform.pings} == {platform.service_id}
    platform.pong_config = {"PingInterval": 1}
    await asyncio.sleep(4.5)
    times = [t for _, t in platform.pings]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps[-2:]) < 1.6, gaps  # pings now come about every second
    assert Counter(service for service, _ in platform.pings) == {platform.service_id: len(platform.pings)}


async def test_a_platform_that_goes_quiet_is_left_after_two_ping_intervals(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, **settings_for(platform))
    await asyncio.sleep(2.5)
    rtt = bridge.metrics.registry.get_sample_value("bridge_long_connection_ping_rtt_seconds_count")
    assert rtt is not None and rtt >= 1  # pongs measured while the platform answered
    platform.answer_pings = False  # the socket stays healthy (RFC 6455 pongs), the platform says nothing
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while platform.connects_total < 2:
        assert loop.time() - quiet_since < 12, "a quiet connection was kept"
        await asyncio.sleep(0.1)
    assert loop.time() - quiet_since >= 2.0  # not before the deadline (PingInterval 2 s)
    lost = bridge.metrics.registry.get_sample_value(
        "bridge_long_connection_disconnects_total", {"reason": "read_deadline"}
    )
    assert lost == 1
    platform.answer_pings = True
    await bridge.wait_ready(timeout_s=15)


@pytest.mark.parametrize(
    "kind", ["vc.room.created_v1", "vc.reserve_config.updated_v1", "third_party_meeting_room_event_created"]
)
async def test_each_kind_gives_the_same_records_as_the_webhook_path(
    broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any, kind: str
) -> None:
    bridge = await start_bridge(broker.bootstrap_servers, **settings_for(platform))
    body, _ = payload(kind)
    expected = normalize(decode(read_inbound(body)), Topics.from_settings(bridge.settings))
    message_id = await platform.push(body)
    assert (await platform.wait_ack(message_id)).code == 200
    topic = expected[0].topic
    records = await read_topic(broker.bootstrap_servers, topic, expect=len(expected))
    assert sorted(r.value for r in records) == sorted(e.value for e in expected)
    assert sorted(r.key or b"" for r in records) == sorted(e.key or b"" for e in expected)


async def test_sigterm_with_events_in_flight_exits_0_and_acks_200_only_what_is_in_kafka(
    broker: Any, platform: FakeLongConnectionPlatform, tmp_path: Any
) -> None:
    prefix = f"lcs-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path / "bridge.log"
    with log_path.open("w") as log_file:
        proc = spawn_bridge(broker.bootstrap_servers, free_port(), prefix, log_file, **settings_for(platform))
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while platform.open_connections < 1:
                assert loop.time() < deadline and proc.poll() is None, "the bridge did not connect"
                await asyncio.sleep(0.1)
            sent: dict[str, str] = {}

            async def stream() -> None:
                while proc.poll() is None and platform.open_connections:
                    body, delivery_id = payload()
                    sent[await platform.push(body)] = delivery_id
                    await asyncio.sleep(0.005)

            streaming = asyncio.create_task(stream())
            await asyncio.sleep(1.5)
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
    body, delivery_id = payload()
    first = await platform.push(body, connection=0)  # the older connection: replica A's
    assert (await platform.wait_ack(first)).code == 200
    await asyncio.sleep(1.0)  # the platform's re-push comes ≥ 15 s later; B's ledger follows in ms
    again = await platform.push(body, connection=1)  # replica B's
    ack = await platform.wait_ack(again)
    assert ack.code == 200 and ack.connection != (await platform.wait_ack(first)).connection
    records = await read_topic(broker.bootstrap_servers, topics["BRIDGE_TOPIC_ROOM_CREATED"], expect=1)
    assert [json.loads(r.value)["id"] for r in records] == [delivery_id]
    suppressed = b.metrics.registry.get_sample_value("bridge_duplicates_suppressed_total", {"source": "log"})
    assert suppressed == 1 and a.metrics.registry.get_sample_value("bridge_long_connection_up") == 1


async def test_broker_down_acks_500_and_the_re_push_lands_once_it_is_back(
    spare_broker: Any, platform: FakeLongConnectionPlatform, start_bridge: Any
) -> None:
    await asyncio.to_thread(spare_broker.start, 120)
    bridge = await start_bridge(spare_broker.bootstrap_servers, **settings_for(platform))
    await asyncio.to_thread(spare_broker.stop)
    body, delivery_id = payload()
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
    assert [json.loads(r.value)["id"] for r in records] == [delivery_id]
