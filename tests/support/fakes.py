"""Fakes for the edges of the delivery: the Kafka publish stage (the ``RecordPublisher``
protocol of :mod:`bridge.delivery`) and the sink an ingress hands events to (``EventSink``).

Publishers:

* :class:`RecordingPublisher` acks at once, with offsets increasing per topic, and keeps what it got.
* :class:`FailingPublisher` raises (``Unavailable("broker_unavailable")`` or a given exception)
  on its first ``times`` calls, then acks like a recording publisher.
* :class:`PartialPublisher` acks some records of its first call and loses the others
  (``PublishFailed`` with the acked indices), as a broker losing one partition does.
* :class:`GatedPublisher` holds every publish until the test releases or fails it (or for a
  fixed delay): a publish that outlives the request's timeout.

Sink: :class:`RecordingSink` records events and answers a chosen ``Outcome``, raises, or holds
deliveries until released (an ingress's tests without any delivery behind it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka.structs import RecordMetadata, TopicPartition

from bridge.delivery import Outcome
from bridge.errors import PublishFailed, Unavailable
from bridge.inbound import InboundEvent
from bridge.normalize import Record


class RecordingPublisher:
    """Acks every record at once on ``partition``; offsets count from 0 per topic.

    ``calls``: the records of each ``publish`` call, in order; ``acked``: every acked record.
    """

    def __init__(self, *, partition: int = 0) -> None:
        self.partition = partition
        self.calls: list[list[Record]] = []
        self.timestamps: list[int | None] = []  # the timestamp_ms of each call
        self.acked: list[Record] = []
        self._next: dict[str, int] = {}

    async def publish(
        self, records: Sequence[Record], *, timestamp_ms: int | None = None, deadline_s: float | None = None
    ) -> list[RecordMetadata]:
        self.calls.append(list(records))
        self.timestamps.append(timestamp_ms)
        return self.ack(records)

    def ack(self, records: Sequence[Record]) -> list[RecordMetadata]:
        """The broker's metadata for ``records``, as if acked now (offsets advance)."""
        metas = []
        for r in records:
            offset = self._next.get(r.topic, 0)
            self._next[r.topic] = offset + 1
            metas.append(
                RecordMetadata(
                    topic=r.topic,
                    partition=self.partition,
                    topic_partition=TopicPartition(r.topic, self.partition),
                    offset=offset,
                    timestamp=None,
                    timestamp_type=0,
                    log_start_offset=None,
                )
            )
        self.acked.extend(records)
        return metas


class FailingPublisher(RecordingPublisher):
    """Raises ``error`` (default ``Unavailable("broker_unavailable")``) on its first ``times``
    calls (default: every call), then acks. ``calls`` holds every attempt; ``acked`` what was acked."""

    def __init__(self, error: BaseException | None = None, *, times: int | None = None) -> None:
        super().__init__()
        self.error = error or Unavailable("broker_unavailable")
        self.times = times

    async def publish(
        self, records: Sequence[Record], *, timestamp_ms: int | None = None, deadline_s: float | None = None
    ) -> list[RecordMetadata]:
        self.calls.append(list(records))
        self.timestamps.append(timestamp_ms)
        if self.times is None or len(self.calls) <= self.times:
            raise self.error
        return self.ack(records)


class PartialPublisher(RecordingPublisher):
    """On its first call, acks the records whose keys are not in ``lose`` and raises
    :class:`PublishFailed` naming them; later calls ack everything."""

    def __init__(self, lose: set[bytes | None]) -> None:
        super().__init__()
        self.lose = lose

    async def publish(
        self, records: Sequence[Record], *, timestamp_ms: int | None = None, deadline_s: float | None = None
    ) -> list[RecordMetadata]:
        self.calls.append(list(records))
        self.timestamps.append(timestamp_ms)
        if len(self.calls) > 1:
            return self.ack(records)
        kept = [i for i, r in enumerate(records) if r.key not in self.lose]
        self.ack([records[i] for i in kept])
        raise PublishFailed(tuple(kept))


