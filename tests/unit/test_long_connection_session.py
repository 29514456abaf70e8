"""The long connection's session without Kafka: a :class:`LongConnection` whose sink is a
recording fake (tests.support.fakes.RecordingSink), against the fake platform on loopback
(bridge_devtools.lark_ws, frames built and read with the official SDK's ``Frame``), with every
timing shrunk (:class:`Timings`) — no fixed sleeps: each test waits for a condition, bounded.

docs/long_connection.md §9.5 items 3–8 (the records themselves: tests/integration)."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.delivery import Outcome
from bridge.errors import Unavailable
from bridge.ingress.long_connection import LongConnection, Timings
from bridge.metrics import Metrics
from bridge.samples import sample
from bridge.settings import Settings, load_settings
from bridge.state import STATE
from bridge_devtools.lark_ws import Ack, FakeLongConnectionPlatform
from tests.support.fakes import RecordingSink
from tests.support.samples import fresh_id, with_token
from tests.support.waits import wait_until

APP_ID = "cli_fake_app"
APP_SECRET = "fake-app-secret-7d1c"
#: One platform second is 50 ms: the fake's ClientConfig (PingInterval 2, ReconnectInterval 1,
#: ReconnectNonce 0) becomes a ping every 100 ms, a read deadline of 200 ms, reconnects after 50 ms.
UNIT_S = 0.05
FAST = Timings(
    platform_second_s=UNIT_S,
    backoff_first_s=0.01,
    partial_ttl_s=0.2,
    tick_max_s=0.01,
    ready_poll_s=0.01,
    endpoint_timeout_s=5.0,
    ws_close_s=1.0,
)
WAIT_S = 5.0  # the bound of every wait for a condition


@pytest.fixture
async def platform() -> AsyncIterator[FakeLongConnectionPlatform]:
    """The fake platform; requested before ``start`` so that it outlives the clients."""
    fake = FakeLongConnectionPlatform(APP_ID, APP_SECRET)
    await fake.start()
    yield fake
    await fake.close()


def settings_for(fake: FakeLongConnectionPlatform, **extra: str) -> Settings:
    return load_settings(
        {
            "BRIDGE_LARK_SUBSCRIPTION_MODE": "long_connection",
            "BRIDGE_LARK_APP_ID": APP_ID,
            "BRIDGE_LARK_APP_SECRET": APP_SECRET,
            "BRIDGE_LARK_DOMAIN": fake.url,
            **extra,
        }
    )


class Client:
    """A started :class:`LongConnection`, its sink and metrics."""

    def __init__(self, lc: LongConnection, sink: RecordingSink, metrics: Metrics) -> None:
        self.lc = lc
        self.sink = sink
        self.metrics = metrics

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels or {})


@pytest.fixture
async def start(platform: FakeLongConnectionPlatform) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """``await start(sink=None, timings=FAST, connect=True, max_in_flight=…, **env)``."""
    clients: list[LongConnection] = []

    async def make(
        sink: RecordingSink | None = None, *, timings: Timings = FAST, connect: bool = True, **kwargs: Any
    ) -> Client:
        env = {k: v for k, v in kwargs.items() if k.startswith("BRIDGE_")}
        options = {k: v for k, v in kwargs.items() if not k.startswith("BRIDGE_")}
        metrics = Metrics()
        sink = sink or RecordingSink()
        lc = LongConnection(settings_for(platform, **env), sink, metrics, timings=timings, **options)
        clients.append(lc)
        await lc.start()
        if connect:
            await until(lambda: lc.connected and platform.open_connections == 1, "the client did not connect")
        return Client(lc, sink, metrics)

    yield make
    for lc in clients:
        await lc.close(timeout_s=1.0)


async def until(check: Callable[[], bool], message: str, timeout_s: float = WAIT_S) -> None:
    await wait_until(check, timeout_s=timeout_s, interval_s=0.005, message=message)


def payload(kind: str = "vc.room.created_v1", event_id: str | None = None) -> bytes:
    """A plaintext event as the long connection carries it (no encryption, no token)."""
    body = with_token(sample(kind), None, event_id=event_id or fresh_id())
    return json.dumps(body, ensure_ascii=False).encode()


async def ack_of(platform: FakeLongConnectionPlatform, body: bytes, **push: Any) -> Ack:
    return await platform.wait_ack(await platform.push(body, **push), timeout_s=WAIT_S)


def acks_for(platform: FakeLongConnectionPlatform, message_id: str) -> list[Ack]:
    return [a for a in platform.acks if a.message_id == message_id]


# ---- acks ------------------------------------------------------------------------------------


async def test_an_ack_echoes_the_frame_and_appends_biz_rt(platform: FakeLongConnectionPlatform, start: Any) -> None:
    c = await start()
    ack = await ack_of(platform, payload(), seq_id=7, log_id=2**64 - 1, extra_headers={"timestamp": "1700000000000"})
    assert ack.code == 200 and ack.payload == {"code": 200}
    assert (ack.seq_id, ack.log_id, ack.method, ack.service) == (7, 2**64 - 1, 1, platform.service_id)
    keys = [k for k, _ in ack.headers]
    assert keys == ["type", "message_id", "sum", "seq", "trace_id", "timestamp", "biz_rt"]
    assert int(ack.header("biz_rt") or "-1") >= 0
    assert len(c.sink.received) == 1
    assert c.sample("bridge_long_connection_acks_total", {"code": "200"}) == 1
    assert c.sample("bridge_long_connection_frames_total", {"kind": "event"}) == 1
    assert c.sample("bridge_long_connection_up") == 1 and c.lc.not_ready_reason() is None


async def test_the_delivery_gets_the_payload_arrival_and_the_webhook_s_deadline(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start()
    body = payload()
    loop = asyncio.get_running_loop()
    before_s = loop.time()
    await ack_of(platform, body)
    assert c.sink.received[0].payload == body
    deadline = c.sink.deadlines[0]
    assert deadline is not None
    timeout_s = settings_for(platform).answer_deadline_s
    assert before_s + timeout_s <= deadline <= loop.time() + timeout_s
    assert c.sink.received_ms[0] > 1_600_000_000_000  # unix ms


async def test_the_ack_is_written_only_after_deliver_returned(platform: FakeLongConnectionPlatform, start: Any) -> None:
    c = await start()
    c.sink.held = True
    held_id = fresh_id()
    held = await platform.push(payload(event_id=held_id))
    await asyncio.wait_for(c.sink.entered.wait(), WAIT_S)
    c.sink.held = False
    # The connection goes on serving meanwhile: another event is delivered and acked …
    assert (await ack_of(platform, payload())).code == 200
    assert acks_for(platform, held) == []  # … but not the one whose delivery has not returned
    c.sink.release()
    ack = await platform.wait_ack(held, timeout_s=WAIT_S)
    returned_at = dict(c.sink.returned)[held_id]
    assert ack.code == 200 and ack.received_at >= returned_at


@pytest.mark.parametrize(
    ("outcome", "fail", "code", "logged"),
    [
        (Outcome("published", records=[("t", 0, 1)]), None, 200, "published"),
        (Outcome("dead_lettered", reason="unknown_event_type"), None, 200, "dead_lettered"),
        (Outcome("duplicate"), None, 200, "duplicate"),
        (None, Unavailable("broker_unavailable"), 500, "broker_unavailable"),
        (None, Unavailable("publish_timeout"), 500, "publish_timeout"),
        (None, Unavailable("dedup_replay"), 500, "dedup_replay"),
        (None, RuntimeError("boom"), 500, "error"),
    ],
)
async def test_the_ack_code_follows_the_delivery(
    platform: FakeLongConnectionPlatform,
    start: Any,
    outcome: Outcome | None,
    fail: Exception | None,
    code: int,
    logged: str,
) -> None:
    sink = RecordingSink(outcome)
    sink.fail = fail
    c = await start(sink)
    with structlog.testing.capture_logs() as logs:
        ack = await ack_of(platform, payload())
    assert ack.code == code and ack.payload == {"code": code}
    assert ack.header("biz_rt") is not None  # on 500 too
    assert c.sample("bridge_long_connection_acks_total", {"code": str(code)}) == 1
    events = [e for e in logs if e["event"] == "event"]
    assert len(events) == 1
    assert events[0]["ingress"] == "long_connection" and events[0]["outcome"] == logged
    assert events[0]["ack_code"] == code and events[0]["lark_type"] == "vc.room.created_v1"
    if outcome is not None and outcome.reason:
        assert events[0]["reason"] == outcome.reason


@pytest.mark.parametrize(
    ("body", "push", "outcome"),
    [
        (b"\xff not json", {}, "unreadable"),
        (b"[1, 2]", {}, "unreadable"),
        (b'{"x":"' + b"a" * 5000 + b'"}', {}, "too_large"),
        (b'{"x":"' + b"a" * 5000 + b'"}', {"parts": 2}, "too_large"),
        (b"{}", {"extra_headers": {"sum": "2", "seq": "5"}}, "bad_split"),
        (b"{}", {"extra_headers": {"sum": "65", "seq": "0"}}, "bad_split"),
        (b"{}", {"extra_headers": {"sum": "x"}}, "bad_split"),
    ],
)
async def test_payloads_that_cannot_be_delivered_are_acked_500_without_a_delivery(
    platform: FakeLongConnectionPlatform, start: Any, body: bytes, push: dict[str, Any], outcome: str
) -> None:
    c = await start(BRIDGE_LONG_CONNECTION_MAX_PAYLOAD_BYTES="4096")
    with structlog.testing.capture_logs() as logs:
        ack = await ack_of(platform, body, **push)
    assert ack.code == 500
    assert c.sink.deadlines == []  # the sink was never called
    assert [e["outcome"] for e in logs if e["event"] == "event"] == [outcome]


async def test_a_payload_with_an_encrypt_field_is_delivered_and_its_outcome_acked(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start(RecordingSink(Outcome("dead_lettered", reason="invalid_event")))
    assert (await ack_of(platform, b'{"encrypt":"abc"}')).code == 200
    assert c.sink.received[0].defect is not None


async def test_beyond_the_in_flight_bound_events_are_acked_500_busy(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start(max_in_flight=1)
    c.sink.held = True
    first = await platform.push(payload())
    await asyncio.wait_for(c.sink.entered.wait(), WAIT_S)
    with structlog.testing.capture_logs() as logs:
        assert (await ack_of(platform, payload())).code == 500
    assert [e["outcome"] for e in logs if e["event"] == "event"] == ["busy"]
    c.sink.release()
    assert (await platform.wait_ack(first, timeout_s=WAIT_S)).code == 200
    assert len(c.sink.deadlines) == 1  # the busy one never reached the sink


# ---- split messages (§5) ---------------------------------------------------------------------


async def test_a_split_message_out_of_order_is_one_delivery_and_one_ack(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start()
    body = payload("third_party_meeting_room_event_created")
    message_id = await platform.push(body, parts=3, order=[2, 0, 1])
    ack = await platform.wait_ack(message_id, timeout_s=WAIT_S)
    assert ack.code == 200 and ack.header("seq") == "1"  # the part that completed it
    assert (await ack_of(platform, payload())).code == 200  # a later event's ack has come …
    assert len(acks_for(platform, message_id)) == 1  # … and still one ack for the split one
    assert c.sink.received[0].payload == body


async def test_a_repeated_part_changes_nothing(platform: FakeLongConnectionPlatform, start: Any) -> None:
    c = await start()
    body = payload()
    message_id = await platform.push(body, parts=3, order=[0, 0, 1, 2])
    assert (await platform.wait_ack(message_id, timeout_s=WAIT_S)).code == 200
    assert [e.payload for e in c.sink.received] == [body]


async def test_a_message_missing_a_part_is_never_acked_and_dropped_after_its_ttl(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start()
    incomplete = await platform.push(payload(), parts=3, order=[0, 2])  # part 1 never comes
    await until(
        lambda: c.sample("bridge_long_connection_partials_dropped_total") == 1,
        "the incomplete message was not dropped after its TTL",
    )
    assert (await ack_of(platform, payload())).code == 200
    assert acks_for(platform, incomplete) == [] and len(c.sink.received) == 1


async def test_more_than_64_incomplete_messages_forget_the_oldest(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start(timings=Timings(platform_second_s=UNIT_S, tick_max_s=0.01, ready_poll_s=0.01))  # TTL 5 s
    ids = [await platform.push(payload(), parts=2, order=[0]) for _ in range(65)]
    await until(lambda: c.sample("bridge_long_connection_partials_dropped_total") == 1, "the oldest was not dropped")
    await platform.push(payload(), parts=2, order=[1], message_id=ids[-1])  # the newest completes
    assert (await platform.wait_ack(ids[-1], timeout_s=WAIT_S)).code == 200


# ---- hostile frames --------------------------------------------------------------------------


async def test_garbage_text_card_and_ping_frames_get_no_answer_and_the_connection_serves_on(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start()
    await platform.send_raw(b"\x08\xff\xff")
    await platform.send_raw(b"not a frame at all")
    await platform.connections[-1].ws.send_str("a text message")
    card = await platform.push(b"{}", frame_type="card")
    assert (await ack_of(platform, payload())).code == 200
    assert acks_for(platform, card) == [] and len(platform.acks) == 1
    kinds = {k: c.sample("bridge_long_connection_frames_total", {"kind": k}) for k in ("invalid", "text", "card")}
    assert kinds == {"invalid": 2, "text": 1, "card": 1}
    assert platform.open_connections == 1 and platform.connects_total == 1


# ---- pings, pongs, deadlines (§4, §9.4) ------------------------------------------------------


async def test_the_client_pings_with_the_service_id_and_measures_the_round_trip(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start()
    await until(lambda: len(platform.pings) >= 3, "no pings")
    assert {service for service, _ in platform.pings} == {platform.service_id}
    await until(lambda: (c.sample("bridge_long_connection_ping_rtt_seconds_count") or 0) >= 1, "no round trip")
    assert (c.sample("bridge_long_connection_frames_total", {"kind": "pong"}) or 0) >= 1


async def test_a_pong_s_config_replaces_the_ping_interval_clamped_to_one_second(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    await start()
    platform.pong_config = {"PingInterval": 0}  # clamped to 1 (platform) second: not a spin
    await until(lambda: len(platform.pings) >= 2, "no pings")
    changed = len(platform.pings)  # pings from here on follow the pong's config
    await until(lambda: len(platform.pings) >= changed + 6, "pings stopped")
    times = [t for _, t in platform.pings[changed:]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert statistics.median(gaps) < 1.6 * UNIT_S, gaps  # was 2 units; now about 1
    assert min(gaps) > 0.5 * UNIT_S, gaps  # never faster than the floor (jitter aside)


async def test_a_platform_that_goes_quiet_is_left_after_two_ping_intervals(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start()
    await until(lambda: (c.sample("bridge_long_connection_ping_rtt_seconds_count") or 0) >= 1, "no pong")
    platform.answer_pings = False  # RFC 6455 pongs still flow: the socket is fine, the platform silent
    await until(lambda: platform.connects_total >= 2, "a quiet connection was kept")
    first = platform.connections[0]
    assert first.closed_at is not None and first.closed_at - first.opened_at >= 2 * 2 * UNIT_S  # not before
    assert c.sample("bridge_long_connection_disconnects_total", {"reason": "read_deadline"}) == 1
    platform.answer_pings = True
    await until(lambda: c.lc.connected, "no new connection")


async def test_the_read_deadline_closes_with_1001(platform: FakeLongConnectionPlatform, start: Any) -> None:
    await start()
    platform.answer_pings = False
    await until(lambda: platform.connects_total >= 2, "a quiet connection was kept")
    assert platform.connections[0].client_close_code == 1001


async def test_a_half_open_connection_is_noticed_by_the_heartbeat_and_replaced(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    platform.client_config["PingInterval"] = 3600  # ping frames (and the read deadline) out of the way
    platform.answer_ws_pings = False  # the platform stops answering RFC 6455 pings
    with structlog.testing.capture_logs() as logs:
        c = await start(timings=Timings(platform_second_s=UNIT_S, heartbeat_s=0.2, ready_poll_s=0.01))
        await until(lambda: platform.connects_total >= 2, "the half-open connection was not replaced")
        platform.answer_ws_pings = True
        await until(lambda: c.lc.connected and platform.open_connections == 1, "no new connection")
    assert (c.sample("bridge_long_connection_disconnects_total", {"reason": "heartbeat"}) or 0) >= 1
    assert (await ack_of(platform, payload())).code == 200
    logged = repr(logs)
    assert APP_SECRET not in logged and "ticket=" not in logged


# ---- connecting and reconnecting (§1, §2, §7) ------------------------------------------------


async def test_retryable_endpoint_answers_are_retried_and_a_dropped_connection_reconnects(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    platform.endpoint_script = [("code", 1), ("http", 503), ("code", 1000040343), ("handshake", 514, "1000040301")]
    c = await start()
    assert platform.endpoint_calls == 5 and c.lc.failed is None
    outcomes = {
        s.labels["outcome"]: s.value
        for m in c.metrics.registry.collect()
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
    await until(lambda: platform.connects_total == 2 and c.lc.connected, "no reconnect")
    assert platform.endpoint_calls == 6  # a new endpoint call before every connection
    assert c.sample("bridge_long_connection_disconnects_total", {"reason": "server_closed"}) == 1
    assert (await ack_of(platform, payload())).code == 200


async def test_the_endpoint_request_carries_the_credentials_and_logs_never_the_url(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    with structlog.testing.capture_logs() as logs:
        await start()
        await platform.drop_connections()
        await until(lambda: platform.connects_total == 2, "no reconnect")
    request = platform.endpoint_requests[0]
    assert request.body == {"AppID": APP_ID, "AppSecret": APP_SECRET}
    assert request.headers.get("locale") == "zh"
    opened = [e for e in logs if e["event"] == "long connection open"]
    assert opened and opened[0]["device_id"] == platform.connections[0].device_id
    logged = repr(logs)
    assert APP_SECRET not in logged and not any(url in logged for url in platform.issued_urls)


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ([("code", 10003)], "endpoint refused the app: code 10003"),
        ([("handshake", 514, "1000040350")], "too many connections"),
        ([("handshake", 403, "")], "forbidden"),
    ],
)
async def test_a_refusal_no_retry_can_mend_stops_the_client_for_good(
    platform: FakeLongConnectionPlatform, start: Any, script: list[Any], reason: str
) -> None:
    platform.endpoint_script = script
    c = await start(connect=False)
    await asyncio.wait_for(c.lc.stopped.wait(), WAIT_S)
    assert reason in (c.lc.failed or "")
    assert c.lc.not_ready_reason() == "long_connection_down" and platform.endpoint_calls == 1


async def test_wrong_credentials_stop_the_client_without_logging_the_secret(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    with structlog.testing.capture_logs() as logs:
        c = await start(connect=False, BRIDGE_LARK_APP_SECRET="wrong-secret-5e9a")
        await asyncio.wait_for(c.lc.stopped.wait(), WAIT_S)
    assert "endpoint refused the app" in (c.lc.failed or "")
    assert [e["log_level"] for e in logs if "stopped for good" in e["event"]] == ["error"]
    assert "wrong-secret-5e9a" not in repr(logs)


async def test_reconnect_count_exhausted_gives_up(platform: FakeLongConnectionPlatform, start: Any) -> None:
    platform.client_config["ReconnectCount"] = 2
    platform.endpoint_script = [("handshake", 502, ""), ("handshake", 502, ""), ("handshake", 502, "")]
    c = await start(connect=False)
    await asyncio.wait_for(c.lc.stopped.wait(), WAIT_S)
    assert c.lc.failed == "gave up after 2 attempts (handshake_502)" and platform.endpoint_calls == 2


async def test_the_client_connects_only_once_the_delivery_is_ready(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    ready = False
    c = await start(connect=False, delivery_ready=lambda: ready)
    await until(lambda: c.lc.not_ready_reason() == "long_connection_down", "ready without a connection")
    assert platform.endpoint_calls == 0
    ready = True
    await until(lambda: c.lc.connected, "did not connect once the delivery was ready")


# ---- shutdown (§9.4) -------------------------------------------------------------------------


async def test_shutdown_acks_events_in_flight_refuses_new_ones_and_closes_with_1000(
    platform: FakeLongConnectionPlatform, start: Any
) -> None:
    c = await start()
    c.sink.held = True
    in_flight = await platform.push(payload())
    await asyncio.wait_for(c.sink.entered.wait(), WAIT_S)
    closing = asyncio.create_task(c.lc.close(timeout_s=WAIT_S))
    with structlog.testing.capture_logs() as logs:
        assert (await ack_of(platform, payload())).code == 500  # arrived while closing
    assert [e["outcome"] for e in logs if e["event"] == "event"] == ["shutting_down"]
    assert not closing.done()  # waits for the event in flight
    c.sink.release()
    await asyncio.wait_for(closing, WAIT_S)
    ack = await platform.wait_ack(in_flight, timeout_s=WAIT_S)
    await until(lambda: platform.open_connections == 0, "the connection stayed open")
    conn = platform.connections[0]
    assert ack.code == 200 and conn.closed_at is not None and ack.received_at <= conn.closed_at
    assert conn.client_close_code == 1000
    assert c.sample("bridge_long_connection_up") == 0
    assert c.sample("bridge_long_connection_disconnects_total", {"reason": "shutdown"}) is None  # not a loss


# ---- in the app: readiness follows the connection (§9.4) -------------------------------------


async def test_readiness_with_the_long_connection_alone_follows_the_connection(
    platform: FakeLongConnectionPlatform,
) -> None:
    platform.endpoint_script = [("code", 10003)]  # the first client is refused for good
    app = create_app(settings_for(platform), sink=RecordingSink())
    async with TestClient(TestServer(app)) as client:
        lc = app[STATE].long_connection
        assert lc is not None
        await asyncio.wait_for(lc.stopped.wait(), WAIT_S)
        resp = await client.get("/readyz")
        assert (resp.status, await resp.json()) == (503, {"status": "unavailable", "reason": "long_connection_down"})
    app = create_app(settings_for(platform), sink=RecordingSink())
    async with TestClient(TestServer(app)) as client:
        await until(lambda: platform.open_connections == 1, "the app's client did not connect")
        assert (await client.get("/readyz")).status == 200
        assert (await client.post("/webhook/event", data=b"{}")).status in (404, 405)  # no webhook
        assert (await ack_of(platform, payload())).code == 200
