"""A bridge app served on a real loopback port, wired to a real broker (integration tests)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp.test_utils import TestServer

from bridge.app import STATE
from bridge.settings import Settings, load_settings
from bridge_devtools.platform import Platform, PlatformRequest
from tests.support.credentials import KEY, TOKEN
from tests.support.processes import bridge_env
from tests.support.waits import wait_status

#: The name after ``{prefix}.`` of each topic a test deployment uses, by its ``BRIDGE_TOPIC_*``.
TOPIC_SUFFIXES: Final = {
    "BRIDGE_TOPIC_ROOM_CREATED": "room",
    "BRIDGE_TOPIC_ROOM_UPDATED": "room_updated",
    "BRIDGE_TOPIC_ROOM_DELETED": "room_deleted",
    "BRIDGE_TOPIC_ROOM_LEVEL_CREATED": "level_created",
    "BRIDGE_TOPIC_ROOM_LEVEL_UPDATED": "level_updated",
    "BRIDGE_TOPIC_ROOM_LEVEL_DELETED": "level_deleted",
    "BRIDGE_TOPIC_RESERVE_CONFIG_UPDATED": "cfg",
    "BRIDGE_TOPIC_THIRD_PARTY_MEETING_ROOM_EVENT": "3p",
    "BRIDGE_TOPIC_DEAD_LETTER": "dlq",
}


def topic_settings(prefix: str) -> dict[str, str]:
    """``BRIDGE_TOPIC_*`` naming every topic ``{prefix}.room|room_updated|…|cfg|3p|dlq``
    (:data:`TOPIC_SUFFIXES`; replicas of one deployment share them)."""
    return {name: f"{prefix}.{suffix}" for name, suffix in TOPIC_SUFFIXES.items()}


def bridge_settings(bootstrap: str, **env: str) -> Settings:
    """Settings for a test bridge with topics unique to the test (3 partitions)."""
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    base = {
        "BRIDGE_LARK_VERIFICATION_TOKEN": TOKEN,
        "BRIDGE_LARK_ENCRYPT_KEY": KEY,
        "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "BRIDGE_KAFKA_TOPIC_PARTITIONS": "3",
        "BRIDGE_TOPIC_ROOM_CREATED": f"{prefix}.room_created",
        "BRIDGE_TOPIC_ROOM_UPDATED": f"{prefix}.room_updated",
        "BRIDGE_TOPIC_ROOM_DELETED": f"{prefix}.room_deleted",
        "BRIDGE_TOPIC_ROOM_LEVEL_CREATED": f"{prefix}.room_level_created",
        "BRIDGE_TOPIC_ROOM_LEVEL_UPDATED": f"{prefix}.room_level_updated",
        "BRIDGE_TOPIC_ROOM_LEVEL_DELETED": f"{prefix}.room_level_deleted",
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
        await wait_status(
            self, "/readyz", 200, timeout_s=timeout_s, interval_s=0.1, message="bridge did not become ready"
        )

    @property
    def metrics(self) -> Any:
        return self.server.app[STATE].metrics


def spawn_bridge(bootstrap: str, port: int, prefix: str, log_file: Any, **extra: str) -> subprocess.Popen[str]:
    """``python -m bridge serve`` on ``127.0.0.1:port`` with the topics of :func:`topic_settings`,
    its output (JSON log lines) to ``log_file``; ``extra`` settings override the defaults."""
    env = bridge_env(
        BRIDGE_LARK_VERIFICATION_TOKEN=TOKEN,
        BRIDGE_LARK_ENCRYPT_KEY=KEY,
        BRIDGE_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        BRIDGE_HTTP_HOST="127.0.0.1",
        BRIDGE_HTTP_PORT=str(port),
        BRIDGE_KAFKA_TOPIC_PARTITIONS="3",
        **topic_settings(prefix),
        BRIDGE_SHUTDOWN_TIMEOUT_S="10",
        BRIDGE_LOG_LEVEL="DEBUG",
    )
    env.update(extra)
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True
    )
