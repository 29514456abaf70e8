"""Shared fixtures: the platform-side request builder of the test app (secrets: tests.support.credentials)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from bridge_devtools.platform import Platform
from tests.support.credentials import KEY


@pytest.fixture
def platform() -> Platform:
    """The platform as configured with the current encrypt key."""
    return Platform(encrypt_key=KEY)


@pytest.fixture(scope="session", autouse=True)
def _close_the_sdk_module_loop() -> Iterator[None]:
    """The official SDK's ``lark_oapi.ws.client`` makes an event loop when it is imported (it is,
    by ``lark_oapi.ws``'s package import, wherever a test uses the SDK's ``Frame``) and never
    closes it: close it at the end, so that the run ends without a ResourceWarning."""
    yield
    client = sys.modules.get("lark_oapi.ws.client")
    loop = getattr(client, "loop", None)
    if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_running() and not loop.is_closed():
        loop.close()
