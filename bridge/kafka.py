"""The Kafka adapter: everything that speaks aiokafka's client API, and nothing else does.

The rest of the bridge sees a few intention-revealing functions: the client options from
settings, the bridge's producer and group-less consumers, topic creation, the partitions of a set
of topics once each has a leader, a metadata refresh, and the size the producer gives a record.
Public aiokafka APIs are used wherever they exist (``AIOKafkaAdminClient.describe_cluster``,
``describe_configs``, ``create_topics``; ``AIOKafkaConsumer.partitions_for_topic``). Three
needs have no public API in aiokafka 0.14, and their private calls live here alone, each with its
reason:

* a consumer's view of a partition's **leader** (``consumer._client.cluster.leader_for_partition``)
  and a **metadata refresh** on demand (``consumer._client.force_metadata_update``): a consumer
  assigned a partition created a moment ago logs ``NotLeaderForPartition`` until its own
  metadata names a leader, and only its own metadata matters for that;
* the **record size** the producer compares with ``max_request_size``
  (``DefaultRecordBatchBuilder.estimate_size_in_bytes``, in ``aiokafka.record``, not exported):
  the delivery refuses a record the producer would refuse, by the producer's own measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import InvalidConfigurationError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from bridge.lifecycle import retrying
from bridge.normalize import Record
from bridge.settings import Settings
from bridge.topic_check import TopicDescription, min_insync_for

log = logging.getLogger("bridge.kafka")

#: How long the producer keeps retrying a batch, in ms (aiokafka's request timeout doubles as the
#: batch expiry). Far longer than the answer deadline on purpose: the request is answered 503
#: after that, but the idempotent producer keeps resending the *same* batch (the broker drops
#: duplicates by sequence number) and, once acked, the event id counts as delivered. Expiring it
#: early instead would make the platform's retry publish a second copy of a batch that the broker
#: may already have written before an outage.
PRODUCER_REQUEST_TIMEOUT_MS: Final = 30_000
#: The longest a record may take from its request's arrival (its timestamp, which the delivery
#: sets) to the broker, in ms: topics the bridge creates get ``message.timestamp.before.max.ms``
#: = this, so the broker refuses a record the producer still retries after an outage. Below the
#: platform's first retry interval (15 s, docs/protocol.md §7): once a retry can arrive at another
#: replica, no earlier attempt's record can still be appended.
MAX_WRITE_DELAY_MS: Final = 10_000
#: A transaction of the bridge's (``BRIDGE_KAFKA_TRANSACTIONS``) not ended within this many ms is
#: aborted by the broker's transaction coordinator (``transaction.timeout.ms``): what a process
#: that hung or died mid-transaction left open is undone, and read_committed readers wait at most
#: this (plus the coordinator's check interval, ``transaction.abort.timed.out.transaction.cleanup.
#: interval.ms``, 10 s by default) for the partitions it touched.
TRANSACTION_TIMEOUT_MS: Final = 10_000
#: The transactional producer's request timeout, in ms. Shorter than the idempotent producer's
#: (:data:`PRODUCER_REQUEST_TIMEOUT_MS`): a transaction not acknowledged by its deadline is
#: aborted, so that a late record is never read as written — nothing gains from retrying it for
#: long, and the producer's one open transaction cannot end while a send is still in flight.
TRANSACTIONAL_REQUEST_TIMEOUT_MS: Final = 5_000
#: An admin request's timeout (topic creation, cluster and config descriptions), in ms.
ADMIN_REQUEST_TIMEOUT_MS: Final = 5_000


class _Client(Protocol):
    async def stop(self) -> None: ...


C = TypeVar("C", bound=_Client)
#: How long a client whose start failed may take to stop, in seconds.
STOP_TIMEOUT_S: Final = 5.0


async def started(
    make: Callable[[], C],
    start: Callable[[C], Awaitable[None]],
    *,
    backoff_s: tuple[float, float],
    on_retry: Callable[[BaseException, float], None],
) -> C:
    """A client made by ``make`` and started by ``start``, retried until one starts.

    Args:
        make: makes a new client (a producer or consumer) for each attempt.
        start: starts it (connects; for a consumer, also assigns partitions).
        backoff_s: the first and the longest wait between attempts, seconds
            (:func:`bridge.lifecycle.retrying`).
        on_retry: called before each wait with the failure and the wait, seconds.

    Returns:
        The started client. A client whose start failed — or was cancelled — is stopped (at most
        :data:`STOP_TIMEOUT_S`) before the next attempt, so that no connection leaks.
    """
    first_s, max_s = backoff_s
    async for attempt in retrying(first_s=first_s, max_s=max_s, on_retry=on_retry):
        with attempt:
            client = make()
            try:
                await start(client)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), STOP_TIMEOUT_S)
                raise
            return client
    raise AssertionError("retrying() never stops")  # pragma: no cover


def client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's connection keyword arguments from settings.

    Args:
        settings: ``BRIDGE_KAFKA_BOOTSTRAP_SERVERS``, ``_CLIENT_ID``, ``_SECURITY_PROTOCOL``,
            ``_SSL_CAFILE``, ``_SASL_MECHANISM``, ``_SASL_USERNAME``, ``_SASL_PASSWORD``.

    Returns:
        ``bootstrap_servers``, ``client_id``, ``security_protocol`` and, as the protocol needs
        them, ``ssl_context`` and the ``sasl_*`` arguments (the password in clear: never log
        this mapping).
    """
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


