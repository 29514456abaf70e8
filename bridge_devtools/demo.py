"""``python -m bridge_devtools.demo`` (``make demo``): the main job, end to end, on this machine.

Starts the project's local Kafka broker and ``python -m bridge serve`` (with an encrypt key),
sends the three documented sample events as the platform would (encrypted and signed), reads the
records back from Kafka, prints them (key, partition, offset, envelope), then stops both.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer

from bridge.samples import SAMPLE_TYPES, sample
from bridge_devtools.broker import LocalBroker, free_port
from bridge_devtools.platform import Platform

DEMO_TOKEN = "demo-verification-token"  # noqa: S105 - a demo value, not a secret
DEMO_KEY = "demo-encrypt-key"
TOPICS = (
    "lark.vc.room.created_v1",
    "lark.vc.reserve_config.updated_v1",
    "lark.third_party_meeting_room_event",
    "lark.bridge.dead_letter",
)


def _with_token(body: dict[str, Any]) -> dict[str, Any]:
    # A fresh delivery id per run: the two documented 2.0 samples share one event_id, and the
    # bridge would rightly answer the second as a duplicate.
    if "header" in body:
        body["header"]["token"] = DEMO_TOKEN
        body["header"]["event_id"] = uuid.uuid4().hex
    else:
        body["token"] = DEMO_TOKEN
        body["uuid"] = uuid.uuid4().hex
    return body


async def _wait_ready(session: aiohttp.ClientSession, base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with session.get(base + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the bridge did not become ready")


async def _exercise(base: str, path: str, bootstrap: str) -> int:
    platform = Platform(encrypt_key=DEMO_KEY)
    async with aiohttp.ClientSession() as session:
        await _wait_ready(session, base, 60)
        req = platform.handshake(DEMO_TOKEN, "demo-challenge")
        async with session.post(base + path, data=req.body, headers=req.headers) as resp:
            print(f"handshake -> {resp.status} {await resp.text()}")
        for kind in SAMPLE_TYPES:
            req = platform.request(_with_token(sample(kind)))
            async with session.post(base + path, data=req.body, headers=req.headers) as resp:
                print(f"{kind} -> {resp.status} {await resp.text()}")
    consumer = AIOKafkaConsumer(
        *TOPICS, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    found = 0
    try:
        deadline = time.monotonic() + 20
        while found < 4 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                for m in msgs:
                    found += 1
                    key = m.key.decode() if m.key else None
                    print(f"\n--- topic={m.topic} key={key} partition={m.partition} offset={m.offset}")
                    print(json.dumps(json.loads(m.value), indent=2, ensure_ascii=False))
    finally:
        await consumer.stop()
    print(f"\n{found} records read back from Kafka")
    return 0 if found == 4 else 1


def run_demo(*, kafka_version: str | None = None) -> int:
    """Run the demo; returns the exit code (0 when all four records were read back)."""
    broker = LocalBroker(version=kafka_version)
    print(f"starting Kafka {broker.version} (first run downloads it from Maven Central)...", flush=True)
    broker.start(timeout_s=180)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_LARK_VERIFICATION_TOKEN=DEMO_TOKEN,
        BRIDGE_LARK_ENCRYPT_KEY=DEMO_KEY,
        BRIDGE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        BRIDGE_HTTP_HOST="127.0.0.1",
        BRIDGE_HTTP_PORT=str(port),
        BRIDGE_LOG_FORMAT="console",
    )
    bridge = subprocess.Popen([sys.executable, "-m", "bridge", "serve"], env=env)
    try:
        url = f"http://127.0.0.1:{port}/webhook/event"
        print(f"bridge listening on {url} (kafka {broker.bootstrap_servers})", flush=True)
        return asyncio.run(_exercise(f"http://127.0.0.1:{port}", "/webhook/event", broker.bootstrap_servers))
    finally:
        bridge.send_signal(signal.SIGTERM)
        try:
            code = bridge.wait(30)
            print(f"bridge stopped (exit code {code})")
        except subprocess.TimeoutExpired:
            bridge.kill()
        broker.stop()
        broker.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m bridge_devtools.demo [--kafka-version V]``; returns the exit code."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bridge_devtools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--kafka-version", default=None, help="Kafka version of the local broker")
    args = parser.parse_args(argv)
    return run_demo(kafka_version=args.kafka_version)


if __name__ == "__main__":
    sys.exit(main())
