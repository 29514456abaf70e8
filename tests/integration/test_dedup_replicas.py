"""Exactly one record per event id across restarts and replicas: the bridge's topics are the
dedup ledger (bridge/dedup_feed.py). Real broker, real consumers."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import signal
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import RequestTimedOutError

from bridge.dedup_feed import build_consumer
from bridge.kafka import build_producer
from bridge_devtools.broker import free_port
from bridge_devtools.platform import Platform
from tests.support.bridges import spawn_bridge, topic_settings
from tests.support.credentials import KEY
from tests.support.kafka import read_topic
from tests.support.samples import sample_event
from tests.support.waits import wait_http_status

pytestmark = pytest.mark.integration
KIND = ("vc.room.created_v1", "third_party_meeting_room_event_created")


def shared_topics() -> dict[str, str]:
    """Topic settings two bridges share (one deployment's replicas)."""
    return topic_settings(f"rep-{uuid.uuid4().hex[:8]}")


def duplicates(bridge: Any, source: str) -> float:
    value = bridge.metrics.registry.get_sample_value("bridge_duplicates_suppressed_total", {"source": source})
    return value or 0.0


async def test_a_redelivery_after_a_restart_is_not_published_again(broker: Any, start_bridge: Any) -> None:
    topics = shared_topics()
    first = await start_bridge(broker.bootstrap_servers, **topics)
    body = sample_event("vc.room.created_v1", event_id="restart-1")
    assert await first.send(first.platform.request(body)) == (200, {"msg": "success"})
    await first.server.close()  # the app's cleanup: producer flushed and closed, feed stopped

    second = await start_bridge(broker.bootstrap_servers, **topics)  # ready = replayed
    assert second.metrics.registry.get_sample_value("bridge_dedup_replay_ids") == 1
    # The platform's retry: the same delivery, a fresh signature.
    assert await second.send(second.platform.request(body)) == (200, {"msg": "success"})
    assert duplicates(second, "log") == 1
    records = await read_topic(broker.bootstrap_servers, topics["BRIDGE_TOPIC_ROOM_CREATED"], expect=1)
    assert [r.key for r in records] == [b"omm_4de32cf10a4358788ff4e09e37ebbf9b"]
    assert dict(records[0].headers)["lark_event_id"] == b"restart-1"


@pytest.mark.parametrize(
    ("kind", "topic_setting", "records_per_delivery"),
    [
        ("vc.room.created_v1", "BRIDGE_TOPIC_ROOM_CREATED", 1),
        ("third_party_meeting_room_event_created", "BRIDGE_TOPIC_THIRD_PARTY_MEETING_ROOM_EVENT", 2),
        ("dead_letter", "BRIDGE_TOPIC_DEAD_LETTER", 1),
    ],
)
async def test_a_redelivery_to_another_replica_is_not_published_again(
    broker: Any, start_bridge: Any, kind: str, topic_setting: str, records_per_delivery: int
) -> None:
    topics = shared_topics()
    a = await start_bridge(broker.bootstrap_servers, **topics)
    b = await start_bridge(broker.bootstrap_servers, **topics)
    if kind == "dead_letter":
        body = sample_event("vc.room.created_v1", event_id=f"rep-{kind}")
        body["header"]["event_type"] = "vc.room.exploded_v1"  # unknown type: one dead letter
    else:
        body = sample_event(kind, event_id=f"rep-{kind}")
    assert await a.send(a.platform.request(body)) == (200, {"msg": "success"})
    await asyncio.sleep(1.0)
    assert await b.send(b.platform.request(body)) == (200, {"msg": "success"})
    assert duplicates(b, "log") == 1 and duplicates(b, "local") == 0
    records = await read_topic(broker.bootstrap_servers, topics[topic_setting], expect=records_per_delivery)
    assert len(records) == records_per_delivery
    lag = b.metrics.registry.get_sample_value("bridge_dedup_tail_lag_seconds_count")
    assert lag is not None and lag >= records_per_delivery  # B read A's records while running


class GatedConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """The feed's consumer, holding its reads until ``gate`` opens (a slow replay)."""

    gate: asyncio.Event

    async def getmany(self, *partitions: Any, **kwargs: Any) -> Any:
        await self.gate.wait()
        return await super().getmany(*partitions, **kwargs)


def gated_factory(gate: asyncio.Event) -> Any:
    def factory(settings: Any) -> AIOKafkaConsumer:
        consumer = build_consumer(settings)
        consumer.__class__ = GatedConsumer
        consumer.gate = gate
        return consumer

    return factory


async def published_before(broker: Any, start_bridge: Any, topics: dict[str, str]) -> None:
    """One record already in the topics, so that a replay has something to read."""
    earlier = await start_bridge(broker.bootstrap_servers, **topics)
    assert (await earlier.send(earlier.platform.request(sample_event(event_id="earlier"))))[0] == 200
    await earlier.server.close()


async def test_not_ready_and_503_until_the_ledger_is_replayed(broker: Any, start_bridge: Any) -> None:
    topics = shared_topics()
    await published_before(broker, start_bridge, topics)
    gate = asyncio.Event()
    bridge = await start_bridge(
        broker.bootstrap_servers, wait_ready=False, consumer_factory=gated_factory(gate), **topics
    )
    await asyncio.sleep(2.0)  # producer connected and topics created meanwhile
    status, text = await bridge.get("/readyz")
    assert (status, json.loads(text)["reason"]) == (503, "dedup_replay")
    status, _ = await bridge.send(bridge.platform.request(sample_event(event_id="during-replay")))
    assert status == 503  # the platform retries; no duplicate can slip through a partial ledger
    gate.set()
    await bridge.wait_ready()
    assert (await bridge.send(bridge.platform.request(sample_event(event_id="during-replay"))))[0] == 200
    assert (await bridge.send(bridge.platform.request(sample_event(event_id="earlier"))))[0] == 200
    assert duplicates(bridge, "log") == 1  # "earlier" came from the replay


async def test_a_replay_that_cannot_finish_in_time_serves_anyway(broker: Any, start_bridge: Any) -> None:
    topics = shared_topics()
    await published_before(broker, start_bridge, topics)
    gate = asyncio.Event()  # never opened
    bridge = await start_bridge(
        broker.bootstrap_servers,
        wait_ready=False,
        consumer_factory=gated_factory(gate),
        BRIDGE_DEDUP_REPLAY_TIMEOUT_S="1",
        **topics,
    )
    await bridge.wait_ready(timeout_s=30)
    assert bridge.metrics.registry.get_sample_value("bridge_dedup_replay_incomplete_total") == 1
    assert (await bridge.send(bridge.platform.request(sample_event(event_id="late-replay"))))[0] == 200
    gate.set()


async def test_memory_store_forgets_at_restart(broker: Any, start_bridge: Any) -> None:
    topics = shared_topics()
    first = await start_bridge(broker.bootstrap_servers, BRIDGE_DEDUP_STORE="memory", **topics)
    assert first.server.app is not None
    body = sample_event("vc.room.created_v1", event_id="memory-1")
    assert (await first.send(first.platform.request(body)))[0] == 200
    await first.server.close()
    second = await start_bridge(broker.bootstrap_servers, BRIDGE_DEDUP_STORE="memory", **topics)
    assert (await second.send(second.platform.request(body)))[0] == 200
    records = await read_topic(broker.bootstrap_servers, topics["BRIDGE_TOPIC_ROOM_CREATED"], expect=2)
    assert len(records) == 2  # today's behaviour, on purpose: memory is this process only


async def test_sigkill_of_a_replica_mid_stream_leaves_every_delivery_exactly_once(broker: Any, tmp_path: Any) -> None:
    prefix = f"kill-{uuid.uuid4().hex[:6]}"
    ports = [free_port(), free_port()]
    logs = [(tmp_path / f"bridge-{i}.log").open("w") for i in range(2)]
    procs = [spawn_bridge(broker.bootstrap_servers, port, prefix, log) for port, log in zip(ports, logs, strict=True)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    platform = Platform(encrypt_key=KEY)
    delivered: list[str] = []
    rng = random.Random(7)
    try:
        async with aiohttp.ClientSession() as session:
            for proc, url in zip(procs, urls, strict=True):
                await wait_http_status(
                    session,
                    url + "/readyz",
                    200,
                    timeout_s=60,
                    alive=functools.partial(lambda p: p.poll() is None, proc),
                    message=f"replica at {url} did not become ready",
                )

            async def deliver(event_id: str) -> None:
                """The platform: retry (to either replica) until 200, a fresh signature each time."""
                body = sample_event(KIND[int(event_id.rsplit("-", 1)[1]) % 2], event_id=event_id)
                for attempt in range(60):
                    url = urls[(attempt + rng.randrange(2)) % 2]
                    req = platform.request(body)
                    try:
                        timeout = aiohttp.ClientTimeout(total=5)
                        async with session.post(
                            url + "/webhook/event", data=req.body, headers=req.headers, timeout=timeout
                        ) as r:
                            if r.status == 200:
                                delivered.append(event_id)
                                return
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                    await asyncio.sleep(1.0)  # the platform waits 15 s; anything >> the tail lag
                raise AssertionError(f"{event_id} never answered 200")

            async def killer() -> None:
                await asyncio.sleep(2.0)
                procs[0].send_signal(signal.SIGKILL)
                await asyncio.to_thread(procs[0].wait, 10)
                procs[0] = spawn_bridge(broker.bootstrap_servers, ports[0], prefix, logs[0])

            ids = [f"kill-{i}" for i in range(150)]
            kill = asyncio.create_task(killer())
            sem = asyncio.Semaphore(6)

            async def one(event_id: str) -> None:
                async with sem:
                    await deliver(event_id)

            await asyncio.gather(*(one(d) for d in ids))
            await kill
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 30)
        for log in logs:
            log.close()
    assert sorted(delivered) == sorted(ids)
    room = await read_topic(broker.bootstrap_servers, f"{prefix}.room", expect=1, timeout_s=10)
    third = await read_topic(broker.bootstrap_servers, f"{prefix}.3p", expect=1, timeout_s=10)
    per_id = Counter(dict(m.headers)["lark_event_id"].decode() for m in room + third)
    assert set(per_id) == set(ids), f"missing: {set(ids) - set(per_id)}"
    # A room event is one record; the third-party sample fans out to its two rooms.
    wrong = {d: n for d, n in per_id.items() if n != (1 if int(d.rsplit("-", 1)[1]) % 2 == 0 else 2)}
    assert not wrong, f"published more or less than once: {wrong}"


class LosesOneRoom:
    """A real producer whose first send of the record keyed ``key`` fails the way a lost
    partition does (its future ends in ``RequestTimedOutError``); every other record is sent."""

    def __init__(self, real: AIOKafkaProducer, key: bytes) -> None:
        self._real = real
        self._key = key
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("key") == self._key and not self.lost:
            self.lost += 1
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(RequestTimedOutError())
            return failed
        return await self._real.send(*args, **kwargs)


@pytest.mark.parametrize("retried_on", ["same replica", "other replica"])
async def test_a_partly_published_fan_out_is_completed_by_the_retry_without_duplicates(
    broker: Any, start_bridge: Any, retried_on: str
) -> None:
    topics = shared_topics()
    rooms = [f"omm_partial_{i}" for i in range(4)]
    made: list[LosesOneRoom] = []

    def factory(settings: Any) -> Any:
        made.append(LosesOneRoom(build_producer(settings), rooms[2].encode()))
        return made[-1]

    a = await start_bridge(broker.bootstrap_servers, producer_factory=factory, **topics)
    b = await start_bridge(broker.bootstrap_servers, **topics)
    body = sample_event("third_party_meeting_room_event_created", event_id=f"partial-{retried_on}")
    body["event"]["meeting_rooms"] = [{"open_id": room} for room in rooms]
    assert (await a.send(a.platform.request(body)))[0] == 503  # room 2's record was lost
    topic = topics["BRIDGE_TOPIC_THIRD_PARTY_MEETING_ROOM_EVENT"]
    first = await read_topic(broker.bootstrap_servers, topic, expect=3)
    assert sorted(r.key for r in first) == [rooms[i].encode() for i in (0, 1, 3)]
    assert sorted(dict(r.headers)["lark_record_part"] for r in first) == [b"0/4", b"1/4", b"3/4"]

    retry = a if retried_on == "same replica" else b
    await asyncio.sleep(1.0)  # the platform's first retry comes 15 s later: B has read A's records
    assert await retry.send(retry.platform.request(body)) == (200, {"msg": "success"})
    after = await read_topic(broker.bootstrap_servers, topic, expect=4)
    assert Counter(r.key for r in after) == Counter(room.encode() for room in rooms)  # each room once
    assert {dict(r.headers)["lark_event_id"] for r in after} == {f"partial-{retried_on}".encode()}

    # Now delivered everywhere: a further redelivery to either replica publishes nothing.
    await asyncio.sleep(1.0)
    for bridge in (a, b):
        assert await bridge.send(bridge.platform.request(body)) == (200, {"msg": "success"})
    assert len(await read_topic(broker.bootstrap_servers, topic, expect=4)) == 4


class StallableConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """The feed's consumer; its reads hang while ``running`` is clear (a hung or moved leader)."""

    running: asyncio.Event

    async def getmany(self, *partitions: Any, **kwargs: Any) -> Any:
        await self.running.wait()
        return await super().getmany(*partitions, **kwargs)


async def test_a_retry_is_published_only_once_the_feed_has_caught_up_with_the_broker(
    broker: Any, start_bridge: Any
) -> None:
    topics = shared_topics()
    running = asyncio.Event()
    running.set()

    def stallable(settings: Any) -> AIOKafkaConsumer:
        consumer = build_consumer(settings)
        consumer.__class__ = StallableConsumer
        consumer.running = running
        return consumer

    a = await start_bridge(broker.bootstrap_servers, **topics)
    b = await start_bridge(broker.bootstrap_servers, consumer_factory=stallable, **topics)
    running.clear()  # B's feed stops reading: it cannot know what A publishes now
    body = sample_event("vc.room.created_v1", event_id="retry-1")  # created long ago: a retry
    assert (await a.send(a.platform.request(body)))[0] == 200
    status, _ = await b.send(b.platform.request(body))
    assert status == 503  # not provably new: the platform retries rather than B writing a copy
    assert b.metrics.registry.get_sample_value("bridge_requests_total", {"outcome": "unavailable", "status": "503"})
    fresh = sample_event("vc.room.created_v1", event_id="fresh-1")
    fresh["header"]["create_time"] = str(int(time.time() * 1000))  # a first attempt: no barrier
    assert (await b.send(b.platform.request(fresh)))[0] == 200
    running.set()
    assert (await b.send(b.platform.request(body)))[0] == 200
    assert duplicates(b, "log") == 1
    records = await read_topic(broker.bootstrap_servers, topics["BRIDGE_TOPIC_ROOM_CREATED"], expect=2)
    ids = sorted(dict(r.headers)["lark_event_id"].decode() for r in records)
    assert ids == ["fresh-1", "retry-1"]
