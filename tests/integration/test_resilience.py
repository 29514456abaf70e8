"""The broker away: absent at start, restarted under traffic. Nothing answered 200 is lost, and
the platform's retries (until 200) leave exactly one record per event id."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.logs import ClientLogFilter
from tests.support.credentials import TOKEN
from tests.support.kafka import read_topic
from tests.support.samples import sample_event
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


async def send_until_200(bridge: Any, body: dict[str, Any], *, timeout_s: float = 90.0) -> int:
    """Retry like the platform (faster): re-sign and resend until 200. Returns the attempts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    attempts = 0
    while True:
        attempts += 1
        try:
            status, _ = await bridge.send(bridge.platform.request(body))
        except OSError:
            status = 0
        if status == 200:
            return attempts
        assert status in (0, 503), status
        assert loop.time() < deadline, "no 200 before the deadline"
        await asyncio.sleep(0.2)


async def test_broker_absent_at_start_then_appears(spare_broker: Any, start_bridge: Any) -> None:
    bootstrap = f"127.0.0.1:{spare_broker.port}"
    bridge = await start_bridge(bootstrap, wait_ready=False)
    # Up without Kafka: handshake answered, events refused with 503, not ready.
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, body = await bridge.send(bridge.platform.handshake(TOKEN, "early"))
    assert (status, body) == (200, {"challenge": "early"}) and loop.time() - t0 < 1.0
    event = sample_event("vc.room.created_v1", event_id="absent-1")
    status, _ = await bridge.send(bridge.platform.request(event))
    assert status == 503
    assert (await bridge.get("/readyz"))[0] == 503
    # The broker appears: the same bridge starts publishing, no restart.
    await asyncio.to_thread(spare_broker.start, 120)
    await bridge.wait_ready(timeout_s=60)
    await send_until_200(bridge, event)
    msgs = await read_topic(spare_broker.bootstrap_servers, bridge.settings.topic_room_created, expect=1)
    assert [json.loads(m.value)["id"] for m in msgs] == ["absent-1"]


class Lines(logging.Handler):
    """The log lines as the bridge's handler lets them through (with its client-log filter)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ClientLogFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("how", ["graceful", "crash"])
async def test_broker_restart_under_traffic_loses_nothing(
    spare_broker: Any, start_bridge: Any, how: str, lines: Lines
) -> None:
    await asyncio.to_thread(spare_broker.start, 120)
    bridge = await start_bridge(spare_broker.bootstrap_servers)
    ids = [f"restart-{i:04d}" for i in range(400)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in ids:
        queue.put_nowait(i)
    answered: list[str] = []
    retried = 0

    async def sender() -> None:
        nonlocal retried
        while not queue.empty():
            event_id = queue.get_nowait()
            body = sample_event("third_party_meeting_room_event_created", event_id=event_id)
            body["event"]["meeting_rooms"] = [{"open_id": f"omm_r{int(event_id[-4:]) % 17}"}]
            attempts = await send_until_200(bridge, body)
            retried += attempts - 1
            answered.append(event_id)

    async def restarter() -> None:
        # Polls a plain list the senders append to; no deadline of its own (the senders' have one).
        await wait_until(
            lambda: len(answered) >= 100, timeout_s=None, interval_s=0.05, message="100 answers never reached"
        )
        if how == "graceful":
            await asyncio.to_thread(spare_broker.restart, 120)
        else:  # SIGKILL: in-flight requests see the connection die mid-response
            await asyncio.to_thread(spare_broker.kill)
            await asyncio.to_thread(spare_broker.start, 120)

    await asyncio.gather(restarter(), *(sender() for _ in range(8)))
    assert sorted(answered) == ids
    msgs = await read_topic(
        spare_broker.bootstrap_servers,
        bridge.settings.topic_third_party_meeting_room_event,
        expect=len(ids),
        timeout_s=60,
    )
    got = [json.loads(m.value)["larkeventid"] for m in msgs]
    assert sorted(got) == ids, f"missing={set(ids) - set(got)} dup={len(got) - len(set(got))}"
    # The outage reads as one story: the producer's "unavailable" and "back" lines pair up, and
    # the client's own lines are never ERROR and few (each kind at most once per 30 s).
    said = [r.getMessage() for r in lines.records if r.name == "bridge.publish"]
    down = [m for m in said if m.startswith("kafka producer: unavailable")]
    back = [m for m in said if m.startswith("kafka producer: back after")]
    client = [r for r in lines.records if r.name.startswith("aiokafka")]
    assert 1 <= len(down) <= 2 and len(back) == len(down), said
    assert not [r for r in client if r.levelno >= logging.ERROR]
    assert len(client) <= 40, [r.getMessage() for r in client]
    print(f"\n{how} restart under traffic: {len(ids)} events, {retried} retries after 503s, {len(client)} client lines")