def transactional_id(settings: Settings) -> str:
    """A new ``transactional.id`` for one process's producers: ``<BRIDGE_KAFKA_CLIENT_ID>-<16 hex
    digits>``, random, so that two replicas (or two processes on one host) never fence each other.
    A replacement producer of the same process reuses it, which aborts what its predecessor left
    open at once (``InitProducerId``); a process that is gone leaves its last transaction to the
    coordinator's timeout (:data:`TRANSACTION_TIMEOUT_MS`)."""
    return f"{settings.kafka_client_id}-{uuid.uuid4().hex[:16]}"


def build_producer(settings: Settings, *, transactional_id: str | None = None) -> AIOKafkaProducer:
    """The bridge's producer: idempotent (``acks=all``), compression, linger and the largest
    request from settings, :data:`PRODUCER_REQUEST_TIMEOUT_MS`.

    With ``transactional_id`` (``BRIDGE_KAFKA_TRANSACTIONS``; see :func:`transactional_id`), a
    transactional producer: :data:`TRANSACTION_TIMEOUT_MS`, and
    :data:`TRANSACTIONAL_REQUEST_TIMEOUT_MS` as its request timeout.

    Must be called with a running event loop (aiokafka binds it at construction).
    """
    compression = None if settings.kafka_compression.value == "none" else settings.kafka_compression.value
    transactional: dict[str, Any] = {"request_timeout_ms": PRODUCER_REQUEST_TIMEOUT_MS}
    if transactional_id is not None:
        transactional = {
            "transactional_id": transactional_id,
            "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS,
            "request_timeout_ms": TRANSACTIONAL_REQUEST_TIMEOUT_MS,
        }
    return AIOKafkaProducer(
        **client_options(settings),
        enable_idempotence=True,
        acks="all",
        compression_type=compression,
        linger_ms=settings.kafka_linger_ms,
        max_request_size=settings.kafka_max_record_bytes,
        retry_backoff_ms=100,
        **transactional,
    )


