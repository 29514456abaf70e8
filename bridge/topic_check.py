"""What the bridge's topics must be for its promises to hold, checked against what the cluster says.

The dedup ledger is rebuilt at start from the bridge's own topics (:mod:`bridge.dedup_feed`): an
event published within the last ``BRIDGE_DEDUP_TTL_S`` seconds is known by the records it left
there. Two topic settings silently break that after a restart, so the bridge refuses readiness
while a topic has them:

* ``retention.ms`` shorter than the dedup window: records leave before the platform stops
  retrying (≈ 7.1 h), and a retry after a restart is published again;
* ``cleanup.policy`` with ``compact``: compaction keeps one record per key, so the record of an
  earlier delivery of a room can vanish, and a retry of it is published again.

Three more are warned about. A topic whose broker accepts a record however late it comes
(``message.timestamp.type=LogAppendTime``, or ``message.timestamp.before.max.ms`` above the
bridge's write-delay bound): a publish the producer still retries after an outage can then land
after the platform's retry reached another replica, as a second copy. And, on a cluster of more
than one broker, what weakens durability: a replication factor of 1 (a broker lost is the
topic's records lost) and ``min.insync.replicas`` below 2 (an ``acks=all`` write acknowledged by
one broker alone).

Pure: :func:`check_topics` takes the descriptions (:func:`bridge.kafka.describe_topics` reads
them) and returns the findings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

#: The retention that means "keep for ever" (Kafka's ``retention.ms=-1``).
KEEP_FOR_EVER: Final = -1


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """One topic as the cluster describes it.

    Attributes:
        name: the topic.
        replication_factor: the fewest replicas of any of its partitions.
        min_insync_replicas: its ``min.insync.replicas``.
        retention_ms: its ``retention.ms`` in milliseconds (-1: for ever).
        cleanup_policy: its ``cleanup.policy`` (``delete``, ``compact`` or both, comma-separated).
        timestamp_type: its ``message.timestamp.type`` (``CreateTime`` or ``LogAppendTime``).
        timestamp_before_max_ms: its ``message.timestamp.before.max.ms``, ms; None when the
            broker has no such setting (Kafka < 3.6).
    """

    name: str
    replication_factor: int
    min_insync_replicas: int
    retention_ms: int
    cleanup_policy: str
    timestamp_type: str = "CreateTime"
    timestamp_before_max_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with a topic.

    Attributes:
        topic: the topic.
        setting: the topic setting at fault (``retention.ms``, ``cleanup.policy``,
            ``replication.factor``, ``min.insync.replicas``).
        value: its value, as text.
        severity: ``refuse`` (the bridge is not ready while it lasts) or ``warn``.
        why: what it breaks, in one sentence.
    """

    topic: str
    setting: str
    value: str
    severity: Literal["refuse", "warn"]
    why: str


def check_topics(
    topics: Iterable[TopicDescription],
    *,
    dedup_ttl_s: float | None,
    brokers: int,
    max_write_delay_ms: int = 10_000,
) -> list[Finding]:
    """The findings about ``topics`` (module docstring), in topic order.

    Args:
        topics: the descriptions of the topics the bridge writes and rebuilds its ledger from.
        dedup_ttl_s: the dedup window, seconds (``BRIDGE_DEDUP_TTL_S``); None when the ledger is
            not rebuilt from the topics (``BRIDGE_DEDUP_STORE=memory``): retention and
            compaction are then not the ledger's concern.
        brokers: how many brokers the cluster has; the durability warnings need more than one.
        max_write_delay_ms: the longest a record may take from its request to the broker, ms
            (:data:`bridge.kafka.MAX_WRITE_DELAY_MS`); a topic whose broker would take it later is
            warned about.

    Returns:
        One :class:`Finding` per problem; empty when there is none.
    """
    found: list[Finding] = []
    for t in sorted(topics, key=lambda d: d.name):
        if dedup_ttl_s is not None:
            if t.retention_ms != KEEP_FOR_EVER and t.retention_ms < dedup_ttl_s * 1000:
                found.append(
                    Finding(
                        t.name,
                        "retention.ms",
                        str(t.retention_ms),
                        "refuse",
                        f"shorter than BRIDGE_DEDUP_TTL_S ({dedup_ttl_s:g} s): after a restart a retry of an "
                        "event published before that is published again",
                    )
                )
            if "compact" in {p.strip() for p in t.cleanup_policy.split(",")}:
                found.append(
                    Finding(
                        t.name,
                        "cleanup.policy",
                        t.cleanup_policy,
                        "refuse",
                        "compaction keeps one record per key: after a restart a retry of an event whose "
                        "record was compacted away is published again",
                    )
                )
        if dedup_ttl_s is not None and (
            t.timestamp_type != "CreateTime"
            or t.timestamp_before_max_ms is None
            or t.timestamp_before_max_ms > max_write_delay_ms
        ):
            setting, value = (
                ("message.timestamp.type", t.timestamp_type)
                if t.timestamp_type != "CreateTime"
                else ("message.timestamp.before.max.ms", str(t.timestamp_before_max_ms))
            )
            found.append(
                Finding(
                    t.name,
                    setting,
                    value,
                    "warn",
                    f"the broker does not refuse a record written more than {max_write_delay_ms} ms after its "
                    "request: a publish still retried after an outage can land after the platform's retry "
                    "reached another replica, as a second copy (CreateTime and "
                    f"message.timestamp.before.max.ms <= {max_write_delay_ms} close it)",
                )
            )
        if brokers > 1 and t.replication_factor < 2:
            found.append(
                Finding(
                    t.name,
                    "replication.factor",
                    str(t.replication_factor),
                    "warn",
                    "one copy on a cluster of several brokers: a broker lost is its records lost",
                )
            )
        elif brokers > 1 and t.min_insync_replicas < 2:
            found.append(
                Finding(
                    t.name,
                    "min.insync.replicas",
                    str(t.min_insync_replicas),
                    "warn",
                    "an acks=all write may be acknowledged by one broker alone, and lost with it",
                )
            )
    return found


def min_insync_for(replication_factor: int, configured: int | None) -> int:
    """The ``min.insync.replicas`` the bridge gives a topic it creates.

    Args:
        replication_factor: the topic's replicas.
        configured: ``BRIDGE_KAFKA_TOPIC_MIN_INSYNC_REPLICAS``, or None.

    Returns:
        ``configured`` when set, else one less than the replication factor, at least 1 (2 with
        3 replicas: an acknowledged write is on two brokers, and writes go on with one down).
    """
    return configured if configured is not None else max(1, replication_factor - 1)
