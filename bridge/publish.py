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
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    DuplicateSequenceNumber,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAlreadyExistsError,
    UnknownProducerId,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata

from bridge.errors import PublishFailed, Unavailable
from bridge.metrics import Metrics
from bridge.normalize import Record, Topics
from bridge.settings import Settings
from bridge.tracing import Tracing, set_acked

log = logging.getLogger("bridge.publish")

PROBE_INTERVAL_S: Final = 1.0
# How long the producer keeps retrying a batch (aiokafka's request timeout doubles as the batch
# expiry). Far longer than BRIDGE_KAFKA_PUBLISH_TIMEOUT_S on purpose: the request is answered 503
# after that, but the idempotent producer keeps resending the *same* batch (the broker drops
# duplicates by sequence number) and, once acked, the delivery id counts as delivered. Expiring
# it early instead would make the platform's retry publish a second copy of a batch that the
# broker may already have written before an outage.
PRODUCER_REQUEST_TIMEOUT_MS: Final = 30_000
PROBE_TIMEOUT_S: Final = 2.0
_FATAL: Final = (
    OutOfOrderSequenceNumber,
    DuplicateSequenceNumber,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
    UnknownProducerId,
)


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka connection keyword arguments (bootstrap, security, SASL, TLS) from settings."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol.value,
    }
    if settings.kafka_security_protocol.endswith("SSL"):
        opts["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_mechanism is not None
        assert settings.kafka_sasl_password is not None
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism.value
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return opts


def record_bytes(record: Record) -> int:
    """The size the producer gives ``record`` (key + value + headers in a batch of its own), in
    bytes: what aiokafka compares with ``max_request_size`` before refusing a send."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, list(record.headers))
    return size


def build_producer(settings: Settings) -> AIOKafkaProducer:
    """The bridge's producer: idempotent (``acks=all``), connection/compression from settings.

    Must be called with a running event loop (aiokafka binds it at construction).
    """
    compression = None if settings.kafka_compression.value == "none" else settings.kafka_compression.value
    return AIOKafkaProducer(
        **kafka_client_options(settings),
        enable_idempotence=True,
        acks="all",
        compression_type=compression,
        linger_ms=settings.kafka_linger_ms,
        max_request_size=settings.kafka_max_record_bytes,
        request_timeout_ms=PRODUCER_REQUEST_TIMEOUT_MS,
        retry_backoff_ms=100,
    )


async def _default_replication(admin: AIOKafkaAdminClient) -> int:
    """The cluster's ``default.replication.factor`` (aiokafka's NewTopic can't ask for the
    broker default with -1), capped by the number of brokers."""
    brokers = admin._client.cluster.brokers()
    node = min(b.nodeId for b in brokers) if brokers else 1
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(node))])
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == "default.replication.factor" and entry[1]:
                    return max(1, min(int(entry[1]), len(brokers) or 1))
    return 1


class Publisher:
    """Owns the producer; :meth:`publish` sends a request's records and awaits every broker ack.

    Start with :meth:`start` (returns at once; connection happens in the background) and end with
    :meth:`close`. ``ready`` is the readiness state; ``not_ready_reason`` says why not.
    ``producer_factory`` makes each (re)placement producer; default: one configured from settings
    (tests pass a factory that injects faults into real producers). ``value_prefixes``: with a
    schema registry, returns ``{topic: wire prefix}`` once the schema ids are known (None
    before: publishing then raises :class:`Unavailable` ``schema_ids_unknown``); each value is
    sent as prefix + value (:mod:`bridge.registry`). ``tracing``: each publish is a PRODUCER span
    whose W3C trace context goes into every record's headers (:mod:`bridge.tracing`; off unless
    configured).
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
    ) -> None:
        self._settings = settings
        self._tracing = tracing or Tracing()
        self._prefixes = value_prefixes
        self._factory = producer_factory or (lambda: build_producer(settings))
        self._topics = topics
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._replace = asyncio.Event()
        self._closing = False
        self._connected = False
        self._topics_known = False
        self.not_ready_reason = "starting"

    @property
    def ready(self) -> bool:
        """True while the producer is connected and all topics exist."""
        return self._connected and self._topics_known and not self._closing

    async def start(self) -> None:
        """Start the supervisor that connects (and reconnects) the producer. Never raises."""
        self._supervisor = asyncio.create_task(self._supervise(), name="bridge-producer-supervisor")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush and stop the producer (at most ``timeout_s`` seconds), stop the supervisor."""
        self._closing = True
        self.not_ready_reason = "shutting_down"
        producer, self._producer = self._producer, None
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout_s)

    async def _supervise(self) -> None:
        backoff = 0.2
        while not self._closing:
            producer = self._factory()
            try:
                await producer.start()
            except asyncio.CancelledError:  # closing while connecting: don't leak the producer
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5.0)
                raise
            except Exception as exc:  # broker absent or refusing: stay up, answer 503, retry
                self.not_ready_reason = "broker_unreachable"
                log.warning("kafka producer could not connect: %s; retrying in %.1fs", type(exc).__name__, backoff)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
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
        while not self._closing and not self._replace.is_set():
            try:
                metadata = await asyncio.wait_for(producer.client.fetch_all_metadata(), PROBE_TIMEOUT_S)
                self._connected = True
                missing = set(self._topics.all()) - set(metadata.topics())
                if missing and self._settings.kafka_create_topics:
                    await self._create_topics(sorted(missing))
                    metadata = await asyncio.wait_for(producer.client.fetch_all_metadata(), PROBE_TIMEOUT_S)
                    missing = set(self._topics.all()) - set(metadata.topics())
                self._topics_known = not missing
                self.not_ready_reason = "topics_missing" if missing else ""
            except (TimeoutError, KafkaError, OSError) as exc:
                self._connected = False
                self.not_ready_reason = "broker_unreachable"
                log.debug("metadata probe failed: %s", type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._replace.wait(), PROBE_INTERVAL_S)

    async def _create_topics(self, names: Sequence[str]) -> None:
        s = self._settings
        admin = AIOKafkaAdminClient(**kafka_client_options(s), request_timeout_ms=5000)
        await admin.start()
        try:
            replication = s.kafka_topic_replication_factor or await _default_replication(admin)
            new = [
                NewTopic(name, num_partitions=s.kafka_topic_partitions, replication_factor=replication)
                for name in names
            ]
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            log.info("created topics %s", ",".join(names))
        finally:
            await admin.close()

    def _mark_fatal(self, exc: BaseException) -> None:
        name = type(exc).__name__
        if not self._replace.is_set():
            log.warning("producer hit %s; replacing it", name)
            self._metrics.producer_replacements.labels(reason=name).inc()
            self._connected = False
            self._replace.set()

    async def publish(self, records: Sequence[Record]) -> list[RecordMetadata]:
        """Send ``records`` in order and wait for every broker ack; returns their metadata.

        No timeout of its own (the caller bounds it). Raises :class:`Unavailable`
        (``broker_unavailable``) when there is no connected producer, and :class:`PublishFailed`
        (a subclass) when a send failed — after every record already handed to the producer has
        its answer, so that ``acked`` lists exactly the records that are in the topics. A fatal
        idempotence error also schedules the producer's replacement.
        """
        producer = self._producer
        if producer is None or self._closing:
            raise Unavailable("broker_unavailable")
        prefixes = None
        if self._prefixes is not None and (prefixes := self._prefixes()) is None:
            raise Unavailable("schema_ids_unknown")
        if not self._tracing.enabled:
            return await self._send(producer, records, prefixes, [])
        with self._tracing.publish_span(records[0].topic, len(records)) as span:
            results = await self._send(producer, records, prefixes, Tracing.headers(span))
            set_acked(span, [(m.partition, m.offset) for m in results[:1]])
            return results

    async def _send(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[Record],
        prefixes: Mapping[str, bytes] | None,
        trace_headers: list[tuple[str, bytes]],
    ) -> list[RecordMetadata]:
        started = time.perf_counter()
        futures: list[asyncio.Future[RecordMetadata]] = []
        try:
            for r in records:
                value = r.value if prefixes is None else prefixes[r.topic] + r.value
                headers = [*r.headers, *trace_headers]
                futures.append(await producer.send(r.topic, value, key=r.key, headers=headers))
            results = list(await asyncio.gather(*futures))
        except KafkaError as exc:
            if isinstance(exc, _FATAL):
                self._mark_fatal(exc)
            self._metrics.publish_failures.labels(reason=type(exc).__name__).inc()
            raise PublishFailed(await _acked(futures)) from exc
        self._metrics.ack_latency.observe(time.perf_counter() - started)
        return results


async def _acked(futures: Sequence[asyncio.Future[RecordMetadata]]) -> tuple[int, ...]:
    """Indices of ``futures`` that end acknowledged, once every one of them has ended."""
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    return tuple(i for i, outcome in enumerate(outcomes) if isinstance(outcome, RecordMetadata))