def build_consumer(settings: Settings, *, purpose: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer of the bridge's own: no group, no commits, from the earliest offset,
    ``read_committed`` unless ``options`` say otherwise (a record of an aborted transaction was
    never published), with the producer's connection and security settings.

    Args:
        settings: the Kafka connection settings (:func:`client_options`).
        purpose: appended to the client id (``<BRIDGE_KAFKA_CLIENT_ID>-<purpose>``), so that
            the broker's logs and quotas tell the consumers apart.
        **options: further ``AIOKafkaConsumer`` arguments (fetch sizes and waits).

    Must be called with a running event loop (aiokafka binds it at construction).
    """
    opts = client_options(settings)
    opts["client_id"] = f"{settings.kafka_client_id}-{purpose}"
    options.setdefault("isolation_level", "read_committed")
    return AIOKafkaConsumer(**opts, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **options)


def record_bytes(record: Record) -> int:
    """The size the producer gives ``record`` in bytes (key + value + headers in a batch of its
    own): what aiokafka compares with ``max_request_size`` before refusing a send."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, list(record.headers))
    return size


async def topic_names(producer: AIOKafkaProducer) -> set[str]:
    """The topics the cluster has, from a metadata request on the producer's connection.

    Raises:
        aiokafka.errors.KafkaError, OSError: the broker could not be asked.
    """
    metadata = await producer.client.fetch_all_metadata()
    return set(metadata.topics())


@contextlib.asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client (:data:`ADMIN_REQUEST_TIMEOUT_MS`), closed on exit."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=ADMIN_REQUEST_TIMEOUT_MS)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def default_replication(admin: AIOKafkaAdminClient) -> int:
    """The cluster's ``default.replication.factor``, capped by the number of brokers (aiokafka's
    ``NewTopic`` cannot ask for the broker default with -1); 1 when the broker does not say."""
    cluster = await admin.describe_cluster()
    brokers = [b["node_id"] for b in cluster.get("brokers", ())]
    node = min(brokers) if brokers else 1
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(node))])
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == "default.replication.factor" and entry["config_value"]:
                    return max(1, min(int(entry["config_value"]), len(brokers) or 1))
    return 1


async def create_topics(settings: Settings, names: Sequence[str]) -> None:
    """Create ``names`` with ``BRIDGE_KAFKA_TOPIC_PARTITIONS`` partitions,
    ``BRIDGE_KAFKA_TOPIC_REPLICATION_FACTOR`` replicas (unset: the cluster's default, see
    :func:`default_replication`), ``min.insync.replicas`` from
    ``BRIDGE_KAFKA_TOPIC_MIN_INSYNC_REPLICAS`` (unset: one less than the replicas, at least 1 —
    :func:`bridge.topic_check.min_insync_for`) and ``message.timestamp.before.max.ms`` =
    :data:`MAX_WRITE_DELAY_MS` (a broker older than Kafka 3.6 does not know it: the topic is then
    created without it, and a warning says so). A topic created meanwhile by someone else is not
    an error; any other refusal leaves the topic missing (``topics_missing``) and is logged.

    Raises:
        aiokafka.errors.KafkaError, OSError: the broker could not be asked.
    """
    async with admin_client(settings) as admin:
        replication = settings.kafka_topic_replication_factor or await default_replication(admin)
        configs = {
            "min.insync.replicas": str(min_insync_for(replication, settings.kafka_topic_min_insync_replicas)),
            "message.timestamp.type": "CreateTime",
            "message.timestamp.before.max.ms": str(MAX_WRITE_DELAY_MS),
        }

        async def create(topics: Sequence[str], topic_configs: dict[str, str]) -> dict[str, tuple[int, str]]:
            new = [
                NewTopic(
                    name,
                    num_partitions=settings.kafka_topic_partitions,
                    replication_factor=replication,
                    topic_configs=topic_configs,
                )
                for name in topics
            ]
            response = await admin.create_topics(new)
            return {
                e["topic"]: (e["error_code"], e.get("error_message") or "")
                for e in response.to_object()["topic_errors"]
                if e["error_code"] not in (0, TopicAlreadyExistsError.errno)
            }

        errors = await create(names, configs)
        old_broker = [t for t, (code, _) in errors.items() if code == InvalidConfigurationError.errno]
        if old_broker:
            log.warning(
                "the broker refused message.timestamp.before.max.ms (Kafka < 3.6?): topics %s created "
                "without the write-delay bound",
                ",".join(old_broker),
            )
            del configs["message.timestamp.before.max.ms"]
            errors = {**{t: e for t, e in errors.items() if t not in old_broker}, **await create(old_broker, configs)}
    for topic, (code, message) in sorted(errors.items()):
        log.error("topic %s not created: error %d %s", topic, code, message[:200])
    created = [n for n in names if n not in errors]
    if created:
        log.info("created topics %s", ",".join(created))


