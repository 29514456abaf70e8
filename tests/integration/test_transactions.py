"""Transactions (BRIDGE_KAFKA_TRANSACTIONS) on a real broker: deliveries are committed in shared
transactions, an attempt whose acks come after its deadline is aborted and never read, and the
barrier before a retry waits for a transaction open below the high watermark (docs/delivery.md,
"Transactions")."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from bridge.kafka import build_producer, transactional_id
from tests.support.bridges import topic_settings
from tests.support.kafka import read_topic
from tests.support.samples import sample_event
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration
ON = {"BRIDGE_KAFKA_TRANSACTIONS": "true"}
ROOM = "BRIDGE_TOPIC_ROOM_CREATED"


def topics() -> dict[str, str]:
    return topic_settings(f"txn-{uuid.uuid4().hex[:8]}")


def sample(bridge: Any, name: str, **labels: str) -> float:
    return bridge.metrics.registry.get_sample_value(name, labels) or 0.0


def fresh(kind: str, event_id: str) -> dict[str, Any]:
    """A first attempt: created now, so no barrier."""
    body = sample_event(kind, event_id=event_id)
    if "header" in body:  # schema 2.0: ms
        body["header"]["create_time"] = str(int(time.time() * 1000))
    else:  # schema 1.0: seconds
        body["ts"] = f"{time.time():.6f}"
    return body


async def test_concurrent_deliveries_share_committed_transactions(broker: Any, start_bridge: Any) -> None:
    t = topics()
    bridge = await start_bridge(broker.bootstrap_servers, **t, **ON)
    kinds = ["vc.room.created_v1", "third_party_meeting_room_event_created"]
    bodies = [fresh(kinds[i % 2], f"txn-{i}") for i in range(40)]
    answers = await asyncio.gather(*(bridge.send(bridge.platform.request(b)) for b in bodies))
    assert [status for status, _ in answers] == [200] * 40
    committed = sample(bridge, "bridge_kafka_transactions_total", outcome="committed")
    assert 1 <= committed < 40  # group commit: deliveries shared transactions
    assert sample(bridge, "bridge_kafka_transaction_deliveries_sum") == 40
    for isolation in ("read_committed", "read_uncommitted"):
        rooms = await read_topic(broker.bootstrap_servers, t[ROOM], expect=20, isolation_level=isolation)
        assert sorted(dict(r.headers)["lark_event_id"] for r in rooms) == sorted(
            f"txn-{i}".encode() for i in range(0, 40, 2)
        )


class LateAcks:
    """A real transactional producer whose acks reach the bridge ``delay_s`` late (a leader waiting
    on a follower): the records are appended, the transaction's deadline passes first."""

    def __init__(self, real: AIOKafkaProducer) -> None:
        self._real = real
        self.delay_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        acked = await self._real.send(*args, **kwargs)
        if not self.delay_s:
            return acked
        late: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def deliver(f: asyncio.Future[Any]) -> None:
            if not late.done():
                late.set_result(f.result())

        acked.add_done_callback(lambda f: asyncio.get_running_loop().call_later(self.delay_s, deliver, f))
        return late


async def test_an_attempt_acked_after_its_deadline_is_aborted_and_its_retry_is_the_one_copy(
    broker: Any, start_bridge: Any
) -> None:
    t = topics()
    producers: list[LateAcks] = []

    def factory(settings: Any) -> Any:
        producers.append(LateAcks(build_producer(settings, transactional_id=transactional_id(settings))))
        return producers[-1]

    bridge = await start_bridge(broker.bootstrap_servers, producer_factory=factory, **t, **ON)
    producers[-1].delay_s = 3.0  # past the 2 s answer deadline
    body = fresh("vc.room.created_v1", "late-1")
    assert (await bridge.send(bridge.platform.request(body)))[0] == 503
    await wait_until(
        lambda: sample(bridge, "bridge_kafka_transactions_total", outcome="aborted") == 1,
        timeout_s=5,
        message="the transaction was not aborted",
    )
    producers[-1].delay_s = 0.0
    assert (await bridge.send(bridge.platform.request(body)))[0] == 200  # the retry
    appended = await read_topic(broker.bootstrap_servers, t[ROOM], expect=2)
    assert len(appended) == 2  # both attempts' records are in the log ...
    readable = await read_topic(broker.bootstrap_servers, t[ROOM], expect=1, isolation_level="read_committed")
    assert [dict(r.headers)["lark_event_id"] for r in readable] == [b"late-1"]  # ... one is readable


@pytest.mark.parametrize("ending", ["commit", "abort"])
async def test_a_retry_waits_for_a_transaction_open_below_the_high_watermark(
    broker: Any, start_bridge: Any, ending: str
) -> None:
    """Another replica's attempt, acked but not yet committed: the retry's barrier can neither count
    it (it may abort) nor ignore it (it may commit), so it waits — 503 at the deadline — and once
    the transaction ends, the retry is a duplicate (committed) or published (aborted)."""
    t = topics()
    bridge = await start_bridge(broker.bootstrap_servers, **t)
    other = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, transactional_id=f"other-{uuid.uuid4().hex}", acks="all"
    )
    await other.start()
    try:
        await other.begin_transaction()
        await (
            await other.send(
                t[ROOM],
                b"{}",
                key=b"room",
                headers=[("lark_event_id", b"open-1")],
                timestamp_ms=int(time.time() * 1000),
            )
        )
        body = sample_event("vc.room.created_v1", event_id="open-1")  # created long ago: a retry
        status, _ = await bridge.send(bridge.platform.request(body))
        assert status == 503
        assert sample(bridge, "bridge_requests_total", outcome="unavailable", status="503") == 1
        await (other.commit_transaction() if ending == "commit" else other.abort_transaction())
    finally:
        await other.stop()
    assert (await bridge.send(bridge.platform.request(body)))[0] == 200
    readable = await read_topic(broker.bootstrap_servers, t[ROOM], expect=1, isolation_level="read_committed")
    assert [dict(r.headers)["lark_event_id"] for r in readable] == [b"open-1"]
    assert sample(bridge, "bridge_duplicates_suppressed_total", source="log") == (ending == "commit")
