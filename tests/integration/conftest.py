"""Integration fixtures: the project's own Kafka broker (bridge.devtools.broker), a bridge app on
a real HTTP port wired to it, and a consumer that reads records back.

These tests are never skipped: without Java or the broker jars they fail (CI installs both).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.app import STATE, create_app
from bridge.devtools.broker import LocalBroker, free_port, free_ports
from bridge.devtools.platform import Platform, PlatformRequest
from bridge.settings import Settings, load_settings
from tests.conftest import KEY, TOKEN

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """One broker for the session (version: BRIDGE_DEV_KAFKA_VERSION or the pinned default)."""
    b = LocalBroker()
    b.start(timeout_s=120)
    yield b
    b.stop()
    b.cleanup()


@pytest.fixture
def spare_broker() -> Iterator[LocalBroker]:
    """A broker of its own, NOT started: for absent-at-start and restart tests."""
    port, controller_port = free_ports(2)
    b = LocalBroker(port=port, controller_port=controller_port)
    yield b
    b.stop()
    b.cleanup()


def bridge_settings(bootstrap: str, **env: str) -> Settings:
    """Settings for a test bridge with topics unique to the test (3 partitions)."""
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    base = {
        "BRIDGE_LARK_VERIFICATION_TOKEN": TOKEN,
        "BRIDGE_LARK_ENCRYPT_KEY": KEY,
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BRIDGE_KAFKA_TOPIC_PARTITIONS": "3",
        "BRIDGE_TOPIC_ROOM_CREATED": f"{prefix}.room_created",
        "BRIDGE_TOPIC_RESERVE_CONFIG_UPDATED": f"{prefix}.reserve_config_updated",
        "BRIDGE_TOPIC_THIRD_PARTY_MEETING_ROOM_EVENT": f"{prefix}.third_party",
        "BRIDGE_TOPIC_DEAD_LETTER": f"{prefix}.dead_letter",
    }
    base.update(env)
    return load_settings(base)


@dataclass
class RunningBridge:
    """A bridge app served on a real loopback port."""

    settings: Settings
    server: TestServer
    session: aiohttp.ClientSession
    platform: Platform

    @property
    def url(self) -> str:
        return str(self.server.make_url(self.settings.http_path))

    async def send(self, req: PlatformRequest) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.url, data=req.body, headers=req.headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.server.make_url(path)) as resp:
            return resp.status, await resp.text()

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if (await self.get("/readyz"))[0] == 200:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("bridge did not become ready")

    @property
    def metrics(self) -> Any:
        return self.server.app[STATE].metrics


@pytest.fixture
async def start_bridge() -> AsyncIterator[Callable[..., Any]]:
    """``await start_bridge(bootstrap, wait_ready=True, producer_factory=None, **env)`` →
    :class:`RunningBridge`; ``producer_factory(settings)`` makes the producers (fault injection)."""
    running: list[RunningBridge] = []

    async def start(
        bootstrap: str, *, wait_ready: bool = True, producer_factory: Any = None, **env: str
    ) -> RunningBridge:
        settings = bridge_settings(bootstrap, **env)
        factory = (lambda: producer_factory(settings)) if producer_factory else None
        server = TestServer(create_app(settings, producer_factory=factory), port=free_port())
        await server.start_server()
        session = aiohttp.ClientSession()
        rb = RunningBridge(settings, server, session, Platform(encrypt_key=KEY))
        running.append(rb)
        if wait_ready:
            await rb.wait_ready()
        return rb

    yield start
    for rb in running:
        await rb.session.close()
        await rb.server.close()


async def read_topic(bootstrap: str, topic: str, *, expect: int, timeout_s: float = 20.0) -> list[Any]:
    """All records of ``topic`` from the beginning; waits until at least ``expect`` arrived (and
    then a short quiet period, so that extra records would be seen too)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not parts and asyncio.get_running_loop().time() < deadline:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        quiet_until = None
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            got = [m for msgs in batch.values() for m in msgs]
            out.extend(got)
            if len(out) >= expect:
                if quiet_until is None:
                    quiet_until = asyncio.get_running_loop().time() + 1.0
                elif asyncio.get_running_loop().time() >= quiet_until:
                    break
        return out
    finally:
        await consumer.stop()
