"""Integration fixtures: the project's own Kafka broker (bridge_devtools.broker) and bridge apps
on a real HTTP port wired to it (tests.support.bridges); records are read back with
tests.support.kafka.read_topic.

These tests are never skipped: without Java or the broker jars they fail (CI installs both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bridge.app import create_app
from bridge_devtools.broker import LocalBroker, free_port, free_ports
from bridge_devtools.platform import Platform
from bridge_devtools.registry import LocalRegistry
from tests.support.bridges import RunningBridge, bridge_settings
from tests.support.credentials import KEY

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """One broker for the session (version: BRIDGE_DEV_KAFKA_VERSION or the pinned default)."""
    b = LocalBroker()
    b.start(timeout_s=120)
    yield b
    b.stop()
    b.cleanup()


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    """One Apicurio Registry (in memory, BACKWARD) for the session; tests use subjects of their own."""
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture
def spare_broker() -> Iterator[LocalBroker]:
    """A broker of its own, NOT started: for absent-at-start and restart tests."""
    port, controller_port = free_ports(2)
    b = LocalBroker(port=port, controller_port=controller_port)
    yield b
    b.stop()
    b.cleanup()


@pytest.fixture
async def start_bridge() -> AsyncIterator[Callable[..., Any]]:
    """``await start_bridge(bootstrap, wait_ready=True, producer_factory=None, consumer_factory=None,
    tracer_provider=None, **env)`` → :class:`RunningBridge`; ``producer_factory(settings)`` /
    ``consumer_factory(settings)`` make the producers / the dedup feed's consumers (fault
    injection); ``tracer_provider``: an OpenTelemetry SDK provider (tracing tests)."""
    running: list[RunningBridge] = []

    async def start(
        bootstrap: str,
        *,
        wait_ready: bool = True,
        producer_factory: Any = None,
        consumer_factory: Any = None,
        tracer_provider: Any = None,
        **env: str,
    ) -> RunningBridge:
        settings = bridge_settings(bootstrap, **env)
        factory = (lambda: producer_factory(settings)) if producer_factory else None
        consumers = (lambda: consumer_factory(settings)) if consumer_factory else None
        app = create_app(
            settings, producer_factory=factory, consumer_factory=consumers, tracer_provider=tracer_provider
        )
        server = TestServer(app, port=free_port())
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
