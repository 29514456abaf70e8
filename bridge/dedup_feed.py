"""The dedup ledger's feed: rebuilt from the bridge's own topics at start, then kept in step with them.

Kafka already holds the truth of what was published: every record the bridge writes whose
event id is known carries it in the Kafka header ``lark_event_id``
(:data:`bridge.envelope.EVENT_ID_HEADER`). So the ledger needs no store of its own
(``BRIDGE_DEDUP_STORE=kafka``, the default):

* **Replay, at start.** A consumer without a group is assigned every partition of the bridge's
  topics (event topics and dead letters), seeks each to the first offset at or after
  ``now − BRIDGE_DEDUP_TTL_S`` (``offsets_for_times``) and reads up to the end offsets seen at
  start, marking each event id delivered (source ``log``). Until it is done the bridge is not
  ready (``/readyz`` 503 ``dedup_replay``) and events are answered 503, so that the platform
  retries rather than a duplicate slipping through. A replay still running after
  ``BRIDGE_DEDUP_REPLAY_TIMEOUT_S`` seconds makes the bridge ready anyway (a warning line and
  ``bridge_dedup_replay_incomplete_total``): serving with a partial ledger beats never serving.
* **Tail, while running.** The same consumer keeps reading, so that ids published by other
  replicas (or by this one before a restart) enter the ledger as soon as the broker hands them
  out; ``bridge_dedup_tail_lag_seconds`` measures the delay from each record's timestamp. The
  broker is asked to hold each fetch until :data:`FETCH_MIN_BYTES` are there or
  :data:`FETCH_MAX_WAIT_MS` passed, so that under steady traffic the tail does not fetch once per
  new record (the profiles are in BENCHMARKS.md): it costs a fetch per 64 KiB or per 100 ms, and
  an id reaches the ledger ≈ 100 ms later while every broker answers.

An event that fans out to several records (header ``lark_record_part: <index>/<count>``) counts
as delivered once all its records are read; until then the ledger keeps which are, so that a
retry after a partial failure (here or on another replica) publishes only the missing ones.

What remains: two replicas that receive the *same* delivery within one publish-plus-tail-lag
window of each other (≈ 100 ms while every broker answers, seconds under broker faults:
docs/delivery.md, "Dedup"; the platform's retries come 15 s apart, and a retry waits for the feed
at the barrier) can both publish it. Ids
replayed at start are marked at replay time, so they are remembered up to one TTL longer than
needed — never shorter. Partitions added while running are not followed until a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge import kafka
from bridge.dedup import LOG, DeliveryLedger
from bridge.envelope import EVENT_ID_HEADER, RECORD_PART_HEADER, parse_part
from bridge.lifecycle import TaskRunner
from bridge.logs import Outage
from bridge.metrics import Metrics
from bridge.normalize import Topics
from bridge.settings import Settings

log = logging.getLogger("bridge.dedup")

#: Longest wait for the consumer to start (connect and fetch metadata), in seconds.
START_TIMEOUT_S: Final = 10.0
#: Longest one poll of the consumer waits for records, in ms.
POLL_MS: Final = 200
#: The broker answers a fetch once this many bytes are there (64 KiB: ~50 events of the platform's
#: size) ...
FETCH_MIN_BYTES: Final = 65_536
#: ... or after this many ms: the longest an id published elsewhere waits to reach the ledger.
FETCH_MAX_WAIT_MS: Final = 100
#: Bytes one fetch may bring back in all (8 MiB; aiokafka's default: 50 MiB). The replay reads
#: every partition at once; this and the next bound what it buffers ahead of the ledger.
FETCH_MAX_BYTES: Final = 8 << 20
#: Bytes one fetch may bring back per partition (256 KiB; aiokafka's default: 1 MiB).
MAX_PARTITION_FETCH_BYTES: Final = 256 << 10
#: Most records one poll returns.
MAX_POLL_RECORDS: Final = 5000
#: A fetch (or offsets request) not answered in this many ms fails, and the consumer asks the
#: metadata again (aiokafka's default: 40 s): a feed fetching from a hung or moved leader catches
#: up within seconds of a new leader, not a minute later.
REQUEST_TIMEOUT_MS: Final = 5_000
#: How often the feed's lag per partition is sampled (``bridge_dedup_feed_lag_*``), seconds.
LAG_INTERVAL_S: Final = 5.0
#: Backoff between attempts to (re)connect the consumer, seconds: the first wait, and the longest.
CONNECT_BACKOFF_S: Final = (0.2, 5.0)


def build_consumer(settings: Settings) -> AIOKafkaConsumer:
    """Build the feed's consumer, ``read_committed``, with the fetch bounds above.

    Must be called with a running event loop.

    Args:
        settings: The Kafka connection settings.

    Returns:
        A consumer without a group, not started (:func:`bridge.kafka.build_consumer`, client id
        ``…-dedup``).
    """
    return kafka.build_consumer(
        settings,
        purpose="dedup",
        fetch_min_bytes=FETCH_MIN_BYTES,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        max_poll_records=MAX_POLL_RECORDS,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )


def build_watermark_consumer(settings: Settings) -> AIOKafkaConsumer:
    """Build the consumer that only asks the brokers for high watermarks (``read_uncommitted``
    end offsets; the feed's own, ``read_committed``, would answer the last stable offsets): it is
    assigned nothing and fetches nothing.

    Must be called with a running event loop.

    Returns:
        A consumer without a group, not started (client id ``…-dedup-offsets``).
    """
    return kafka.build_consumer(
        settings, purpose="dedup-offsets", isolation_level="read_uncommitted", request_timeout_ms=REQUEST_TIMEOUT_MS
    )


class LedgerFeed:
    """Replays the bridge's topics into a ledger at start, then tails them (module docstring).

    A background service: :meth:`start`, :meth:`close`, :meth:`not_ready_reason`. :meth:`start`
    never raises; connection failures are retried with backoff (:data:`CONNECT_BACKOFF_S`),
    resuming from the offsets already read. Dedup semantics: docs/delivery.md.

    Args:
        settings: ``dedup_ttl_s`` (the replay window, seconds), ``dedup_replay_timeout_s``
            (seconds), and the Kafka connection.
        topics: The topic map; every topic of it is read.
        ledger: The ledger the ids are marked in (source :data:`bridge.dedup.LOG`).
        metrics: Where the replay's duration and ids, the give-ups and the tail lag go.
        consumer_factory: Builds the consumer (tests inject faults). Default:
            :func:`build_consumer` of ``settings``.
        watermark_consumer_factory: Builds the consumer the high watermarks are asked of.
            Default: :func:`build_watermark_consumer` of ``settings``.
        clock: Returns the current time, unix seconds. Default :func:`time.time`.
        include_dead_letters: ``False`` reads the event topics only (the dead-letter replay, for
            which a dead letter is not a delivery). Default ``True``.

    Attributes:
        replayed: The replay reached the end offsets seen at start.
        ready: Replayed, or gave up waiting for it after ``BRIDGE_DEDUP_REPLAY_TIMEOUT_S``.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        ledger: DeliveryLedger,
        metrics: Metrics,
        *,
        consumer_factory: Callable[[], AIOKafkaConsumer] | None = None,
        watermark_consumer_factory: Callable[[], AIOKafkaConsumer] | None = None,
        clock: Callable[[], float] = time.time,
        include_dead_letters: bool = True,
    ) -> None:
        self._settings = settings
        self._topics = tuple(t for t in topics.all() if include_dead_letters or t != topics.dead_letter)
        self._ledger = ledger
        self._metrics = metrics
        self._factory = consumer_factory or (lambda: build_consumer(settings))
        self._watermark_factory = watermark_consumer_factory or (lambda: build_watermark_consumer(settings))
        self._watermarks: AIOKafkaConsumer | None = None  # started with the first connection
        self._clock = clock
        self._task = TaskRunner("bridge-dedup-feed")
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, once known
        self._replay_end: dict[TopicPartition, int] | None = None
        self._replay_started: float | None = None
        self._ids_replayed = 0
        self._give_up: asyncio.TimerHandle | None = None
        self._consumer: AIOKafkaConsumer | None = None  # the one reading now, if any
        self._outage = Outage(log, "dedup feed", "retries are answered 503 and other replicas' ids wait")
        self._progress = asyncio.Event()  # set (and replaced) after each fetch
        self._behind_since: dict[TopicPartition, float] = {}  # partitions behind at the last sample
        self.replayed = False  # the replay reached the end offsets seen at start
        self.ready = False  # replayed, or gave up waiting for it after the bound

    def not_ready_reason(self) -> str | None:
        """Say why the bridge may not serve yet.

        Returns:
            ``"dedup_replay"`` until :attr:`ready`, then None.
        """
        return None if self.ready else "dedup_replay"

    async def start(self) -> None:
        """Start reading in the background; the replay's bound starts at the first connection.

        Never raises.
        """
        self._task.spawn(self._run())

    async def close(self) -> None:
        """Stop reading: the consumer is stopped; nothing is committed anywhere."""
        if self._give_up is not None:
            self._give_up.cancel()
        await self._task.cancel()

    async def _run(self) -> None:
        """Connect, assign, read — until closed. A failed connection is retried with backoff
        (:data:`CONNECT_BACKOFF_S`); a consumer lost while reading is replaced after the first
        backoff step, resuming from the offsets already read. The watermark consumer is started
        once (its client reconnects by itself) and stopped on close."""
        try:
            while True:
                consumer = await self._connect()
                try:
                    await self._read(consumer)
                except Exception as exc:  # broker away or refusing: reconnect, resuming where we were
                    self._retry_log(exc, CONNECT_BACKOFF_S[0])
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(consumer.stop(), 5.0)
                await asyncio.sleep(CONNECT_BACKOFF_S[0])
        finally:
            watermarks, self._watermarks = self._watermarks, None
            if watermarks is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(watermarks.stop(), 5.0)

    def _retry_log(self, exc: BaseException, wait_s: float) -> None:
        self._outage.failed(type(exc).__name__)

    async def _connect(self) -> AIOKafkaConsumer:
        """A started consumer assigned every partition at the offsets to read next, retried with
        backoff (:data:`CONNECT_BACKOFF_S`) until one is."""

        async def start(consumer: AIOKafkaConsumer) -> None:
            if self._watermarks is None:
                watermarks = self._watermark_factory()
                try:
                    await asyncio.wait_for(watermarks.start(), START_TIMEOUT_S)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(watermarks.stop(), 5.0)
                    raise
                self._watermarks = watermarks
            await asyncio.wait_for(consumer.start(), START_TIMEOUT_S)
            await self._assign(consumer)

        return await kafka.started(self._factory, start, backoff_s=CONNECT_BACKOFF_S, on_retry=self._retry_log)

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        # Every partition of the bridge's topics, once each topic exists (the publisher creates
        # them) and has a leader: reading a partition created a moment ago otherwise logs
        # NotLeaderForPartition errors.
        tps = await kafka.partitions_with_leaders(consumer, self._topics)
        consumer.assign(tps)
        if self._replay_end is None:  # the first connection: find the replay's range
            since_ms = int((self._clock() - self._settings.dedup_ttl_s) * 1000)
            starts = await consumer.offsets_for_times(dict.fromkeys(tps, max(since_ms, 0)))
            ends = await consumer.end_offsets(tps)
            self._replay_end = {tp: ends[tp] for tp in tps}
            for tp in tps:
                found = starts.get(tp)
                self._positions[tp] = found.offset if found is not None else ends[tp]
            loop = asyncio.get_running_loop()
            self._replay_started = loop.time()
            self._give_up = loop.call_later(self._settings.dedup_replay_timeout_s, self._serve_anyway)
            log.info("dedup replay: %d partitions, %d records at most", len(tps), self._remaining(tps))
        for tp in tps:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])
            else:  # a partition that appeared since: from its start
                await consumer.seek_to_beginning(tp)

    def _remaining(self, tps: Iterable[TopicPartition]) -> int:
        assert self._replay_end is not None
        return sum(max(0, self._replay_end.get(tp, 0) - self._positions.get(tp, 0)) for tp in tps)

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        loop = asyncio.get_running_loop()
        await self._check_replay(consumer, loop.time())
        self._consumer = consumer
        self._outage.recovered()
        next_lag_s = loop.time()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_POLL_RECORDS)
                now_s = self._clock()
                for tp, messages in batches.items():
                    for message in messages:
                        self._mark(message, now_s)
                    if messages:
                        self._positions[tp] = messages[-1].offset + 1
                if not self.replayed:
                    await self._check_replay(consumer, loop.time())
                elif loop.time() >= next_lag_s:
                    next_lag_s = loop.time() + LAG_INTERVAL_S
                    await self._sample_lag(consumer, loop.time())
                self._progress.set()  # wake the barriers, which look again
                self._progress = asyncio.Event()
        finally:
            self._consumer = None

    async def caught_up(self, topics: Collection[str], deadline_s: float) -> bool:
        """The barrier before publishing a retry: wait until this feed has read every partition of
        ``topics`` up to the offsets the broker has as of now (their high watermarks, asked of the
        ``read_uncommitted`` watermark consumer), so that any record of an earlier attempt — on
        this replica or another — that is in the topics now is in the ledger (docs/delivery.md,
        "Dedup"). The feed reads ``read_committed``, so a transaction still open below those
        offsets is waited for until it commits (its records then count) or aborts
        (docs/delivery.md, "Transactions").

        Args:
            topics: the topics the event's records go to.
            deadline_s: the event loop's clock (``loop.time()``, seconds) by which to return.

        Returns:
            True once caught up; False when that could not be proven by ``deadline_s`` (no
            connected consumer, the broker not answering, or the feed behind), so that the caller
            answers 503 rather than risk a second copy. While the start's replay is unfinished:
            whether the feed serves anyway (``BRIDGE_DEDUP_REPLAY_TIMEOUT_S`` passed) — a partial
            ledger cannot be caught up, and serving beats losing the platform's retries.
        """
        if not self.replayed:  # serving anyway with a partial ledger (the replay's bound passed)
            return self.ready
        consumer, watermarks = self._consumer, self._watermarks
        if consumer is None or watermarks is None:
            return False
        tps = [tp for tp in self._positions if tp.topic in topics]
        try:
            async with asyncio.timeout_at(deadline_s):
                targets = await watermarks.end_offsets(tps)
                while await self._behind(consumer, tps, targets):
                    await self._progress.wait()
        except (TimeoutError, KafkaError, OSError, AssertionError):  # AssertionError: tp unassigned meanwhile
            return False
        return self._consumer is consumer

    async def _sample_lag(self, consumer: AIOKafkaConsumer, now: float) -> None:
        """Set ``bridge_dedup_feed_lag_records`` / ``_seconds`` for every partition read: the
        records between the feed's position and the high watermark, and since when (the loop's
        clock, seconds) it has been behind. A failed offsets request leaves the last values."""
        tps = list(self._positions)
        if self._watermarks is None:
            return
        try:
            ends = await asyncio.wait_for(self._watermarks.end_offsets(tps), REQUEST_TIMEOUT_MS / 1000)
        except (TimeoutError, KafkaError, OSError):
            return
        for tp in tps:
            behind = max(0, ends[tp] - max(self._positions.get(tp, 0), await consumer.position(tp)))
            since = self._behind_since.setdefault(tp, now) if behind else self._behind_since.pop(tp, None)
            labels = (tp.topic, str(tp.partition))
            self._metrics.dedup_feed_lag_records.labels(*labels).set(behind)
            self._metrics.dedup_feed_lag_seconds.labels(*labels).set(now - since if behind and since else 0.0)

    async def _behind(
        self, consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], targets: dict[TopicPartition, int]
    ) -> bool:
        """Some partition of ``tps`` is not read up to its target (by the offsets read, or by the
        consumer's position, which also counts records it skipped)."""
        for tp in tps:
            if self._positions.get(tp, 0) < targets[tp] and await consumer.position(tp) < targets[tp]:
                return True
        return False

    def _mark(self, message: Any, now_s: float) -> None:
        """Mark the event id of one record read back: delivered, or — for a record of an event
        that fans out (header ``lark_record_part``) — one more of its records written."""
        event_id = part = None
        for key, value in message.headers or ():
            if key == EVENT_ID_HEADER:
                event_id = value.decode("utf-8", "replace")
            elif key == RECORD_PART_HEADER:
                part = parse_part(value)
        if event_id is None:
            return
        if part is None:
            self._ledger.mark_delivered(event_id, source=LOG)
        else:
            self._ledger.mark_written(event_id, (part[0],), part[1], source=LOG)
        if self.replayed:
            self._metrics.dedup_tail_lag.observe(max(0.0, now_s - message.timestamp / 1000))
        else:
            self._ids_replayed += part is None or part[0] == 0  # one per event

    async def _check_replay(self, consumer: AIOKafkaConsumer, now: float) -> None:
        if self.replayed or self._replay_end is None or self._replay_started is None:
            return
        behind = []
        for tp, end in self._replay_end.items():
            # Offsets read so far; the consumer's position also counts what it skipped (e.g. a
            # record deleted by retention meanwhile).
            if self._positions.get(tp, 0) < end and await consumer.position(tp) < end:
                behind.append(tp)
        if not behind:
            elapsed = now - self._replay_started
            self.replayed = self.ready = True
            if self._give_up is not None:
                self._give_up.cancel()
            self._metrics.dedup_replay_seconds.set(elapsed)
            self._metrics.dedup_replay_ids.set(self._ids_replayed)
            log.info("dedup replay done: %d ids in %.1fs", self._ids_replayed, elapsed)

    def _serve_anyway(self) -> None:
        """The replay's bound passed (``BRIDGE_DEDUP_REPLAY_TIMEOUT_S``, counted from the first
        connection): ready with a partial ledger, which the feed goes on filling."""
        self._give_up = None
        if self.ready:
            return
        self.ready = True
        self._metrics.dedup_replay_incomplete.inc()
        log.warning(
            "dedup replay not done after %.0fs (%d ids so far): serving anyway; a redelivery of an "
            "id not read yet can be published again until the replay catches up",
            self._settings.dedup_replay_timeout_s,
            self._ids_replayed,
        )
