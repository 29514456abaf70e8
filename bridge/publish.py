"""Publish stage: the one aiokafka producer of the process, its life, and acked sends.

* Idempotent producer (``enable_idempotence=True`` ⇒ ``acks=all``), created by a supervisor task
  started with the app (aiohttp cleanup context) so that a broker that is down at start does not
  stop the bridge: until the producer is connected, :meth:`Publisher.publish` raises
  :class:`~bridge.errors.Unavailable` (503) and the supervisor keeps retrying.
* Missing topics are created at start (``BRIDGE_KAFKA_CREATE_TOPICS``).
* A producer that hits a fatal idempotence error (``OutOfOrderSequenceNumber`` and friends, which
  aiokafka does not recover from after a broker outage) is replaced by a new one.
* Readiness (``/readyz``): producer connected and every topic known to the broker's metadata,
  re-checked every :data:`PROBE_INTERVAL_S` seconds.
* With ``BRIDGE_KAFKA_TRANSACTIONS``, the producer is transactional and every publish goes through
  :class:`GroupCommit`: the deliveries that arrive while one transaction commits share the next
  (docs/delivery.md, "Transactions").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    DuplicateSequenceNumber,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.structs import RecordMetadata

from bridge import kafka
from bridge.errors import PublishFailed, Unavailable
from bridge.lifecycle import TaskRunner
from bridge.logs import Outage
from bridge.metrics import Metrics
from bridge.normalize import Record, Topics
from bridge.settings import DedupStore, Settings
from bridge.topic_check import Finding, check_topics
from bridge.tracing import Tracing, set_acked

log = logging.getLogger("bridge.publish")

PROBE_INTERVAL_S: Final = 1.0
PROBE_TIMEOUT_S: Final = 2.0
#: How often the topics' settings are described and checked (:mod:`bridge.topic_check`), seconds.
TOPIC_CHECK_INTERVAL_S: Final = 60.0
#: Backoff between attempts to connect a producer, seconds: the first wait, and the longest.
CONNECT_BACKOFF_S: Final = (0.2, 5.0)
#: The longest an abort may take, seconds (its sends in flight end within the transactional
#: request timeout, then the coordinator answers): past it the producer is replaced, and what it
#: left open is aborted by the replacement (same ``transactional.id``) or by the coordinator.
ABORT_TIMEOUT_S: Final = 2 * kafka.TRANSACTIONAL_REQUEST_TIMEOUT_MS / 1000
#: The longest a commit may take once asked for, seconds; past it the outcome is unknown, the
#: deliveries are answered 503 and the producer is replaced (a retry's barrier waits for the
#: outcome: docs/delivery.md, "Transactions").
COMMIT_TIMEOUT_S: Final = ABORT_TIMEOUT_S
#: The ``bridge_producer_replacements_total`` reason of a producer whose transaction could not be
#: ended within its bound.
TRANSACTION_STUCK: Final = "TransactionStuck"
_FATAL: Final = (
    OutOfOrderSequenceNumber,
    DuplicateSequenceNumber,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
    UnknownProducerId,
)


class Publisher:
    """Owns the producer; :meth:`publish` sends an event's records and awaits every broker ack.

    A background service (:class:`bridge.lifecycle.BackgroundService`): :meth:`start` returns at
    once (the producer connects in the background, retried with backoff), :meth:`close` flushes
    and stops it, :meth:`not_ready_reason` says why it cannot publish yet.

    Args:
        settings: the Kafka connection, ``BRIDGE_KAFKA_CREATE_TOPICS`` and the topic settings.
        topics: the topics that must exist before the publisher is ready.
        metrics: ``bridge_producer_*``, ``bridge_publish_*`` and ``bridge_kafka_ack_seconds``.
        producer_factory: makes each (re)placement producer; default
            :func:`bridge.kafka.build_producer` (tests pass one that injects faults).
        value_prefixes: with a schema registry, returns ``{topic: wire prefix}`` once the
            schema ids are known (None before: publishing then raises :class:`Unavailable`
            ``schema_ids_unknown``); each value is sent as prefix + value (:mod:`bridge.registry`).
        tracing: each publish is a PRODUCER span whose W3C trace context goes into every
            record's headers (:mod:`bridge.tracing`; off unless configured).
        close_timeout_s: the longest :meth:`close` waits for the producer's flush, seconds.
        topic_check_interval_s: how often the topics' settings are checked, seconds (default
            :data:`TOPIC_CHECK_INTERVAL_S`).
    """

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        metrics: Metrics,
        *,
        producer_factory: Callable[[], AIOKafkaProducer] | None = None,
        value_prefixes: Callable[[], Mapping[str, bytes] | None] | None = None,
        tracing: Tracing | None = None,
        close_timeout_s: float = 10.0,
        topic_check_interval_s: float | None = None,
    ) -> None:
        self._settings = settings
        self._tracing = tracing or Tracing()
        self._prefixes = value_prefixes
        self._transactional_id = kafka.transactional_id(settings) if settings.kafka_transactions else None
        self._factory = producer_factory or (
            lambda: kafka.build_producer(settings, transactional_id=self._transactional_id)
        )
        self._group: GroupCommit | None = None
        self._topics = topics
        self._metrics = metrics
        self._close_timeout_s = close_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._supervisor = TaskRunner("bridge-producer-supervisor")
        self._replace = asyncio.Event()
        self._closing = False
        self._connected = False
        self._topics_known = False
        self._reason = "starting"
        self._topic_check_interval_s = (
            TOPIC_CHECK_INTERVAL_S if topic_check_interval_s is None else topic_check_interval_s
        )
        self._topic_checked_at = -float("inf")
        self._findings: list[Finding] = []
        self._outage = Outage(log, "kafka producer", "events are answered 503")

    def not_ready_reason(self) -> str | None:
        """None while the producer is connected and every topic exists; else ``starting``,
        ``broker_unreachable``, ``topics_missing``, ``topic_config`` (a topic's settings would
        break exactly-once after a restart: :mod:`bridge.topic_check`), ``not_ready`` (a producer
        being replaced) or ``shutting_down``."""
        if self._closing:
            return "shutting_down"
        if self._connected and self._topics_known:
            return "topic_config" if any(f.severity == "refuse" for f in self._findings) else None
        return self._reason or "not_ready"

    async def start(self) -> None:
        """Start the supervisor that connects (and replaces) the producer. Never raises."""
        self._supervisor.spawn(self._supervise())

    async def close(self) -> None:
        """Flush and stop the producer (at most ``close_timeout_s``), stop the supervisor."""
        self._closing = True
        producer, self._producer = self._producer, None
        await self._supervisor.cancel()
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self._close_timeout_s)

    def _connect_failed(self, exc: BaseException, wait_s: float) -> None:
        self._reason = "broker_unreachable"
        self._outage.failed(f"connect: {type(exc).__name__}")

    async def _connect(self) -> AIOKafkaProducer:
        """A started producer, retried with backoff (:data:`CONNECT_BACKOFF_S`) until one is."""
        return await kafka.started(
            self._factory, lambda p: p.start(), backoff_s=CONNECT_BACKOFF_S, on_retry=self._connect_failed
        )

    async def _supervise(self) -> None:
        while not self._closing:
            producer = await self._connect()
            self._metrics.producer_starts.inc()
            self._producer = producer
            self._replace.clear()
            if self._transactional_id is not None:
                self._group = GroupCommit(producer, self._metrics, on_broken=self._transaction_broken)
                self._group.start()
            try:
                await self._watch(producer)
            finally:
                self._connected = False
                group, self._group = self._group, None
                if group is not None:
                    await group.close()
                if self._producer is producer:
                    self._producer = None
                if not self._closing:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), 5.0)

    async def _watch(self, producer: AIOKafkaProducer) -> None:
        """Probe metadata until the producer must be replaced; creates missing topics first."""
        wanted = set(self._topics.all())
        while not self._closing and not self._replace.is_set():
            try:
                missing = wanted - await asyncio.wait_for(kafka.topic_names(producer), PROBE_TIMEOUT_S)
                self._connected = True
                self._outage.recovered()
                if missing and self._settings.kafka_create_topics:
                    await kafka.create_topics(self._settings, sorted(missing))
                    missing = wanted - await asyncio.wait_for(kafka.topic_names(producer), PROBE_TIMEOUT_S)
                self._topics_known = not missing
                self._reason = "topics_missing" if missing else ""
                if not missing:
                    await self._check_topics()
            except (TimeoutError, KafkaError, OSError) as exc:
                self._connected = False
                self._reason = "broker_unreachable"
                self._outage.failed(f"metadata: {type(exc).__name__}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._replace.wait(), PROBE_INTERVAL_S)

    async def _check_topics(self) -> None:
        """Every ``topic_check_interval_s`` seconds, what the cluster says of the topics'
        settings (:mod:`bridge.topic_check`); each change of the findings is logged once — ERROR
        for what refuses readiness, WARNING for the rest."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._topic_checked_at < self._topic_check_interval_s:
            return
        s = self._settings
        self._topic_checked_at = loop.time()
        try:
            described, brokers = await asyncio.wait_for(kafka.describe_topics(s, self._topics.all()), PROBE_TIMEOUT_S)
        except (TimeoutError, KafkaError, OSError) as exc:  # e.g. no DescribeConfigs ACL: serve unchecked
            log.warning(
                "topic settings could not be checked: %s; retrying in %.0fs",
                type(exc).__name__,
                self._topic_check_interval_s,
            )
            return
        ttl = s.dedup_ttl_s if s.dedup_store == DedupStore.KAFKA else None
        findings = check_topics(
            described, dedup_ttl_s=ttl, brokers=brokers, max_write_delay_ms=kafka.MAX_WRITE_DELAY_MS
        )
        if findings == self._findings:
            return
        for f in findings:
            if f not in self._findings:
                level = logging.ERROR if f.severity == "refuse" else logging.WARNING
                what = "not ready" if f.severity == "refuse" else "serving"
                log.log(level, "topic %s: %s=%s: %s (%s)", f.topic, f.setting, f.value, f.why, what)
        if any(f.severity == "refuse" for f in self._findings) and not any(f.severity == "refuse" for f in findings):
            log.info("topic settings now keep exactly-once after a restart; ready")
        self._findings = findings

    def _transaction_broken(self, exc: BaseException) -> None:
        self._mark_fatal(exc, None if isinstance(exc, _FATAL) else TRANSACTION_STUCK)

    def _mark_fatal(self, exc: BaseException, reason: str | None = None) -> None:
        name = reason or type(exc).__name__
        if not self._replace.is_set():
            log.warning("producer hit %s; replacing it", name)
            self._metrics.producer_replacements.labels(reason=name).inc()
            self._connected = False
            self._replace.set()

    async def publish(
        self, records: Sequence[Record], *, timestamp_ms: int | None = None, deadline_s: float | None = None
    ) -> list[RecordMetadata]:
        """Send ``records`` in order and wait for every broker ack. No timeout of its own (the
        caller bounds it); with transactions (``BRIDGE_KAFKA_TRANSACTIONS``), in the next
        transaction of :class:`GroupCommit`, committed only if every ack came by ``deadline_s``.

        Args:
            records: one event's records, in the order they must be written.
            timestamp_ms: their Kafka timestamp (CreateTime), unix ms; default: the time of
                sending. The delivery passes the request's arrival: a topic's
                ``message.timestamp.before.max.ms`` then makes the broker refuse a record that
                reaches it too long after its request (:data:`bridge.kafka.MAX_WRITE_DELAY_MS`).
            deadline_s: with transactions, the event loop's clock (seconds) by which every ack
                must be in, else the transaction is aborted; default ``BRIDGE_ANSWER_DEADLINE_S``
                from now. Without transactions: unused.

        Returns:
            The broker's metadata of each record (topic, partition, offset), in order.

        Raises:
            Unavailable: ``broker_unavailable`` when there is no connected producer,
                ``schema_ids_unknown`` while a registry's ids are not known.
            PublishFailed: a send failed — raised after every record already handed to the
                producer has its answer, so that ``acked`` lists exactly the records that are
                in the topics (with transactions: none, the transaction was aborted). A fatal
                idempotence error also schedules the producer's replacement.
        """
        producer = self._producer
        if producer is None or self._closing:
            raise Unavailable("broker_unavailable")
        prefixes = None
        if self._prefixes is not None and (prefixes := self._prefixes()) is None:
            raise Unavailable("schema_ids_unknown")
        group = self._group
        if self._transactional_id is not None and group is None:  # a producer being replaced
            raise Unavailable("broker_unavailable")
        if group is not None and deadline_s is None:
            deadline_s = asyncio.get_running_loop().time() + self._settings.answer_deadline_s
        if not self._tracing.enabled:
            if group is not None:
                assert deadline_s is not None
                return await group.publish(records, prefixes, [], timestamp_ms, deadline_s)
            return await self._send(producer, records, prefixes, [], timestamp_ms)
        with self._tracing.publish_span(records[0].topic, len(records)) as span:
            if group is not None:
                assert deadline_s is not None
                results = await group.publish(records, prefixes, Tracing.headers(span), timestamp_ms, deadline_s)
            else:
                results = await self._send(producer, records, prefixes, Tracing.headers(span), timestamp_ms)
            set_acked(span, [(m.partition, m.offset) for m in results[:1]])
            return results

    async def _send(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[Record],
        prefixes: Mapping[str, bytes] | None,
        trace_headers: list[tuple[str, bytes]],
        timestamp_ms: int | None,
    ) -> list[RecordMetadata]:
        started = time.perf_counter()
        futures: list[asyncio.Future[RecordMetadata]] = []
        try:
            for r in records:
                value = r.value if prefixes is None else prefixes[r.topic] + r.value
                headers = [*r.headers, *trace_headers]
                futures.append(
                    await producer.send(r.topic, value, key=r.key, headers=headers, timestamp_ms=timestamp_ms)
                )
            results = list(await asyncio.gather(*futures))
        except KafkaError as exc:
            if isinstance(exc, _FATAL):
                self._mark_fatal(exc)
            if self._outage.ongoing:
                self._outage.failed(f"publish: {type(exc).__name__}")
            self._metrics.publish_failures.labels(reason=type(exc).__name__).inc()
            raise PublishFailed(await _acked(futures)) from exc
        self._metrics.ack_latency.observe(time.perf_counter() - started)
        return results


