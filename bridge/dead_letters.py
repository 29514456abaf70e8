"""Dead letters: read them back, and replay them through today's decode and normalize.

``python -m bridge dead-letters list|replay`` (docs/operations.md, "Dead letters"). A dead-letter record
(``bridge.envelope.DeadLetterEnvelope``) carries the authenticated payload with its token fields
redacted; when a newer bridge can decode what an older one could not (a newly modelled event
type, a relaxed field), :func:`replay` runs each stored payload through the same
:func:`bridge.decode.decode` and :func:`bridge.normalize.normalize` as a live event and publishes
the records to their event topics with the normal envelope and key, plus the Kafka header
:data:`REPLAYED_HEADER` (``<dead-letter topic>/<partition>/<offset>``) that says where it came from.

Idempotent like the bridge itself: before publishing, the delivery ledger (``bridge.dedup``) is
rebuilt by :class:`bridge.dedup_feed.LedgerFeed` from the *event* topics (not the dead-letter
topic, where the dead letter itself counts as the id's delivery), from the oldest selected dead
letter on; an id already there is not published again — so replaying twice, or replaying an event
the platform later redelivered successfully, publishes nothing twice. A fan-out written in part is
completed with only its missing records. What still fails stays in the dead-letter topic (nothing
is deleted or rewritten) and is reported.

Content modes: dead letters are read in either CloudEvents content mode, record by record (a
topic's ``BRIDGE_CLOUDEVENTS_MODE`` may have changed while it held records), with or without a
schema registry's wire prefix; replayed records take the mode their target topics have now, as a
live event's would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge import envelope as ev
from bridge import kafka
from bridge.decode import decode
from bridge.dedup import DeliveryLedger
from bridge.dedup_feed import LedgerFeed
from bridge.delivery import Unwritten
from bridge.errors import DeadLetterCause, Unavailable
from bridge.inbound import UnreadableJSON, read_inbound
from bridge.metrics import Metrics
from bridge.normalize import Record, Topics, normalize
from bridge.publish import Publisher
from bridge.registry import MAGIC_BYTE, WIRE_PREFIX_BYTES, SchemaIds
from bridge.settings import Settings

#: Kafka header of a replayed record: the dead letter it came from, ``<topic>/<partition>/<offset>``.
REPLAYED_HEADER: Final = ev.REPLAYED_HEADER
#: Longest wait for the broker (reading, the ledger's rebuild, the producer), in seconds.
BROKER_TIMEOUT_S: Final = 60.0
_POLL_MS: Final = 500


class BrokerUnavailable(Exception):
    """The broker could not be reached, refused a publish, or did not answer within :data:`BROKER_TIMEOUT_S`.

    The message says what was being done (connecting, reading, rebuilding the ledger, publishing).
    """


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-letter record as read back: where it is and what it says.

    What it says is the envelope's ``data`` (:class:`bridge.envelope.DeadLetterData`) and its
    ``tenantkey``.

    Attributes:
        topic: The dead-letter topic.
        partition: The record's partition.
        offset: The record's offset.
        timestamp_ms: The record's timestamp, unix ms.
        reason: Why it is a dead letter (:data:`bridge.envelope.DeadLetterReason`).
        error: What failed, with its JSON path.
        path: The JSON path of the failing field, when known.
        lark_type: The Lark event type, when known.
        event_id: Lark's event id (``data.lark_event_id``), when known.
        tenant_key: The tenant (the envelope's ``tenantkey``), when known.
        received_at: When the bridge received the event (RFC 3339, UTC, ms).
        payload: The Lark payload, token fields redacted; ``{}`` when it was not carried (too
            large, or unreadable).
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    reason: str
    error: str
    path: str | None
    lark_type: str | None
    event_id: str | None
    tenant_key: str | None
    received_at: str
    payload: dict[str, Any]

    @property
    def where(self) -> str:
        """Say where the record is: ``<topic>/<partition>/<offset>``, the value of :data:`REPLAYED_HEADER`."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    def as_json(self) -> dict[str, Any]:
        """Render the fields as a JSON object, for ``dead-letters list``.

        Returns:
            Every field but ``payload`` (it may be large), plus ``payload_carried`` (bool).
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "payload"}
        out["payload_carried"] = bool(self.payload)
        return out


@dataclass(frozen=True)
class Selection:
    """Which dead letters to read.

    Attributes:
        reasons: The reasons admitted; empty (the default): any.
        types: The Lark types admitted; empty (the default): any.
        since_ms: The earliest record timestamp admitted, unix ms; None (the default): no bound.
        until_ms: The record timestamp admitted up to, unix ms, exclusive; None (the default):
            no bound.
        offsets: Per partition an offset range, ``{partition: (start, end exclusive or None)}``;
            partitions not named are read whole when ``offsets`` is empty (the default), skipped
            otherwise.
    """

    reasons: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    offsets: dict[int, tuple[int, int | None]] = field(default_factory=dict)

    def admits(self, dl: DeadLetter) -> bool:
        """Tell whether a dead letter passes the reason, type and time filters.

        Args:
            dl: The dead letter read back.

        Returns:
            True when it passes all three (the offsets are applied while reading).
        """
        return (
            (not self.reasons or dl.reason in self.reasons)
            and (not self.types or (dl.lark_type or "") in self.types)
            and (self.since_ms is None or dl.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or dl.timestamp_ms < self.until_ms)
        )


_envelope = msgspec.json.Decoder(ev.DeadLetterEnvelope)


async def read(
    settings: Settings,
    selection: Selection,
    *,
    consumer_factory: Callable[[], AIOKafkaConsumer] | None = None,
) -> AsyncIterator[DeadLetter]:
    """Read back the dead letters of ``BRIDGE_TOPIC_DEAD_LETTER`` that a selection admits.

    Reads up to the end offsets at the call, in partition order. Records of either CloudEvents
    content mode are read (the topic's mode may have changed over time: each record's
    ``content-type`` header says which it is), framed by a schema registry or not. A record that
    is not a dead-letter envelope is skipped.

    Args:
        settings: The Kafka connection and ``topic_dead_letter``.
        selection: Which dead letters to yield.
        consumer_factory: Builds the consumer (tests). Default: a consumer without a group
            (:func:`bridge.kafka.build_consumer`, purpose ``dead-letters``).

    Yields:
        Each admitted :class:`DeadLetter`.

    Raises:
        BrokerUnavailable: The broker could not be reached within :data:`BROKER_TIMEOUT_S`, or
            no record arrived for that long while reading.
    """
    topic = settings.topic_dead_letter
    consumer = (consumer_factory or (lambda: kafka.build_consumer(settings, purpose="dead-letters")))()
    try:
        try:
            await asyncio.wait_for(consumer.start(), BROKER_TIMEOUT_S)
            await asyncio.wait_for(kafka.refresh_metadata(consumer), BROKER_TIMEOUT_S)
        except Exception as exc:  # unreachable, refusing, timing out: all the same to the caller
            raise BrokerUnavailable(f"{type(exc).__name__} while connecting to the broker") from None
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if selection.offsets:
            partitions = [p for p in partitions if p in selection.offsets]
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = dict.fromkeys(tps, 0)
        if selection.since_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, selection.since_ms))
            begins = {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}
        for tp in tps:
            start, end = selection.offsets.get(tp.partition, (0, None))
            begins[tp] = max(begins[tp], start)
            if end is not None:
                ends[tp] = min(ends[tp], end)
            consumer.seek(tp, begins[tp])
        remaining = {tp for tp in tps if begins[tp] < ends[tp]}
        deadline = time.monotonic() + BROKER_TIMEOUT_S
        while remaining:
            if time.monotonic() > deadline:
                raise BrokerUnavailable("reading the dead-letter topic timed out")
            batches = await consumer.getmany(*remaining, timeout_ms=_POLL_MS)
            for tp, messages in sorted(batches.items(), key=lambda kv: kv[0].partition):
                deadline = time.monotonic() + BROKER_TIMEOUT_S
                for m in messages:
                    if m.offset >= ends[tp]:
                        break
                    dl = _dead_letter(topic, m)
                    if dl is not None and selection.admits(dl):
                        yield dl
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):  # records deleted meanwhile (retention): the position says
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


def _dead_letter(topic: str, m: Any) -> DeadLetter | None:
    """The dead letter a consumed record holds, in either CloudEvents content mode and with or
    without a schema registry's wire prefix; None when it is not a dead-letter envelope."""
    value, headers = m.value, m.headers or ()
    if not isinstance(value, bytes):
        return None
    if value[:1] == MAGIC_BYTE:  # framed by a registry (JSON text never starts with a NUL)
        value = value[WIRE_PREFIX_BYTES:]
    try:
        if not ev.is_structured(headers) and any(n.lower().startswith(ev.BINARY_HEADER_PREFIX) for n, _ in headers):
            value = ev.structured_from_binary(headers, value)
        env = _envelope.decode(value)
    except (ValueError, TypeError):  # msgspec.DecodeError is a ValueError
        return None
    d = env.data
    return DeadLetter(
        topic=topic,
        partition=m.partition,
        offset=m.offset,
        timestamp_ms=m.timestamp,
        reason=d.reason,
        error=d.error,
        path=d.path,
        lark_type=d.lark_type,
        event_id=d.lark_event_id,
        tenant_key=env.tenantkey,
        received_at=d.received_at,
        payload=d.payload,
    )