#: The topic settings :func:`describe_topics` reads.
_DESCRIBED: Final = (
    "min.insync.replicas",
    "retention.ms",
    "cleanup.policy",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
)


async def describe_topics(settings: Settings, names: Sequence[str]) -> tuple[list[TopicDescription], int]:
    """What the cluster says of ``names``: each topic's replication and the settings the bridge's
    promises depend on (:mod:`bridge.topic_check`), and how many brokers it has.

    Returns:
        ``(descriptions of the topics that exist and whose settings could be read, number of
        brokers)``.

    Raises:
        aiokafka.errors.KafkaError, OSError: the broker could not be asked.
    """
    async with admin_client(settings) as admin:
        cluster = await admin.describe_cluster()
        topics = {t["topic"]: t for t in await admin.describe_topics(list(names)) if not t["error_code"]}
        configs: dict[str, dict[str, str]] = {name: {} for name in topics}
        if topics:
            resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
            for response in await admin.describe_configs(resources):
                for resource in response.to_object()["resources"]:
                    wanted = configs.get(resource["resource_name"])
                    if wanted is None:
                        continue
                    if resource["error_code"]:  # e.g. not authorized to describe it: not described
                        del configs[resource["resource_name"]]
                        continue
                    for entry in resource["config_entries"]:
                        if entry["config_names"] in _DESCRIBED and entry["config_value"] is not None:
                            wanted[entry["config_names"]] = entry["config_value"]
    out = []
    for name, topic in topics.items():
        if name not in configs:
            continue
        c = configs[name]
        out.append(
            TopicDescription(
                name=name,
                replication_factor=min((len(p["replicas"]) for p in topic["partitions"]), default=0),
                min_insync_replicas=int(c.get("min.insync.replicas", "1")),
                retention_ms=int(c.get("retention.ms", str(7 * 24 * 3600 * 1000))),
                cleanup_policy=c.get("cleanup.policy", "delete"),
                timestamp_type=c.get("message.timestamp.type", "CreateTime"),
                timestamp_before_max_ms=int(c["message.timestamp.before.max.ms"])
                if "message.timestamp.before.max.ms" in c
                else None,
            )
        )
    return out, len(cluster.get("brokers", ()))


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the broker for the consumer's metadata now (private in aiokafka: module docstring)."""
    await consumer._client.force_metadata_update()


def _has_leader(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    """The consumer's metadata names a leader of ``tp``: not None (unknown) nor -1 (none elected
    yet). Private in aiokafka (module docstring)."""
    node_id = consumer._client.cluster.leader_for_partition(tp)
    return node_id is not None and node_id >= 0


async def partitions_with_leaders(
    consumer: AIOKafkaConsumer, topics: Iterable[str], *, poll_s: float = 0.2
) -> list[TopicPartition]:
    """Every partition of ``topics`` (in topic order, then by number) once each topic exists and
    each partition has a leader in the consumer's metadata, refreshing it every ``poll_s``
    seconds until then — for topics being created a moment ago. No timeout of its own."""
    names = tuple(topics)
    while True:
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        complete = all(consumer.partitions_for_topic(t) for t in names)
        if complete and all(_has_leader(consumer, tp) for tp in tps):
            return tps
        await refresh_metadata(consumer)
        await asyncio.sleep(poll_s)
