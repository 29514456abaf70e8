"""The delivery's orchestration (bridge.delivery.KafkaDelivery) with a fake publish stage: acked
outcomes, dedup of sequential and concurrent duplicates, publish timeouts with a late ack, failed
publishes, dead letters, the shutdown drain, and the metrics each of them moves."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import structlog

from bridge.dedup import DeliveryLedger
from bridge.delivery import KafkaDelivery, Outcome, Unwritten
from bridge.errors import Unavailable
from bridge.inbound import InboundEvent, read_inbound
from bridge.kafka import record_bytes
from bridge.metrics import Metrics
from bridge.normalize import Record
from bridge_devtools.platform import compact
from tests.support.fakes import FailingPublisher, GatedPublisher, PartialPublisher, RecordingPublisher
from tests.support.samples import ROOM_CREATED, THIRD_PARTY_CREATED, sample_event
from tests.support.topics import TOPICS

RECEIVED_MS = 1_763_000_000_000
SHORT_S = 0.05  # a request timeout that a held publish always outlives


class Harness:
    """A KafkaDelivery wired to ``publisher``, a fresh ledger and fresh metrics."""

    def __init__(self, publisher: Any, *, timeout_s: float = 5.0, max_record_bytes: int = 1_048_576) -> None:
        self.publisher = publisher
        self.ledger = DeliveryLedger(ttl_s=3600, max_entries=1000)
        self.metrics = Metrics()
        self.delivery = KafkaDelivery(
            publisher, TOPICS, self.ledger, self.metrics, timeout_s=timeout_s, max_record_bytes=max_record_bytes
        )

    async def deliver(self, event: InboundEvent) -> Outcome:
        return await self.delivery.deliver(event, received_ms=RECEIVED_MS)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    @property
    def duplicates(self) -> float:
        return self.metric("bridge_duplicates_suppressed_total", source="local") + self.metric(
            "bridge_duplicates_suppressed_total", source="log"
        )


def inbound(kind: str = ROOM_CREATED, event_id: str = "d-1", **changes: Any) -> InboundEvent:
    """The inbound event of a sample with its own event id; ``changes`` update its header
    (schema 2.0) or top level (1.0)."""
    body = sample_event(kind, event_id=event_id)
    body.get("header", body).update(changes)
    return read_inbound(compact(body))


async def soon(awaitable: Any, timeout_s: float = 2.0) -> Any:
    """``awaitable``'s result, failing the test (TimeoutError) instead of hanging it."""
    return await asyncio.wait_for(awaitable, timeout_s)