def records_of(dl: DeadLetter, topics: Topics, max_record_bytes: int) -> list[Record]:
    """Make the records today's bridge makes of a dead letter's payload.

    The payload runs through the same :func:`bridge.inbound.read_inbound`,
    :func:`bridge.decode.decode` and :func:`bridge.normalize.normalize` as a live event.

    Args:
        dl: The dead letter read back.
        topics: The topic map.
        max_record_bytes: The largest record allowed, in bytes as the producer measures them
            (:func:`bridge.kafka.record_bytes`): the limit of the live bridge,
            ``BRIDGE_KAFKA_MAX_RECORD_BYTES``.

    Returns:
        The records, each with :data:`REPLAYED_HEADER` added.

    Raises:
        DeadLetterCause: It still cannot be decoded or normalized: ``invalid_event`` ("payload
            not carried by the dead letter") when the dead letter holds no payload;
            ``record_too_large`` when a record would pass ``max_record_bytes``; otherwise what
            decode and normalize raise.
    """
    if not dl.payload:
        raise DeadLetterCause("invalid_event", "payload not carried by the dead letter", "$")
    try:
        inbound = read_inbound(msgspec.json.encode(dl.payload))
    except UnreadableJSON as exc:
        raise DeadLetterCause("invalid_event", f"not readable JSON ({exc})", "$") from None
    records = normalize(decode(inbound), topics)
    largest = max(kafka.record_bytes(r) for r in records)
    if largest > max_record_bytes:
        raise DeadLetterCause("record_too_large", f"a record of {largest} bytes (limit {max_record_bytes})", "$")
    header = (REPLAYED_HEADER, dl.where.encode("utf-8"))
    return [dataclasses.replace(r, headers=(*r.headers, header)) for r in records]


