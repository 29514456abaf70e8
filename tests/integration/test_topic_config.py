"""Topic settings checked at start on a real broker: a topic whose retention is shorter than the
dedup window refuses readiness (naming the topic and the setting) until it is fixed; topics the
bridge creates get min.insync.replicas set explicitly."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bridge import publish
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin


async def _config(admin: AIOKafkaAdminClient, topic: str, name: str) -> dict[str, Any]:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})])
    [resource] = response.to_object()["resources"]
    [entry] = [e for e in resource["config_entries"] if e["config_names"] == name]
    return dict(entry)


async def test_a_retention_shorter_than_the_dedup_window_refuses_readiness_until_fixed(
    broker: Any, start_bridge: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(publish, "TOPIC_CHECK_INTERVAL_S", 0.2)
    topic = f"it-{uuid.uuid4().hex[:8]}.room"
    admin = await _admin(broker.bootstrap_servers)
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1, topic_configs={"retention.ms": "60000"})]
        )
        with caplog.at_level(logging.INFO, logger="bridge.publish"):
            bridge = await start_bridge(broker.bootstrap_servers, wait_ready=False, BRIDGE_TOPIC_ROOM_CREATED=topic)

            async def refused() -> bool:
                status, body = await bridge.get("/readyz")
                return status == 503 and "topic_config" in body

            await wait_until(refused, timeout_s=30, message="a 60 s retention did not refuse readiness")
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert any(topic in line and "retention.ms=60000" in line for line in errors), errors

            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": str(7 * 86_400_000)})]
            )
            await bridge.wait_ready(timeout_s=30)
        assert any("ready" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
        # the topics the bridge created meanwhile carry min.insync.replicas of their own
        created = await _config(admin, bridge.settings.topic_dead_letter, "min.insync.replicas")
        # one broker: RF 1 - 1, at least 1; config_source 1 = DYNAMIC_TOPIC_CONFIG (set on the topic)
        assert created["config_value"] == "1" and created["config_source"] == 1
    finally:
        await admin.close()