class GatedPublisher(RecordingPublisher):
    """Holds every publish at a gate until the test decides.

    * :meth:`release` acks the publishes waiting now and opens the gate (later ones ack at once);
    * :meth:`fail` makes the publishes waiting now raise; later ones wait again;
    * ``delay_s``: instead of a gate, every publish acks after that many seconds.

    ``entered`` is set when a publish starts waiting (cleared by :meth:`release` and :meth:`fail`);
    ``waiting`` counts the publishes held now.
    """

    def __init__(self, *, delay_s: float | None = None) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.entered = asyncio.Event()
        self._open = False
        self._held: list[asyncio.Future[None]] = []

    @property
    def waiting(self) -> int:
        return len(self._held)

    async def publish(
        self, records: Sequence[Record], *, timestamp_ms: int | None = None, deadline_s: float | None = None
    ) -> list[RecordMetadata]:
        self.calls.append(list(records))
        self.timestamps.append(timestamp_ms)
        if self.delay_s is not None:
            self.entered.set()
            await asyncio.sleep(self.delay_s)
        elif not self._open:
            held = asyncio.get_running_loop().create_future()
            self._held.append(held)
            self.entered.set()
            try:
                await held  # raises what fail() set
            finally:
                if held in self._held:
                    self._held.remove(held)
        return self.ack(records)

    def release(self) -> None:
        """Ack every publish held now, and let later ones through at once."""
        self._open = True
        for held in self._held:
            if not held.done():
                held.set_result(None)
        self._held.clear()
        self.entered.clear()

    def fail(self, error: BaseException | None = None) -> None:
        """Make every publish held now raise ``error`` (default ``Unavailable("broker_unavailable")``)."""
        for held in self._held:
            if not held.done():
                held.set_exception(error or Unavailable("broker_unavailable"))
        self._held.clear()
        self.entered.clear()


class RecordingSink:
    """An ``EventSink`` that records what reaches the next stage; can be told what to answer, to
    fail, or to hold deliveries until the test releases them.

    * ``outcome``: what a delivery returns (default ``published`` with one record);
    * ``fail``: raised instead (e.g. ``Unavailable("broker_unavailable")``);
    * ``delay_s``: every delivery first waits that long;
    * ``held``: while true, a delivery that starts waits until :meth:`release` (one released
      later returns what ``fail`` / ``outcome`` say then); ``entered`` is set when one starts
      waiting, ``waiting`` counts them.

    ``received``: events delivered (not failed); ``deadlines`` / ``received_ms``: of every call;
    ``returned``: ``(event_id, loop time)`` as each call returned or raised, in that order.
    """

    def __init__(self, outcome: Outcome | None = None) -> None:
        self.received: list[InboundEvent] = []
        self.deadlines: list[float | None] = []  # the deadline_s of each call
        self.received_ms: list[int] = []
        self.fail: Exception | None = None
        self.delay_s = 0.0
        self.outcome = outcome or Outcome("published", records=[("t", 0, 1)])
        self.held = False
        self.entered = asyncio.Event()
        self.returned: list[tuple[str | None, float]] = []
        self._held: list[asyncio.Future[None]] = []

    @property
    def waiting(self) -> int:
        return len(self._held)

    async def deliver(self, event: InboundEvent, *, received_ms: int, deadline_s: float | None = None) -> Outcome:
        self.deadlines.append(deadline_s)
        self.received_ms.append(received_ms)
        loop = asyncio.get_running_loop()
        try:
            if self.held:
                gate = loop.create_future()
                self._held.append(gate)
                self.entered.set()
                await gate
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail is not None:
                raise self.fail
            self.received.append(event)
            return self.outcome
        finally:
            self.returned.append((event.event_id, loop.time()))

    def release(self) -> None:
        """Let every delivery held now go on (``held`` itself is left as it is)."""
        for gate in self._held:
            if not gate.done():
                gate.set_result(None)
        self._held.clear()
        self.entered.clear()
