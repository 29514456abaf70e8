"""The bridge as a schema-registry citizen, on a real broker and a real registry (Apicurio,
BACKWARD): each topic's schema registered under ``<topic>-value``, records in the Confluent wire
format that confluent-kafka's own ``JSONDeserializer`` reads (and its ``JSONSerializer`` writes
byte for byte), readiness that waits for the ids and heals, and the CLI a pipeline uses."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bridge.normalize import Topics
from bridge.registry import schema_texts, subject_of
from bridge.samples import SAMPLE_TYPES
from bridge_devtools.broker import free_port, free_ports
from bridge_devtools.registry import LocalRegistry
from tests.support.bridges import topic_settings
from tests.support.kafka import read_topic
from tests.support.processes import REPO_ROOT, bridge_env
from tests.support.registry import BasicAuthGate, call
from tests.support.samples import fresh_id, sample_event
from tests.support.waits import wait_status

pytestmark = pytest.mark.integration


def own_topics() -> dict[str, str]:
    return topic_settings(f"sr-{uuid.uuid4().hex[:8]}")


async def readiness(bridge: Any) -> tuple[int, str]:
    status, text = await bridge.get("/readyz")
    return status, json.loads(text).get("reason", "")


async def wait_reason(bridge: Any, reason: str, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (got := await readiness(bridge)) != (503, reason):
        assert loop.time() < deadline, f"readiness {got}, wanted 503 {reason}"
        await asyncio.sleep(0.1)


async def test_records_are_framed_and_decode_with_confluents_own_deserializer(
    broker: Any, registry: LocalRegistry, start_bridge: Any
) -> None:
    topics = own_topics()
    bridge = await start_bridge(broker.bootstrap_servers, BRIDGE_SCHEMA_REGISTRY_URL=registry.url, **topics)
    unknown = sample_event("vc.room.created_v1", event_id=fresh_id())
    unknown["header"]["event_type"] = "vc.room.exploded_v1"  # one dead letter
    for body in (*(sample_event(kind, event_id=fresh_id()) for kind in SAMPLE_TYPES), unknown):  # a topic each
        assert await bridge.send(bridge.platform.request(body)) == (200, {"msg": "success"})

    status, subjects = call("GET", f"{registry.url}/subjects")
    assert status == 200 and {subject_of(t) for t in topics.values()} <= set(subjects)
    texts = schema_texts(Topics.from_settings(bridge.settings))
    # Subjects by topic name, as the bridge registers them: confluent-kafka 2.16's default
    # (AssociatedNameStrategy) asks a Confluent-only endpoint first, which Apicurio does not serve.
    by_topic = {"subject.name.strategy.type": "TOPIC"}
    with SchemaRegistryClient({"url": registry.url, "timeout": 10}) as client:
        expected = {"BRIDGE_TOPIC_THIRD_PARTY_MEETING_ROOM_EVENT": 2}
        for setting, topic in topics.items():
            records = await read_topic(broker.bootstrap_servers, topic, expect=expected.get(setting, 1))
            assert len(records) == expected.get(setting, 1)
            for record in records:
                value = record.value
                assert value[:1] == b"\x00"
                schema_id = int.from_bytes(value[1:5], "big")
                status, registered = call("GET", f"{registry.url}/schemas/ids/{schema_id}")
                assert status == 200 and json.loads(registered["schema"]) == json.loads(texts[topic])
                document = json.loads(value[5:])
                ctx = SerializationContext(topic, MessageField.VALUE)
                deserializer = JSONDeserializer(None, schema_registry_client=client, conf=by_topic)
                assert deserializer(value, ctx) == document
                serializer = JSONSerializer(texts[topic], client, conf={"auto.register.schemas": False, **by_topic})
                assert serializer(document, ctx) == value  # byte for byte what Confluent's serializer writes
    assert (await readiness(bridge)) == (200, "")


async def test_a_registry_down_at_start_keeps_the_bridge_unready_then_heals(broker: Any, start_bridge: Any) -> None:
    port, management_port = free_ports(2)
    late = LocalRegistry(port=port, management_port=management_port)
    try:
        bridge = await start_bridge(
            broker.bootstrap_servers, wait_ready=False, BRIDGE_SCHEMA_REGISTRY_URL=late.url, **own_topics()
        )
        await wait_reason(bridge, "registry_unreachable")
        status, _ = await bridge.send(bridge.platform.request(sample_event()))
        assert status == 503  # nothing is published unframed; the platform retries
        late.start(timeout_s=120)
        await bridge.wait_ready(timeout_s=60)
        assert await bridge.send(bridge.platform.request(sample_event())) == (200, {"msg": "success"})
        failures = bridge.metrics.registry.get_sample_value(
            "bridge_schema_registry_failures_total", {"reason": "registry_unreachable"}
        )
        assert failures is not None and failures >= 1
    finally:
        late.stop()
        late.cleanup()


async def test_credentials_go_to_the_registry_and_a_wrong_password_keeps_the_bridge_unready(
    broker: Any, registry: LocalRegistry, start_bridge: Any, caplog: Any
) -> None:
    gate = BasicAuthGate(registry.url, "bridge", "s3cret-registry-pw")
    await gate.start()
    try:
        wrong = await start_bridge(
            broker.bootstrap_servers,
            wait_ready=False,
            BRIDGE_SCHEMA_REGISTRY_URL=gate.url,
            BRIDGE_SCHEMA_REGISTRY_USERNAME="bridge",
            BRIDGE_SCHEMA_REGISTRY_PASSWORD="not-the-password",
            **own_topics(),
        )
        await wait_reason(wrong, "registry_unauthorized")
        right = await start_bridge(
            broker.bootstrap_servers,
            BRIDGE_SCHEMA_REGISTRY_URL=gate.url,
            BRIDGE_SCHEMA_REGISTRY_USERNAME="bridge",
            BRIDGE_SCHEMA_REGISTRY_PASSWORD="s3cret-registry-pw",
            **own_topics(),
        )
        assert await right.send(right.platform.request(sample_event())) == (200, {"msg": "success"})
    finally:
        await gate.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "registry_unauthorized" in logged
    assert "s3cret-registry-pw" not in logged and "not-the-password" not in logged


async def test_an_incompatible_registered_schema_keeps_the_bridge_unready_with_the_reason_logged(
    broker: Any, registry: LocalRegistry, start_bridge: Any, caplog: Any
) -> None:
    topics = own_topics()
    legacy = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"legacy": {"type": "integer"}},
        "required": ["legacy"],
        "additionalProperties": False,
    }
    subject = subject_of(topics["BRIDGE_TOPIC_ROOM_CREATED"])
    status, _ = call(
        "POST", f"{registry.url}/subjects/{subject}/versions", {"schemaType": "JSON", "schema": json.dumps(legacy)}
    )
    assert status == 200
    caplog.set_level(logging.WARNING, logger="bridge.registry")
    bridge = await start_bridge(
        broker.bootstrap_servers, wait_ready=False, BRIDGE_SCHEMA_REGISTRY_URL=registry.url, **topics
    )
    await wait_reason(bridge, "schema_incompatible")
    assert (await bridge.send(bridge.platform.request(sample_event())))[0] == 503
    errors = [r for r in caplog.records if r.name == "bridge.registry" and r.levelno == logging.ERROR]
    assert errors and subject in errors[0].getMessage() and "schema_incompatible" in errors[0].getMessage()
    assert len(errors) == 1  # one line per change of reason, not one per retry


def cli(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "schemas", action],
        env=bridge_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


async def test_with_auto_register_off_the_pipeline_registers_with_the_cli_and_the_bridge_follows(
    broker: Any, registry: LocalRegistry, start_bridge: Any
) -> None:
    topics = own_topics()
    env = {"BRIDGE_SCHEMA_REGISTRY_URL": registry.url, **topics}
    bridge = await start_bridge(
        broker.bootstrap_servers, wait_ready=False, BRIDGE_SCHEMA_REGISTRY_AUTO_REGISTER="false", **env
    )
    await wait_reason(bridge, "schema_not_registered")
    assert call("GET", f"{registry.url}/subjects/{subject_of(topics['BRIDGE_TOPIC_DEAD_LETTER'])}/versions")[0] == 404

    checked = await asyncio.to_thread(cli, "check-compat", env)  # nothing registered yet: all accept
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count(": compatible") == len(topics)  # one subject per topic
    registered = await asyncio.to_thread(cli, "register", env)
    assert registered.returncode == 0, registered.stderr
    assert sorted(line.split(":")[0] for line in registered.stdout.splitlines()) == sorted(
        subject_of(t) for t in topics.values()
    )
    await bridge.wait_ready(timeout_s=60)  # its next look-up finds them
    assert await bridge.send(bridge.platform.request(sample_event())) == (200, {"msg": "success"})

    # A subject whose registered schema ours would break: check-compat says so, exit code 1.
    other = own_topics()
    legacy: dict[str, Any] = {"type": "object", "properties": {"legacy": {"type": "integer"}}}
    legacy.update(required=["legacy"], additionalProperties=False)
    subject = subject_of(other["BRIDGE_TOPIC_DEAD_LETTER"])
    body = {"schemaType": "JSON", "schema": json.dumps(legacy)}
    assert call("POST", f"{registry.url}/subjects/{subject}/versions", body)[0] == 200
    refused = await asyncio.to_thread(cli, "check-compat", {"BRIDGE_SCHEMA_REGISTRY_URL": registry.url, **other})
    assert refused.returncode == 1 and f"{subject}: INCOMPATIBLE" in refused.stderr
    unreachable = await asyncio.to_thread(
        cli, "register", {"BRIDGE_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{free_port()}", **other}
    )
    assert unreachable.returncode == 3 and "registry_unreachable" in unreachable.stderr
    assert (await asyncio.to_thread(cli, "register", other)).returncode == 2  # no registry configured
    await wait_status(bridge, "/readyz", 200, timeout_s=5, interval_s=0.1, message="bridge went unready")
