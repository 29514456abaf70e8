"""Deliver one inbound event: dedup → decode → normalize (or dead-letter) → publish → ack.

This is the narrow interface between an ingress and everything behind it: the ingress (HTTP
webhook, long connection) calls :meth:`EventSink.deliver` with an
:class:`~bridge.inbound.InboundEvent` and acknowledges the platform only when it returns. The
delivery knows nothing of HTTP. The contract (README "Delivery semantics"):

* returns only after every record of the event is acknowledged by the broker, or when the
  event id was already delivered (a duplicate: no second record);
* raises :class:`~bridge.errors.Unavailable` (503, the platform retries) when that could not
  happen within ``BRIDGE_ANSWER_DEADLINE_S``; a publish still running then goes on, and if
  the broker acks it later the id counts as delivered;
* a duplicate arriving while the first delivery is in flight waits for the first's outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog
from aiokafka.structs import RecordMetadata

from bridge import envelope as ev
from bridge.decode import decode, parse_create_time, parse_ts_seconds
from bridge.dedup import LOCAL, DeliveryLedger
from bridge.errors import BridgeError, DeadLetterCause, PublishFailed, Unavailable
from bridge.inbound import InboundEvent
from bridge.kafka import record_bytes
from bridge.logs import Throttle
from bridge.metrics import Metrics
from bridge.normalize import Record, Topics, dead_letter, normalize


@dataclass(slots=True)
class Outcome:
    """What became of one event: ``kind`` is ``published``, ``dead_lettered`` or ``duplicate``;
    ``reason`` the dead-letter reason; ``records`` lists ``(topic, partition, offset)`` of each
    record acknowledged by this delivery (after a partial failure, a retry publishes only the
    missing ones)."""

    kind: str
    reason: str | None = None
    records: list[tuple[str, int, int]] = field(default_factory=list)


class EventSink(Protocol):
    """Where an ingress hands an inbound event (a test may provide its own)."""

    async def deliver(self, event: InboundEvent, *, received_ms: int, deadline_s: float | None = None) -> Outcome:
        """Deliver or raise :class:`~bridge.errors.Unavailable`; see the module docstring.

        ``received_ms``: receive time, unix ms (a dead letter's ``received_at``). ``deadline_s``:
        the event loop's clock (``loop.time()``, seconds) by which to return; default: the
        sink's own timeout from now. The ingress passes its request's arrival + that timeout, so
        that reading the request and waiting for the broker share one deadline.
        """
        ...


class RecordPublisher(Protocol):
    """The publish stage as the delivery needs it (``bridge.publish.Publisher``)."""

    async def publish(
        self, records: Sequence[Record], *, timestamp_ms: int | None = None, deadline_s: float | None = None
    ) -> list[RecordMetadata]: ...


@dataclass(frozen=True, slots=True)
class Unwritten:
    """The records of one event that are not in the topics yet: all of them, or — after a
    partial failure (here, on another replica, or in an earlier replay) — only the missing ones.

    The fan-out protocol of the ledger (:class:`bridge.dedup.DeliveryLedger`): the ledger knows
    which of an event's ``count`` records are written (:meth:`~bridge.dedup.DeliveryLedger.written`,
    a bit mask); :meth:`of` keeps the others; :meth:`publish` sends them and marks what the
    broker acknowledged. The live delivery and the dead-letter replay both publish this way.

    Attributes:
        event_id: the ledger's key of the event (:meth:`bridge.inbound.InboundEvent.dedup_key`).
        count: how many records the event has in all.
        indices: the indices (in ``0 … count-1``) of the records still to write, ascending.
        records: those records, in the same order.
    """

    event_id: str
    count: int
    indices: tuple[int, ...]
    records: tuple[Record, ...]

    @classmethod
    def of(cls, ledger: DeliveryLedger, event_id: str, records: Sequence[Record]) -> Unwritten:
        """The records of ``event_id`` that ``ledger`` does not know written."""
        count = len(records)
        written = ledger.written(event_id, count)
        if not written:
            return cls(event_id, count, tuple(range(count)), tuple(records))
        indices = tuple(i for i in range(count) if not written >> i & 1)
        return cls(event_id, count, indices, tuple(records[i] for i in indices))

    async def publish(
        self,
        publisher: RecordPublisher,
        ledger: DeliveryLedger,
        *,
        timestamp_ms: int | None = None,
        deadline_s: float | None = None,
    ) -> list[RecordMetadata]:
        """Publish the records and mark in ``ledger`` what the broker acknowledged: all of them —
        the event is delivered; some of them (:class:`~bridge.errors.PublishFailed` ``acked``) —
        those indices, so that a retry publishes only the rest.

        Args:
            publisher: the publish stage.
            ledger: the dedup ledger.
            timestamp_ms: the records' Kafka timestamp, unix ms (default: the time of sending).
            deadline_s: the answer's deadline, the event loop's clock in seconds (with
                transactions, acks after it abort the transaction: ``Publisher.publish``).

        Returns:
            The broker's metadata of each record published, in order.

        Raises:
            Unavailable: from the publisher (``PublishFailed`` after a partial failure).
        """
        try:
            metas = await publisher.publish(self.records, timestamp_ms=timestamp_ms, deadline_s=deadline_s)
        except PublishFailed as exc:
            if exc.acked and self.count > 1:
                ledger.mark_written(self.event_id, [self.indices[i] for i in exc.acked], self.count)
            raise
        ledger.mark_delivered(self.event_id)
        return metas


def created_at_ms(event: InboundEvent) -> int | None:
    """The event's create time, unix ms (schema 2.0 ``header.create_time``, 1.0 ``ts``;
    docs/protocol.md §2), or None when absent or unreadable."""
    if event.create_time is None:
        return None
    try:
        if event.schema == "2.0":
            return parse_create_time(event.create_time)
        return parse_ts_seconds(event.create_time)
    except ValueError:
        return None


log = structlog.get_logger("bridge.delivery")
#: An event's records together may take this many times ``BRIDGE_KAFKA_MAX_RECORD_BYTES``.
MAX_EVENT_RECORDS_FACTOR: Final = 16


def type_label(lark_type: str) -> str:
    """The ``lark_type`` metric label: a type the bridge forwards, else ``other`` — a signed
    payload chooses its type freely, and each distinct label value is a new metric series."""
    return lark_type if lark_type in ev.LARK_TYPES else "other"


async def wait_until(fut: asyncio.Future[Any], deadline_s: float) -> bool:
    """Wait for ``fut`` until ``deadline_s`` (the event loop's clock, seconds) without ever
    cancelling it; True when it is done. What ``wait_for(shield(fut), …)`` does, with one
    future, one timer and one callback instead of three futures, two timers' worth of callbacks
    and (in Python 3.11) an extra wake-up per event. Cancelling the caller leaves ``fut`` running."""
    if fut.done():
        return True
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    fut.add_done_callback(wake)
    timer = loop.call_at(deadline_s, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        fut.remove_done_callback(wake)
    return fut.done()


#: A failure log line repeated by an outage is written at most once per this many seconds.
FAILURE_LOG_INTERVAL_S: Final = 10.0


class KafkaDelivery:
    """The production :class:`EventSink`: dedup window + decode/normalize + acked publish.

    ``timeout_s``: the longest a request waits (``BRIDGE_ANSWER_DEADLINE_S``), seconds.
    ``max_record_bytes``: the largest record sent (``BRIDGE_KAFKA_MAX_RECORD_BYTES``), bytes, as
    ``record_bytes`` measures it (the producer's own estimate by default); an event's records
    together may take :data:`MAX_EVENT_RECORDS_FACTOR` times that. ``ledger_ready``: false while
    the ledger is still being rebuilt (:class:`bridge.dedup_feed.LedgerFeed`); events are then
    answered 503 ``dedup_replay`` rather than risk a duplicate. ``barrier(topics, deadline_s)``:
    for an event the ledger does not know whose create time is more than ``barrier_age_s``
    seconds before its arrival (a retry, or a redelivery), waits until the ledger has read
    ``topics`` up to the broker's offsets as of now (:meth:`bridge.dedup_feed.LedgerFeed.caught_up`)
    and says whether it could; when it could not, the event is answered 503 ``dedup_barrier``
    rather than risk a second copy of an earlier attempt published elsewhere.
    """

    def __init__(
        self,
        publisher: RecordPublisher,
        topics: Topics,
        ledger: DeliveryLedger,
        metrics: Metrics,
        *,
        timeout_s: float,
        max_record_bytes: int = 1_048_576,
        record_bytes: Callable[[Record], int] = record_bytes,
        ledger_ready: Callable[[], bool] | None = None,
        close_timeout_s: float = 2.0,
        barrier: Callable[[Collection[str], float], Awaitable[bool]] | None = None,
        barrier_age_s: float = 1.0,
    ) -> None:
        self._publisher = publisher
        self._barrier = barrier
        self._barrier_age_ms = int(barrier_age_s * 1000)
        self._topics = topics
        self._ledger = ledger
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._max_record_bytes = max_record_bytes
        self._max_event_bytes = MAX_EVENT_RECORDS_FACTOR * max_record_bytes
        self._record_bytes = record_bytes
        self._ledger_ready = ledger_ready or (lambda: True)
        self._close_timeout_s = close_timeout_s
        metrics.dedup_entries.set_function(lambda: float(len(ledger)))  # read at scrape time
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failure_log = Throttle(FAILURE_LOG_INTERVAL_S)
        self._late_log = Throttle(FAILURE_LOG_INTERVAL_S)

    async def deliver(self, event: InboundEvent, *, received_ms: int, deadline_s: float | None = None) -> Outcome:
        """See :class:`EventSink`. Raises :class:`Unavailable` (``publish_timeout`` or
        ``broker_unavailable``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s if deadline_s is None else deadline_s
        if not self._ledger_ready():
            raise Unavailable("dedup_replay", retry_after_s=5)
        event_id = event.dedup_key()
        if self._ledger.delivered(event_id):
            return self._duplicate(event_id)
        records: list[Record] | None = None
        if self._barrier is not None and self._is_retry(event, received_ms):
            records, outcome = self._records_of(event, received_ms)
            self._metrics.dedup_barriers.inc()
            if not await self._barrier({r.topic for r in records}, deadline):
                raise Unavailable("dedup_barrier")
            if self._ledger.delivered(event_id):
                return self._duplicate(event_id)
        pending = self._ledger.in_flight(event_id)
        while pending is not None:
            if not await wait_until(pending, deadline):
                raise Unavailable("publish_timeout")
            if pending.result():
                return self._duplicate(event_id)
            pending = self._ledger.in_flight(event_id)

        if records is None:
            records, outcome = self._records_of(event, received_ms)
        unwritten = Unwritten.of(self._ledger, event_id, records)
        if loop.time() >= deadline:  # e.g. a slow body read used it up: no publish nobody awaits
            raise Unavailable("publish_timeout")
        self._ledger.begin(event_id)  # before any await: a concurrent duplicate sees it
        task = asyncio.create_task(self._publish(unwritten, outcome, received_ms, deadline))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not await wait_until(task, deadline):
            task.add_done_callback(self._log_late_failure)
            raise Unavailable("publish_timeout")
        try:
            metas = task.result()
        except BridgeError:
            raise
        except Exception:  # a bug or an unforeseen client error: the platform retries, we log it
            if (held := self._failure_log.admit()) is not None:
                log.exception("publish failed", more_since_last_line=held)
            raise Unavailable("publish_failed") from None
        outcome.records = [(m.topic, m.partition, m.offset) for m in metas]
        return outcome

    def _log_late_failure(self, task: asyncio.Task[Any]) -> None:
        """Done-callback of a publish that outlived its request: its failure has nobody to tell
        but the log (one line per :data:`FAILURE_LOG_INTERVAL_S` at most; the metric
        ``bridge_publish_failures_total`` counts each)."""
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if (held := self._late_log.admit()) is not None:
            reason = exc.reason if isinstance(exc, BridgeError) else type(exc).__name__
            log.warning("publish failed after its request timed out", reason=reason, more_since_last_line=held)

    def _records_of(self, event: InboundEvent, received_ms: int) -> tuple[list[Record], Outcome]:
        """The records of ``event`` — its envelopes, or one dead letter — each of at most
        ``max_record_bytes`` and together of at most ``16 × max_record_bytes``. Records over
        either bound (an event that no retry could ever publish) become a dead letter; a dead
        letter too large for a record does not carry the payload."""
        try:
            records = normalize(decode(event), self._topics)
        except DeadLetterCause as exc:
            failure = exc
        else:
            sizes = [self._record_bytes(r) for r in records]
            if max(sizes) <= self._max_record_bytes and sum(sizes) <= self._max_event_bytes:
                return records, Outcome("published")
            failure = DeadLetterCause(
                "record_too_large",
                f"record too large: {len(records)} record(s), the largest {max(sizes)} bytes, "
                f"{sum(sizes)} in all; the limits are {self._max_record_bytes} per record "
                f"(BRIDGE_KAFKA_MAX_RECORD_BYTES) and {self._max_event_bytes} per event",
                "$",
            )
        record = dead_letter(event, failure, received_ms=received_ms, topics=self._topics)
        if self._record_bytes(record) > self._max_record_bytes:
            record = dead_letter(event, failure, received_ms=received_ms, topics=self._topics, carry_payload=False)
        return [record], Outcome("dead_lettered", failure.reason)

    def _is_retry(self, event: InboundEvent, received_ms: int) -> bool:
        """The event was created more than ``barrier_age_s`` before it arrived — a retry or a
        redelivery, since the platform sends a first attempt at once — or its create time is
        unreadable (then the barrier is the safe side)."""
        created_ms = created_at_ms(event)
        return created_ms is None or received_ms - created_ms > self._barrier_age_ms

    def _duplicate(self, event_id: str) -> Outcome:
        self._metrics.duplicates_by(self._ledger.marked_by(event_id) or LOCAL).inc()
        return Outcome("duplicate")

    async def _publish(
        self, unwritten: Unwritten, outcome: Outcome, received_ms: int, deadline_s: float
    ) -> list[RecordMetadata]:
        """Publish what is ``unwritten`` of the event (:meth:`Unwritten.publish` marks the
        ledger); end its in-flight entry either way, waking the duplicates that wait for it."""
        delivered = False
        try:
            # timestamped with the request's arrival: the topics' message.timestamp.before.max.ms
            # makes the broker refuse it once it is too late to be this attempt's record
            metas = await unwritten.publish(
                self._publisher, self._ledger, timestamp_ms=received_ms, deadline_s=deadline_s
            )
            delivered = True
        finally:
            self._ledger.finish(unwritten.event_id, delivered)
        if outcome.kind == "dead_lettered":
            self._metrics.dead_letters_by(outcome.reason or "").inc()
        for r in unwritten.records:
            self._metrics.published_by(type_label(r.lark_type), r.topic).inc()
        return metas

    async def start(self) -> None:
        """Nothing to start: the delivery works within its callers' requests."""

    async def close(self) -> None:
        """:meth:`drain` for at most ``close_timeout_s`` seconds: what the broker acks late still
        marks the ledger before the producer goes."""
        await self.drain(self._close_timeout_s)

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s`` seconds) for publishes whose requests already timed out."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
