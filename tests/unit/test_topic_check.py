"""The topic settings that break exactly-once after a restart refuse readiness; those that only
weaken durability warn (bridge.topic_check)."""

from __future__ import annotations

import pytest

from bridge.topic_check import TopicDescription, check_topics, min_insync_for

DAY_MS = 86_400_000


def topic(**changes: object) -> TopicDescription:
    base: dict[str, object] = {
        "name": "t",
        "replication_factor": 3,
        "min_insync_replicas": 2,
        "retention_ms": 7 * DAY_MS,
        "cleanup_policy": "delete",
        "timestamp_before_max_ms": 10_000,
    }
    base.update(changes)
    return TopicDescription(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("described", "ttl_s", "brokers", "expected"),
    [
        (topic(), 86_400, 3, []),
        (topic(retention_ms=-1), 86_400, 3, []),  # kept for ever
        (topic(retention_ms=DAY_MS), 86_400, 3, []),  # exactly the window
        (topic(retention_ms=DAY_MS - 1), 86_400, 3, [("retention.ms", "refuse")]),
        (topic(cleanup_policy="compact"), 86_400, 3, [("cleanup.policy", "refuse")]),
        (topic(cleanup_policy="compact,delete"), 86_400, 3, [("cleanup.policy", "refuse")]),
        (topic(cleanup_policy="delete, compact"), 86_400, 3, [("cleanup.policy", "refuse")]),
        # the ledger is not rebuilt from the topics: retention and compaction are not its concern
        (topic(retention_ms=1000, cleanup_policy="compact"), None, 3, []),
        (topic(replication_factor=1, min_insync_replicas=1), 86_400, 3, [("replication.factor", "warn")]),
        (topic(min_insync_replicas=1), 86_400, 3, [("min.insync.replicas", "warn")]),
        (topic(timestamp_before_max_ms=None), 86_400, 1, [("message.timestamp.before.max.ms", "warn")]),
        (topic(timestamp_before_max_ms=10_001), 86_400, 1, [("message.timestamp.before.max.ms", "warn")]),
        (topic(timestamp_type="LogAppendTime"), 86_400, 1, [("message.timestamp.type", "warn")]),
        (topic(timestamp_before_max_ms=None), None, 1, []),  # no ledger from the topics: no concern
        # one broker: nothing better is possible, nothing to warn about
        (topic(replication_factor=1, min_insync_replicas=1), 86_400, 1, []),
        (
            topic(retention_ms=60_000, cleanup_policy="compact", min_insync_replicas=1),
            86_400,
            3,
            [("retention.ms", "refuse"), ("cleanup.policy", "refuse"), ("min.insync.replicas", "warn")],
        ),
    ],
)
def test_findings(
    described: TopicDescription, ttl_s: float | None, brokers: int, expected: list[tuple[str, str]]
) -> None:
    findings = check_topics([described], dedup_ttl_s=ttl_s, brokers=brokers)
    assert [(f.setting, f.severity) for f in findings] == expected
    assert all(f.topic == "t" and f.why for f in findings)


def test_findings_come_in_topic_order_with_the_value_that_is_wrong() -> None:
    findings = check_topics(
        [topic(name="b", retention_ms=5), topic(name="a", retention_ms=7)], dedup_ttl_s=60, brokers=1
    )
    assert [(f.topic, f.value) for f in findings] == [("a", "7"), ("b", "5")]


@pytest.mark.parametrize(
    ("replication", "configured", "expected"), [(3, None, 2), (1, None, 1), (2, None, 1), (5, 3, 3)]
)
def test_created_topics_get_one_less_in_sync_replica_than_their_replicas(
    replication: int, configured: int | None, expected: int
) -> None:
    assert min_insync_for(replication, configured) == expected