async def settle() -> None:
    """Let every task that can run, run (a handful of loop iterations)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def raises_unavailable(awaitable: Any) -> str:
    with pytest.raises(Unavailable) as info:
        await soon(awaitable)
    return info.value.reason


# ---- published, then a duplicate ----------------------------------------------------------------


async def test_published_event_returns_its_acked_records_and_a_redelivery_is_a_duplicate() -> None:
    h = Harness(RecordingPublisher())
    fan_out = await h.deliver(inbound(THIRD_PARTY_CREATED, "d-3p"))  # two rooms: two records
    room = await h.deliver(inbound(ROOM_CREATED, "d-room"))
    assert fan_out == Outcome("published", None, [("t.3p", 0, 0), ("t.3p", 0, 1)])
    assert room == Outcome("published", None, [("t.room", 0, 0)])
    assert [[(r.topic, r.key) for r in call] for call in h.publisher.calls] == [
        [("t.3p", b"omm_c4e2da9493fbd2ceea4f37aae6b3ee78"), ("t.3p", b"omm_a5ab469c8e012e2a0b48fe4a8e344f94")],
        [("t.room", b"omm_4de32cf10a4358788ff4e09e37ebbf9b")],
    ]

    again = await h.deliver(inbound(ROOM_CREATED, "d-room"))
    assert again == Outcome("duplicate") and again.records == []
    assert len(h.publisher.calls) == 2, "a duplicate is never published again"
    assert h.duplicates == 1
    assert h.metric("bridge_events_published_total", lark_type=ROOM_CREATED, topic="t.room") == 1
    assert h.metric("bridge_events_published_total", lark_type=THIRD_PARTY_CREATED, topic="t.3p") == 2
    assert h.metric("bridge_dedup_entries") == 2


# ---- a duplicate while the first is in flight --------------------------------------------------


async def test_duplicates_arriving_in_flight_wait_for_the_first_and_are_duplicates_once_it_is_acked() -> None:
    h = Harness(GatedPublisher())
    first = asyncio.create_task(h.deliver(inbound(event_id="d-race")))
    await soon(h.publisher.entered.wait())
    waiting = [asyncio.create_task(h.deliver(inbound(event_id="d-race"))) for _ in range(3)]
    await settle()
    assert not first.done() and not any(w.done() for w in waiting), "duplicates wait for the first's ack"
    assert len(h.publisher.calls) == 1 and h.duplicates == 0
    h.publisher.release()
    assert await soon(first) == Outcome("published", None, [("t.room", 0, 0)])
    assert [await soon(w) for w in waiting] == [Outcome("duplicate")] * 3
    assert len(h.publisher.calls) == 1
    assert h.duplicates == 3


async def test_a_duplicate_waiting_on_a_failed_first_publishes_itself() -> None:
    h = Harness(GatedPublisher())
    first = asyncio.create_task(h.deliver(inbound(event_id="d-retry")))
    await soon(h.publisher.entered.wait())
    second = asyncio.create_task(h.deliver(inbound(event_id="d-retry")))
    await settle()
    assert not second.done() and len(h.publisher.calls) == 1
    h.publisher.fail()  # the first's publish fails: broker_unavailable
    assert await raises_unavailable(first) == "broker_unavailable"
    await soon(h.publisher.entered.wait())  # ... and the waiting duplicate publishes its own records
    assert len(h.publisher.calls) == 2 and not second.done()
    assert not h.ledger.delivered("d-retry")
    h.publisher.release()
    assert await soon(second) == Outcome("published", None, [("t.room", 0, 0)])
    assert h.ledger.delivered("d-retry") and h.duplicates == 0
    assert h.metric("bridge_events_published_total", lark_type=ROOM_CREATED, topic="t.room") == 1


# ---- timeout, then a late ack ------------------------------------------------------------------


async def test_publish_timeout_then_late_ack_counts_as_delivered() -> None:
    h = Harness(GatedPublisher(), timeout_s=SHORT_S)
    assert await raises_unavailable(h.deliver(inbound(event_id="d-late"))) == "publish_timeout"
    assert h.publisher.waiting == 1, "the publish goes on after the request timed out"
    assert not h.ledger.delivered("d-late") and h.ledger.in_flight("d-late") is not None
    # The platform's retry while it is still in flight: waits for it, times out too, no second publish.
    assert await raises_unavailable(h.deliver(inbound(event_id="d-late"))) == "publish_timeout"
    assert len(h.publisher.calls) == 1
    h.publisher.release()  # the broker acks, late
    await soon(h.delivery.drain(1.0))
    assert h.ledger.delivered("d-late") and h.ledger.in_flight("d-late") is None
    assert h.metric("bridge_events_published_total", lark_type=ROOM_CREATED, topic="t.room") == 1
    assert await h.deliver(inbound(event_id="d-late")) == Outcome("duplicate")
    assert len(h.publisher.calls) == 1 and h.duplicates == 1


async def test_publish_timeout_then_late_failure_leaves_the_id_to_the_retry() -> None:
    h = Harness(GatedPublisher(), timeout_s=SHORT_S)
    assert await raises_unavailable(h.deliver(inbound(event_id="d-late-fail"))) == "publish_timeout"
    h.publisher.fail()
    await soon(h.delivery.drain(1.0))
    assert not h.ledger.delivered("d-late-fail") and h.ledger.in_flight("d-late-fail") is None
    h.publisher.release()
    assert await h.deliver(inbound(event_id="d-late-fail")) == Outcome("published", None, [("t.room", 0, 0)])
    assert len(h.publisher.calls) == 2


async def test_late_failures_of_an_outage_write_one_log_line_per_interval() -> None:
    h = Harness(GatedPublisher(), timeout_s=SHORT_S)
    for i in range(50):
        assert await raises_unavailable(h.deliver(inbound(event_id=f"d-out-{i}"))) == "publish_timeout"
    with structlog.testing.capture_logs() as logs:
        h.publisher.fail()
        await soon(h.delivery.drain(1.0))
    lines = [e for e in logs if e["event"] == "publish failed after its request timed out"]
    assert len(lines) == 1 and lines[0]["more_since_last_line"] == 0
    assert not any(h.ledger.delivered(f"d-out-{i}") for i in range(50))


async def test_the_ingress_deadline_bounds_the_wait_instead_of_the_timeout() -> None:
    h = Harness(GatedPublisher(), timeout_s=30.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Unavailable) as info:
        await soon(
            h.delivery.deliver(inbound(event_id="d-deadline"), received_ms=RECEIVED_MS, deadline_s=started + SHORT_S)
        )
    assert info.value.reason == "publish_timeout" and loop.time() - started < 1.0
    h.publisher.release()
    await soon(h.delivery.drain(1.0))
    assert h.ledger.delivered("d-deadline")


# ---- failed publishes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [Unavailable("broker_unavailable"), RuntimeError("boom")], ids=["unavailable", "unexpected"]
)
async def test_a_failed_publish_does_not_mark_the_id_and_the_retry_publishes(error: Exception) -> None:
    h = Harness(FailingPublisher(error, times=1))
    with pytest.raises(Unavailable) as info:  # whatever failed, the platform is told to retry
        await h.deliver(inbound(event_id="d-fail"))
    assert info.value is error if isinstance(error, Unavailable) else info.value.reason == "publish_failed"
    assert not h.ledger.delivered("d-fail") and h.ledger.in_flight("d-fail") is None
    assert h.metric("bridge_events_published_total", lark_type=ROOM_CREATED, topic="t.room") == 0
    assert h.metric("bridge_dedup_entries") == 0
    retry = await h.deliver(inbound(event_id="d-fail"))
    assert retry == Outcome("published", None, [("t.room", 0, 0)])
    assert len(h.publisher.calls) == 2 and len(h.publisher.acked) == 1
    assert h.duplicates == 0 and h.ledger.delivered("d-fail")
    assert h.metric("bridge_events_published_total", lark_type=ROOM_CREATED, topic="t.room") == 1
    assert h.metric("bridge_dedup_entries") == 1


# ---- dead letters ------------------------------------------------------------------------------


def _unknown_type() -> InboundEvent:
    return inbound(event_id="d-dl", event_type="im.message.receive_v1")


def _invalid_event() -> InboundEvent:
    body = sample_event(ROOM_CREATED, event_id="d-dl")
    del body["event"]["room"]["room_id"]
    return read_inbound(compact(body))


@pytest.mark.parametrize(
    ("make", "reason"),
    [(_unknown_type, "unknown_event_type"), (_invalid_event, "invalid_event")],
    ids=["unknown", "invalid"],
)
async def test_an_undecodable_event_publishes_exactly_one_dead_letter(make: Any, reason: str) -> None:
    h = Harness(RecordingPublisher())
    outcome = await h.deliver(make())
    assert outcome == Outcome("dead_lettered", reason, [("t.dlq", 0, 0)])
    [[record]] = h.publisher.calls
    assert (record.topic, record.key) == ("t.dlq", b"d-dl")
    assert json.loads(record.value)["data"]["reason"] == reason
    assert h.metric("bridge_dead_letters_total", reason=reason) == 1
    # Its redelivery is a duplicate like any other: no second dead letter.
    assert await h.deliver(make()) == Outcome("duplicate")
    assert len(h.publisher.calls) == 1
    assert h.metric("bridge_dead_letters_total", reason=reason) == 1 and h.duplicates == 1


async def test_a_dead_letter_counts_only_once_acked() -> None:
    h = Harness(FailingPublisher(times=1))
    assert await raises_unavailable(h.deliver(_unknown_type())) == "broker_unavailable"
    assert h.metric("bridge_dead_letters_total", reason="unknown_event_type") == 0
    assert not h.ledger.delivered("d-dl")
    assert await h.deliver(_unknown_type()) == Outcome("dead_lettered", "unknown_event_type", [("t.dlq", 0, 0)])
    assert h.metric("bridge_dead_letters_total", reason="unknown_event_type") == 1


async def test_an_event_without_a_event_id_is_one_dead_letter_keyed_by_its_payload_digest() -> None:
    # A malformed top level (header not an object) has no event id: its payload's digest is
    # the dedup key, so the platform's retries of it make one dead letter.
    h = Harness(RecordingPublisher())
    event = read_inbound(compact({"schema": "2.0", "header": "oops", "event": {}}))
    other = read_inbound(compact({"schema": "2.0", "header": "oops!", "event": {}}))
    assert event.event_id is None and event.defect is not None
    assert event.dedup_key().startswith("sha256:") and event.dedup_key() != other.dedup_key()
    first = await h.deliver(event)
    second = await h.deliver(event)
    third = await h.deliver(other)
    assert first == Outcome("dead_lettered", "invalid_event", [("t.dlq", 0, 0)])
    assert second == Outcome("duplicate")
    assert third == Outcome("dead_lettered", "invalid_event", [("t.dlq", 0, 1)])
    assert [[r.key for r in call] for call in h.publisher.calls] == [[None], [None]]
    assert [dict(c[0].headers)["lark_event_id"] for c in h.publisher.calls] == [
        e.dedup_key().encode() for e in (event, other)
    ]
    assert h.metric("bridge_dead_letters_total", reason="invalid_event") == 2
    assert h.duplicates == 1 and h.metric("bridge_dedup_entries") == 2


# ---- drain at shutdown -------------------------------------------------------------------------


async def test_drain_waits_for_a_publish_still_running_after_its_request_timed_out() -> None:
    h = Harness(GatedPublisher(), timeout_s=SHORT_S)
    assert await raises_unavailable(h.deliver(inbound(event_id="d-drain"))) == "publish_timeout"
    drain = asyncio.create_task(h.delivery.drain(5.0))
    await asyncio.sleep(0.1)
    assert not drain.done(), "drain returned while a publish was still running"
    h.publisher.release()
    await soon(drain)
    assert h.ledger.delivered("d-drain")


async def test_drain_gives_up_after_its_timeout_when_the_publish_never_finishes() -> None:
    h = Harness(GatedPublisher(), timeout_s=SHORT_S)
    assert await raises_unavailable(h.deliver(inbound(event_id="d-stuck"))) == "publish_timeout"
    loop = asyncio.get_running_loop()
    started = loop.time()
    await soon(h.delivery.drain(0.2))
    took = loop.time() - started
    assert 0.15 <= took < 1.0, took
    assert h.publisher.waiting == 1 and h.ledger.in_flight("d-stuck") is not None
    h.publisher.fail()  # end it, so that the test leaves no task behind
    await soon(h.delivery.drain(1.0))
    assert h.ledger.in_flight("d-stuck") is None and not h.ledger.delivered("d-stuck")


async def test_drain_with_nothing_in_flight_returns_at_once() -> None:
    h = Harness(RecordingPublisher())
    await h.deliver(inbound())
    await soon(h.delivery.drain(30.0), 0.5)


async def test_a_deadline_already_past_publishes_nothing_and_leaves_the_id_unmarked() -> None:
    h = Harness(RecordingPublisher())
    past = asyncio.get_running_loop().time() - 0.001  # e.g. the body took the whole budget to arrive
    with pytest.raises(Unavailable) as info:
        await h.delivery.deliver(inbound(event_id="d-late"), received_ms=RECEIVED_MS, deadline_s=past)
    assert info.value.reason == "publish_timeout"
    assert h.publisher.calls == [] and h.ledger.in_flight("d-late") is None and not h.ledger.delivered("d-late")
    assert (await h.deliver(inbound(event_id="d-late"))).kind == "published"


# ---- records that could never be published as they are ----------------------------------------


def with_unmodelled(kind: str, event_id: str, size: int, rooms: int = 0) -> InboundEvent:
    body = sample_event(kind, event_id=event_id)
    body["event"]["notes"] = "n" * size
    if rooms:
        body["event"]["meeting_rooms"] = [{"open_id": f"omm_{i:032x}"} for i in range(rooms)]
    return read_inbound(compact(body))


async def test_a_record_over_the_limit_becomes_one_dead_letter_without_its_payload() -> None:
    h = Harness(RecordingPublisher(), max_record_bytes=8_000)
    out = await h.deliver(with_unmodelled(ROOM_CREATED, "d-big", 9_000))
    assert out.kind == "dead_lettered" and out.reason == "record_too_large"
    [[record]] = h.publisher.calls
    env = json.loads(record.value)
    assert record.topic == "t.dlq" and record_bytes(record) <= 8_000
    assert env["data"]["error"].startswith("record too large: 1 record(s)") and env["data"]["payload"] == {}
    assert "payload not carried (too large for a record): " in env["data"]["error"]
    assert (await h.deliver(with_unmodelled(ROOM_CREATED, "d-big", 9_000))).kind == "duplicate"


async def test_a_record_just_under_the_limit_is_published() -> None:
    h = Harness(RecordingPublisher(), max_record_bytes=8_000)
    out = await h.deliver(with_unmodelled(ROOM_CREATED, "d-fits", 6_000))
    [[record]] = h.publisher.calls
    assert out.kind == "published" and record.topic == "t.room" and 6_000 < record_bytes(record) <= 8_000


async def test_a_fan_out_over_the_event_bound_is_one_dead_letter_with_its_payload() -> None:
    h = Harness(RecordingPublisher(), max_record_bytes=16_384)  # 16 x 16 KiB = 256 KiB per event
    out = await h.deliver(with_unmodelled(THIRD_PARTY_CREATED, "d-fan", 6_000, rooms=50))  # 50 x 7 KB
    assert out.kind == "dead_lettered"
    [[record]] = h.publisher.calls
    env = json.loads(record.value)
    assert env["data"]["error"].startswith("record too large: 50 record(s)")
    assert env["data"]["payload"]["event"]["notes"] == "n" * 6_000


async def test_a_partly_acked_fan_out_is_completed_by_the_retry_with_only_the_missing_records() -> None:
    event = inbound(THIRD_PARTY_CREATED, event_id="fan-1")
    event_rooms = [r.key for r in Harness(RecordingPublisher()).delivery._records_of(event, RECEIVED_MS)[0]]
    assert len(event_rooms) == 2
    h = Harness(PartialPublisher(lose={event_rooms[1]}))

    assert await raises_unavailable(h.deliver(event)) == "broker_unavailable"
    assert not h.ledger.delivered("fan-1") and h.ledger.written("fan-1", 2) == 0b01
    retried = await soon(h.deliver(event))
    assert retried.kind == "published" and len(retried.records) == 1
    assert [r.key for r in h.publisher.acked] == event_rooms  # each room once, none twice
    assert [dict(r.headers)["lark_record_part"] for r in h.publisher.calls[1]] == [b"1/2"]
    assert (await soon(h.deliver(event))).kind == "duplicate"
    assert len(h.publisher.calls) == 2


async def test_a_failed_single_record_event_is_published_whole_by_the_retry() -> None:
    h = Harness(PartialPublisher(lose={b"omm_4de32cf10a4358788ff4e09e37ebbf9b"}))
    event = inbound(ROOM_CREATED, event_id="one-1")
    assert await raises_unavailable(h.deliver(event)) == "broker_unavailable"
    assert (await soon(h.deliver(event))).kind == "published"
    assert len(h.publisher.acked) == 1 and "lark_record_part" not in dict(h.publisher.acked[0].headers)


async def test_wait_until_returns_at_the_deadline_and_never_cancels_the_awaited_future() -> None:
    from bridge.delivery import wait_until

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    started = loop.time()
    assert await wait_until(fut, started + 0.05) is False
    assert 0.04 <= loop.time() - started < 1.0 and not fut.cancelled()
    loop.call_later(0.01, fut.set_result, 7)
    assert await wait_until(fut, loop.time() + 5) is True and fut.result() == 7
    assert await wait_until(fut, loop.time() - 1) is True  # done already: no wait at all
    other: asyncio.Future[int] = loop.create_future()
    waiter = asyncio.ensure_future(wait_until(other, loop.time() + 5))
    await asyncio.sleep(0)
    waiter.cancel()  # the caller gives up (e.g. shutdown): the awaited future goes on
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not other.cancelled() and not other.done()


def _records(n: int) -> list[Record]:
    return [Record("t", f"room-{i}".encode(), b"{}", (), "x", "ev-1") for i in range(n)]


async def test_unwritten_publishes_only_what_the_ledger_does_not_know_written_and_marks_what_is_acked() -> None:
    ledger = DeliveryLedger(ttl_s=600, max_entries=100)
    records = _records(4)
    first = Unwritten.of(ledger, "ev-1", records)
    assert first.indices == (0, 1, 2, 3) and first.count == 4
    publisher = PartialPublisher(lose={b"room-1", b"room-3"})
    with pytest.raises(Unavailable):
        await first.publish(publisher, ledger)
    assert ledger.written("ev-1", 4) == 0b0101 and not ledger.delivered("ev-1")

    retry = Unwritten.of(ledger, "ev-1", records)  # e.g. the platform's retry, or a replay
    assert retry.indices == (1, 3) and [r.key for r in retry.records] == [b"room-1", b"room-3"]
    await retry.publish(publisher, ledger)
    assert publisher.calls[-1] == [records[1], records[3]] and ledger.delivered("ev-1")


async def test_unwritten_of_a_single_record_event_marks_it_delivered_only_when_acked() -> None:
    ledger = DeliveryLedger(ttl_s=600, max_entries=100)
    one = Unwritten.of(ledger, "ev-1", _records(1))
    with pytest.raises(Unavailable):
        await one.publish(FailingPublisher(), ledger)
    assert not ledger.delivered("ev-1") and ledger.written("ev-1", 1) == 0
    await one.publish(RecordingPublisher(), ledger)
    assert ledger.delivered("ev-1")


class Barrier:
    """A fake of the dedup feed's barrier: records each call; answers ``result`` after running
    ``meanwhile`` (what the feed would read while the caller waits)."""

    def __init__(self, result: bool, meanwhile: Any = None) -> None:
        self.result = result
        self.meanwhile = meanwhile
        self.calls: list[set[str]] = []

    async def __call__(self, topics: Any, deadline_s: float) -> bool:
        self.calls.append(set(topics))
        if self.meanwhile is not None:
            self.meanwhile()
        return self.result


def with_barrier(barrier: Barrier, publisher: Any | None = None) -> Harness:
    h = Harness(publisher or RecordingPublisher())
    h.delivery = KafkaDelivery(
        h.publisher, TOPICS, h.ledger, h.metrics, timeout_s=5.0, barrier=barrier, barrier_age_s=1.0
    )
    return h


def created_ms_before_arrival(ms: int) -> str:
    return str(RECEIVED_MS - ms)


async def test_a_first_attempt_is_published_without_the_barrier_and_stamped_with_its_arrival() -> None:
    barrier = Barrier(True)
    h = with_barrier(barrier)
    out = await h.deliver(inbound(create_time=created_ms_before_arrival(300)))
    assert out.kind == "published" and barrier.calls == [] and h.publisher.timestamps == [RECEIVED_MS]


async def test_a_retry_waits_for_the_feed_and_is_a_duplicate_when_it_learns_of_an_earlier_copy() -> None:
    h = with_barrier(Barrier(True))
    h.delivery._barrier = Barrier(True, meanwhile=lambda: h.ledger.mark_delivered("d-1", source="log"))
    out = await h.deliver(inbound(create_time=created_ms_before_arrival(15_000)))
    assert out.kind == "duplicate" and h.publisher.calls == []
    assert h.metric("bridge_dedup_barriers_total") == 1


async def test_a_retry_the_feed_has_nothing_of_is_published_once_the_barrier_passed() -> None:
    barrier = Barrier(True)
    h = with_barrier(barrier)
    out = await h.deliver(inbound(THIRD_PARTY_CREATED, ts="1700000000.5"))  # schema 1.0, long before
    assert out.kind == "published" and barrier.calls == [{"t.3p"}] and len(h.publisher.calls) == 1


async def test_a_retry_whose_barrier_cannot_pass_is_answered_503_and_not_published() -> None:
    h = with_barrier(Barrier(False))
    with pytest.raises(Unavailable) as caught:
        await h.deliver(inbound(create_time=created_ms_before_arrival(15_000)))
    assert caught.value.reason == "dedup_barrier" and h.publisher.calls == [] and not h.ledger.delivered("d-1")


@pytest.mark.parametrize("create_time", ["not-a-time", "123"])
async def test_an_unreadable_create_time_takes_the_barrier(create_time: str) -> None:
    barrier = Barrier(True)
    h = with_barrier(barrier)
    await h.deliver(inbound(create_time=create_time))
    assert len(barrier.calls) == 1