@dataclass
class ReplayOutcome:
    """What :func:`replay` did with one dead letter.

    Attributes:
        dead_letter: The dead letter.
        kind: ``replayed``, ``would_replay`` (``--dry-run``), ``already_delivered`` or
            ``still_failing``.
        records: How many records were published (or would be): those of the event not already
            written. Default 0.
        reason: Today's failure reason when still failing, else None.
        error: Today's failure when still failing, else None.
    """

    dead_letter: DeadLetter
    kind: str
    records: int = 0
    reason: str | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Render the outcome as one JSON object, for ``dead-letters replay``.

        Returns:
            The dead letter's fields (:meth:`DeadLetter.as_json`) plus ``outcome``, ``records``,
            ``failure_reason`` and ``failure``.
        """
        return {
            **self.dead_letter.as_json(),
            "outcome": self.kind,
            "records": self.records,
            "failure_reason": self.reason,
            "failure": self.error,
        }


async def replay(
    settings: Settings,
    selection: Selection,
    *,
    dry_run: bool = False,
    progress: Callable[[Iterable[DeadLetter], int], Iterable[DeadLetter]] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[ReplayOutcome]:
    """Replay the dead letters a selection admits (the module docstring says how).

    Args:
        settings: The bridge's settings (Kafka, topics, schema registry, record size limit).
        selection: Which dead letters to replay.
        dry_run: Publish nothing; report ``would_replay`` instead. Default False.
        progress: ``progress(items, total)`` wraps the loop (a progress bar). Default: none.
        clock: Returns the current time, unix seconds; sets the ledger's window (from the oldest
            selected dead letter on). Default :func:`time.time`.

    Returns:
        One :class:`ReplayOutcome` per dead letter, in the order read; empty when none is
        selected.

    Raises:
        BrokerUnavailable: The broker cannot be reached, refuses a publish, or rebuilding the
            ledger or connecting the producer takes longer than :data:`BROKER_TIMEOUT_S`.
    """
    letters = [dl async for dl in read(settings, selection)]
    if not letters:
        return []
    topics = Topics.from_settings(settings)
    # The ledger from the oldest selected dead letter on: a replay's records are newer than it.
    window_s = max(60, int(clock() - min(dl.timestamp_ms for dl in letters) / 1000) + 60)
    ledger = DeliveryLedger(window_s, max_entries=1 << 40)
    feed_settings = settings.model_copy(update={"dedup_ttl_s": window_s})
    metrics = Metrics()
    feed = LedgerFeed(feed_settings, topics, ledger, metrics, include_dead_letters=False)
    publisher: Publisher | None = None
    schema_ids: SchemaIds | None = None
    await feed.start()
    try:
        await _until(lambda: feed.replayed, "rebuilding the delivery ledger")
        if not dry_run:
            if settings.schema_registry_url is not None:
                schema_ids = SchemaIds(settings, topics, metrics)
                await schema_ids.start()
            ids = schema_ids
            publisher = Publisher(
                settings,
                topics,
                metrics,
                value_prefixes=(lambda: ids.prefixes) if ids is not None else None,
            )
            await publisher.start()
            ready = publisher
            await _until(
                lambda: ready.not_ready_reason() is None and (ids is None or ids.prefixes is not None),
                "connecting the producer",
            )
        max_bytes = settings.kafka_max_record_bytes - (WIRE_PREFIX_BYTES if schema_ids is not None else 0)
        outcomes = []
        items: Iterable[DeadLetter] = progress(letters, len(letters)) if progress is not None else letters
        for dl in items:
            outcomes.append(await _replay_one(dl, topics, ledger, publisher, max_bytes))
        return outcomes
    finally:
        await feed.close()
        if publisher is not None:
            await publisher.close()
        if schema_ids is not None:
            await schema_ids.close()


async def _replay_one(
    dl: DeadLetter, topics: Topics, ledger: DeliveryLedger, publisher: Publisher | None, max_bytes: int
) -> ReplayOutcome:
    try:
        records = records_of(dl, topics, max_bytes)
    except DeadLetterCause as failure:
        return ReplayOutcome(dl, "still_failing", reason=failure.reason, error=failure.error)
    event_id = records[0].event_id
    assert event_id is not None  # a decoded event has one
    if ledger.delivered(event_id):
        return ReplayOutcome(dl, "already_delivered")
    unwritten = Unwritten.of(ledger, event_id, records)
    if publisher is None:
        return ReplayOutcome(dl, "would_replay", records=len(unwritten.records))
    try:
        await unwritten.publish(publisher, ledger)
    except Unavailable as exc:  # PublishFailed too: the records acked are marked written
        raise BrokerUnavailable(f"publishing failed: {exc.reason}") from None
    return ReplayOutcome(dl, "replayed", records=len(unwritten.records))


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BROKER_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"{what} took longer than {BROKER_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)
