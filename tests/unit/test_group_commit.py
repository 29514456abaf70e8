"""Group commit (bridge.publish.GroupCommit): deliveries share transactions, a transaction whose
acks are not all in by the earliest deadline is aborted, and a producer that cannot end its
transaction is reported broken. A fake transactional producer stands in for aiokafka's (the real
one is tested in tests/integration/test_transactions.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.errors import NotEnoughReplicasError, ProducerFenced
from aiokafka.structs import RecordMetadata, TopicPartition

from bridge.errors import PublishFailed
from bridge.metrics import Metrics
from bridge.normalize import Record
from bridge.publish import GroupCommit


class FakeTransactionalProducer:
    """The transactional calls GroupCommit makes. ``ack_delay_s``: how long each send's ack takes
    (None: never); ``send_error``: what each send's ack fails with; ``commit_error`` / ``hang``
    (``"commit"`` / ``"abort"``): how ending a transaction goes. ``ended`` lists each transaction
    as ``(outcome, records)``; ``open`` holds the records of the open one."""

    def __init__(self) -> None:
        self.ack_delay_s: float | None = 0.0
        self.send_error: BaseException | None = None
        self.commit_error: BaseException | None = None
        self.hang: str | None = None
        self.open: list[tuple[str, bytes]] | None = None
        self.ended: list[tuple[str, list[tuple[str, bytes]]]] = []
        self.offset = 0

    async def begin_transaction(self) -> None:
        assert self.open is None, "a producer has one open transaction at a time"
        self.open = []

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[RecordMetadata]:
        assert self.open is not None, "send outside a transaction"
        self.open.append((topic, value))
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[RecordMetadata] = loop.create_future()
        meta = RecordMetadata(topic, 0, TopicPartition(topic, 0), self.offset, None, 0, None)
        self.offset += 1
        if self.ack_delay_s is not None:

            def settle() -> None:
                if fut.done():
                    return
                if self.send_error is not None:
                    fut.set_exception(self.send_error)
                else:
                    fut.set_result(meta)

            loop.call_later(self.ack_delay_s, settle)
        return fut

    async def _end(self, outcome: str) -> None:
        if self.hang == outcome:
            await asyncio.Event().wait()
        assert self.open is not None
        self.ended.append((outcome, self.open))
        self.open = None

    async def commit_transaction(self) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        await self._end("commit")

    async def abort_transaction(self) -> None:
        await self._end("abort")


def rec(topic: str, value: bytes) -> Record:
    return Record(topic=topic, key=b"k", value=value, headers=(), lark_type="vc.room.created_v1", event_id="e")


@pytest.fixture
async def group() -> AsyncIterator[tuple[GroupCommit, FakeTransactionalProducer, list[BaseException], Metrics]]:
    producer = FakeTransactionalProducer()
    broken: list[BaseException] = []
    metrics = Metrics()
    g = GroupCommit(producer, metrics, on_broken=broken.append)
    g.start()
    yield g, producer, broken, metrics
    await g.close()


def deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


def count(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_deliveries_arriving_while_a_transaction_commits_share_the_next(group: Any) -> None:
    g, producer, broken, metrics = group
    producer.ack_delay_s = 0.05
    first = asyncio.create_task(g.publish([rec("t", b"0")], None, [], None, deadline(5)))
    await asyncio.sleep(0.01)  # the first transaction is open, waiting for its ack
    rest = [
        asyncio.create_task(g.publish([rec("t", b"%d" % i), rec("u", b"x")], None, [], None, deadline(5)))
        for i in range(1, 6)
    ]
    results = await asyncio.gather(first, *rest)
    assert [outcome for outcome, _ in producer.ended] == ["commit", "commit"]
    assert [len(records) for _, records in producer.ended] == [1, 10]
    assert [m.topic for m in results[1]] == ["t", "u"]  # each delivery gets its own records' metadata
    assert count(metrics, "bridge_kafka_transactions_total", outcome="committed") == 2
    assert count(metrics, "bridge_kafka_transaction_deliveries_sum") == 6
    assert not broken


async def test_acks_missing_at_the_earliest_deadline_abort_the_whole_transaction(group: Any) -> None:
    g, producer, broken, metrics = group
    producer.ack_delay_s = None  # a leader waiting on a follower that does not replicate
    early = asyncio.create_task(g.publish([rec("t", b"early")], None, [], None, deadline(0.1)))
    late = asyncio.create_task(g.publish([rec("t", b"late")], None, [], None, deadline(5)))
    for task in (early, late):
        with pytest.raises(PublishFailed) as failed:
            await task
        assert failed.value.acked == ()  # aborted: none of its records is readable
    assert producer.ended == [("abort", [("t", b"early"), ("t", b"late")])]
    assert count(metrics, "bridge_kafka_transactions_total", outcome="aborted") == 1
    assert count(metrics, "bridge_publish_failures_total", reason="KafkaTimeoutError") == 2
    assert not broken
    producer.ack_delay_s = 0.0  # the next transaction commits
    assert [m.offset for m in await g.publish([rec("t", b"next")], None, [], None, deadline(5))] == [2]


async def test_acks_in_after_the_deadline_still_abort(group: Any) -> None:
    g, producer, _, _ = group
    producer.ack_delay_s = 0.2
    with pytest.raises(PublishFailed):
        await g.publish([rec("t", b"x")], None, [], None, deadline(0.1))
    assert [outcome for outcome, _ in producer.ended] == ["abort"]


async def test_a_failed_send_aborts_and_names_the_error(group: Any) -> None:
    g, producer, broken, metrics = group
    producer.send_error = NotEnoughReplicasError()
    with pytest.raises(PublishFailed) as failed:
        await g.publish([rec("t", b"x")], None, [], None, deadline(5))
    assert isinstance(failed.value.__cause__, NotEnoughReplicasError)
    assert [outcome for outcome, _ in producer.ended] == ["abort"]
    assert count(metrics, "bridge_publish_failures_total", reason="NotEnoughReplicasError") == 1
    assert not broken


async def test_a_delivery_past_its_deadline_before_its_turn_is_not_sent(group: Any) -> None:
    g, producer, _, _ = group
    with pytest.raises(PublishFailed):
        await g.publish([rec("t", b"x")], None, [], None, deadline(-1))
    assert producer.ended == [] and producer.open is None


async def test_a_fenced_producer_is_reported_broken_and_refuses_what_follows(group: Any) -> None:
    g, producer, broken, _ = group
    producer.commit_error = ProducerFenced()
    with pytest.raises(PublishFailed):
        await g.publish([rec("t", b"x")], None, [], None, deadline(5))
    assert [type(e) for e in broken] == [ProducerFenced]
    with pytest.raises(PublishFailed):
        await g.publish([rec("t", b"y")], None, [], None, deadline(5))


async def test_an_abort_that_never_ends_breaks_the_producer(group: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    g, producer, broken, _ = group
    monkeypatch.setattr("bridge.publish.ABORT_TIMEOUT_S", 0.1)
    producer.ack_delay_s = None
    producer.hang = "abort"
    with pytest.raises(PublishFailed):
        await g.publish([rec("t", b"x")], None, [], None, deadline(0.05))
    assert [type(e).__name__ for e in broken] == ["KafkaTimeoutError"]


async def test_close_fails_the_deliveries_waiting(group: Any) -> None:
    g, producer, _, _ = group
    producer.ack_delay_s = None
    waiting = asyncio.create_task(g.publish([rec("t", b"x")], None, [], None, deadline(5)))
    await asyncio.sleep(0.01)
    await g.close()
    with pytest.raises(PublishFailed):
        await waiting


async def test_an_unforeseen_error_fails_the_transaction_and_breaks_the_producer(group: Any) -> None:
    g, producer, broken, _ = group

    async def bug() -> None:
        raise RuntimeError("a bug")

    producer.begin_transaction = bug
    with pytest.raises(PublishFailed):
        await g.publish([rec("t", b"x")], None, [], None, deadline(5))
    assert [type(e) for e in broken] == [RuntimeError]
    with pytest.raises(PublishFailed):  # refused, not left waiting for a runner that is gone
        await asyncio.wait_for(g.publish([rec("t", b"y")], None, [], None, deadline(5)), 1)