async def _acked(futures: Sequence[asyncio.Future[RecordMetadata]]) -> tuple[int, ...]:
    """Indices of ``futures`` that end acknowledged, once every one of them has ended."""
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    return tuple(i for i, outcome in enumerate(outcomes) if isinstance(outcome, RecordMetadata))


@dataclass(slots=True)
class _Pending:
    """One delivery waiting for a transaction: its records, what to add to them, its deadline (the
    event loop's clock, seconds) and the future its publisher awaits."""

    records: Sequence[Record]
    prefixes: Mapping[str, bytes] | None
    trace_headers: list[tuple[str, bytes]]
    timestamp_ms: int | None
    deadline_s: float
    result: asyncio.Future[list[RecordMetadata]]
    queued_at: float = field(default_factory=time.perf_counter)


class _Abort(Exception):
    """A transaction must be aborted; ``cause`` is the send's error, or None for a deadline."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(type(cause).__name__ if cause else "deadline")
        self.cause = cause


class GroupCommit:
    """Publishes deliveries in Kafka transactions on one transactional producer: the deliveries
    that arrive while a transaction commits share the next one (group commit), since a producer
    has one open transaction at a time and each costs ≈ 10-15 ms whatever its size (BENCHMARKS.md).

    The rule that makes a retry safe on any replica (docs/delivery.md, "Transactions"): a
    transaction is committed only if every record of it was acknowledged (``acks=all``: at or below
    the high watermark) before the earliest answer deadline of its deliveries — which is before the
    platform can send a retry anywhere. Otherwise it is aborted and each of its deliveries fails
    with :class:`~bridge.errors.PublishFailed` (no record of it is readable: ``acked`` is empty). So
    a record above the high watermark when a retry arrives never becomes readable, and a
    transaction that may still commit holds back the last stable offset, which the retry's barrier
    waits past (:meth:`bridge.dedup_feed.LedgerFeed.caught_up`).

    Args:
        producer: a started transactional producer (:func:`bridge.kafka.build_producer` with a
            ``transactional_id``).
        metrics: ``bridge_kafka_transactions_total``, ``bridge_kafka_transaction_deliveries``,
            ``bridge_publish_failures_total`` and ``bridge_broker_ack_duration_seconds``.
        on_broken: called once with the error when the producer can no longer be used — a fatal
            error (fenced, sequence lost) or an abort or commit past its bound
            (:data:`ABORT_TIMEOUT_S`, :data:`COMMIT_TIMEOUT_S`; a ``KafkaTimeoutError``); the
            owner replaces the producer and this object fails whatever it is given from then on.
    """

    def __init__(
        self, producer: AIOKafkaProducer, metrics: Metrics, *, on_broken: Callable[[BaseException], None]
    ) -> None:
        self._producer = producer
        self._metrics = metrics
        self._on_broken = on_broken
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._runner = TaskRunner("bridge-group-commit")
        self._broken = False

    def start(self) -> None:
        """Start committing in the background."""
        self._runner.spawn(self._run())

    async def close(self) -> None:
        """Stop; every delivery not committed yet fails with :class:`PublishFailed` (503)."""
        self._broken = True
        await self._runner.cancel()
        self._fail(self._queue, None)
        self._queue = []

    async def publish(
        self,
        records: Sequence[Record],
        prefixes: Mapping[str, bytes] | None,
        trace_headers: list[tuple[str, bytes]],
        timestamp_ms: int | None,
        deadline_s: float,
    ) -> list[RecordMetadata]:
        """Publish one delivery's ``records`` in the next transaction; see :meth:`Publisher.publish`.

        Args:
            deadline_s: the event loop's clock (seconds) by which the transaction must have every
                ack, else it is aborted.

        Returns:
            The broker's metadata of each record, once the transaction is committed.

        Raises:
            PublishFailed: the transaction was aborted (or could not begin); nothing of it is
                readable.
        """
        if self._broken:
            raise PublishFailed()
        result: asyncio.Future[list[RecordMetadata]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(records, prefixes, trace_headers, timestamp_ms, deadline_s, result))
        self._wake.set()
        return await result

    async def _run(self) -> None:
        while not self._broken:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch, self._queue = self._queue, []
            live = [p for p in batch if not p.result.done()]  # a waiter cancelled meanwhile
            try:
                if live:
                    await self._transact(live)
            except asyncio.CancelledError:
                self._fail(live, None)
                raise
            except Exception as exc:  # a bug or an unforeseen error: replace the producer, go on
                log.exception("transaction failed")
                self._fail(live, exc)
                self._break(exc)
        self._fail(self._queue, None)
        self._queue = []

    async def _transact(self, batch: list[_Pending]) -> None:
        """One transaction of ``batch``: begin, send, await every ack by the earliest deadline,
        commit — or abort. Fails or resolves every future of ``batch``."""
        loop = asyncio.get_running_loop()
        producer = self._producer
        deadline = min(p.deadline_s for p in batch)
        self._metrics.transaction_deliveries.observe(len(batch))
        if loop.time() >= deadline:
            self._fail(batch, KafkaTimeoutError())
            return
        begun = False
        sends: list[list[asyncio.Future[RecordMetadata]]] = []
        try:
            try:
                async with asyncio.timeout_at(deadline):  # begin waits for a producer id
                    await producer.begin_transaction()
                begun = True
                for p in batch:
                    futures = []
                    for r in p.records:
                        value = r.value if p.prefixes is None else p.prefixes[r.topic] + r.value
                        headers = [*r.headers, *p.trace_headers]
                        futures.append(
                            await producer.send(r.topic, value, key=r.key, headers=headers, timestamp_ms=p.timestamp_ms)
                        )
                    sends.append(futures)
                flat = [f for futures in sends for f in futures]
                done, pending = await asyncio.wait(flat, timeout=max(0.0, deadline - loop.time()))
                failed = next((f.exception() for f in done if f.exception() is not None), None)
                if pending or failed is not None or loop.time() >= deadline:
                    raise _Abort(failed)
            except TimeoutError:
                raise _Abort(None) from None
            except KafkaError as exc:
                raise _Abort(exc) from None
            await self._commit(producer)
        except _Abort as abort:
            if begun:
                await self._abort(producer)
            self._fail(batch, abort.cause or KafkaTimeoutError())
            self._metrics.transactions.labels(outcome="aborted").inc()
            return
        except KafkaError as exc:  # the commit failed: its outcome is settled by the coordinator
            self._fail(batch, exc)
            return
        self._metrics.transactions.labels(outcome="committed").inc()
        now = time.perf_counter()
        for p, futures in zip(batch, sends, strict=True):
            self._metrics.ack_latency.observe(now - p.queued_at)
            if not p.result.done():
                p.result.set_result([f.result() for f in futures])

    async def _commit(self, producer: AIOKafkaProducer) -> None:
        """Commit, at most :data:`COMMIT_TIMEOUT_S`. An error of the transaction raised here is
        aborted (:class:`_Abort`); a fatal one or a commit past its bound breaks the producer."""
        try:
            await asyncio.wait_for(producer.commit_transaction(), COMMIT_TIMEOUT_S)
        except TimeoutError:
            self._break(KafkaTimeoutError("commit not answered"))
            raise KafkaTimeoutError() from None
        except KafkaError as exc:
            if isinstance(exc, _FATAL):
                self._break(exc)
                raise
            raise _Abort(exc) from None

    async def _abort(self, producer: AIOKafkaProducer) -> None:
        """Abort, at most :data:`ABORT_TIMEOUT_S`; a failure breaks the producer."""
        try:
            await asyncio.wait_for(producer.abort_transaction(), ABORT_TIMEOUT_S)
        except TimeoutError:
            self._break(KafkaTimeoutError("abort not answered"))
        except KafkaError as exc:
            self._break(exc)

    def _break(self, exc: BaseException) -> None:
        if not self._broken:
            self._broken = True
            self._on_broken(exc)

    def _fail(self, batch: Sequence[_Pending], exc: BaseException | None) -> None:
        """Fail each delivery of ``batch`` not done yet with :class:`PublishFailed` (nothing of it
        is readable), counted under the error's class name."""
        reason = type(exc).__name__ if exc is not None else "KafkaConnectionError"
        for p in batch:
            if not p.result.done():
                self._metrics.publish_failures.labels(reason=reason).inc()
                error = PublishFailed()
                if exc is not None:
                    error.__cause__ = exc
                p.result.set_exception(error)
