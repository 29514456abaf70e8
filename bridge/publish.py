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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    DuplicateSequenceNumber,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
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
        self._factory = producer_factory or (lambda: kafka.build_producer(settings))
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
            try:
                await self._watch(producer)
            finally:
                self._connected = False
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

    def _mark_fatal(self, exc: BaseException) -> None:
        name = type(exc).__name__
        if not self._replace.is_set():
            log.warning("producer hit %s; replacing it", name)
            self._metrics.producer_replacements.labels(reason=name).inc()
            self._connected = False
            self._replace.set()

    async def publish(self, records: Sequence[Record], *, timestamp_ms: int | None = None) -> list[RecordMetadata]:
        """Send ``records`` in order and wait for every broker ack. No timeout of its own (the
        caller bounds it).

        Args:
            records: one event's records, in the order they must be written.
            timestamp_ms: their Kafka timestamp (CreateTime), unix ms; default: the time of
                sending. The delivery passes the request's arrival: a topic's
                ``message.timestamp.before.max.ms`` then makes the broker refuse a record that
                reaches it too long after its request (:data:`bridge.kafka.MAX_WRITE_DELAY_MS`).

        Returns:
            The broker's metadata of each record (topic, partition, offset), in order.

        Raises:
            Unavailable: ``broker_unavailable`` when there is no connected producer,
                ``schema_ids_unknown`` while a registry's ids are not known.
            PublishFailed: a send failed — raised after every record already handed to the
                producer has its answer, so that ``acked`` lists exactly the records that are
                in the topics. A fatal idempotence error also schedules the producer's
                replacement.
        """
        producer = self._producer
        if producer is None or self._closing:
            raise Unavailable("broker_unavailable")
        prefixes = None
        if self._prefixes is not None and (prefixes := self._prefixes()) is None:
            raise Unavailable("schema_ids_unknown")
        if not self._tracing.enabled:
            return await self._send(producer, records, prefixes, [], timestamp_ms)
        with self._tracing.publish_span(records[0].topic, len(records)) as span:
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
