"""``python -m bridge_devtools.demo`` (``make demo``): the main job, end to end, on this machine.

Starts the project's local Kafka broker and ``python -m bridge serve`` (with an encrypt key),
sends the eight documented sample events as the platform would (encrypted and signed), reads the
records back from Kafka, prints them (key, partition, offset, envelope), then stops both.

With ``--long-connection`` the events come over the long connection instead
(docs/long_connection.md): the demo also starts the fake Lark platform
(:class:`bridge_devtools.lark_ws.FakeLongConnectionPlatform`), runs the bridge with
``BRIDGE_LARK_SUBSCRIPTION_MODE=long_connection`` against it, pushes the eight samples as
plaintext data frames (no token, no encryption: §5), prints each ack (code, ``biz_rt`` in ms) and
then the records as above.
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
from bridge_devtools.lark_ws import FakeLongConnectionPlatform
from bridge_devtools.platform import Platform

DEMO_TOKEN = "demo-verification-token"  # noqa: S105 - a demo value, not a secret
DEMO_KEY = "demo-encrypt-key"
TOPICS = (
    "lark.vc.room.created_v1",
    "lark.vc.reserve_config.updated_v1",
    "lark.third_party_meeting_room_event",
    "lark.vc.room.updated_v1",
    "lark.vc.room.deleted_v1",
    "lark.vc.room_level.created_v1",
    "lark.vc.room_level.updated_v1",
    "lark.vc.room_level.deleted_v1",
    "lark.bridge.dead_letter",
)
#: Records the eight samples make (the third-party sample fans out to two rooms).
EXPECTED_RECORDS = 9
#: Seconds to wait for one ack of the bridge on the long connection.
ACK_TIMEOUT_S = 10.0


def _with_token(body: dict[str, Any], token: str | None = DEMO_TOKEN) -> dict[str, Any]:
    """Put ``token`` where ``body``'s schema keeps it (schema 2.0 ``header.token``, 1.0 top-level
    ``token``; ``None`` removes it, as the long connection carries none) and a fresh event id
    (``header.event_id`` / ``uuid``, 32 hex). Changes ``body`` in place and returns it."""
    # A fresh event id per run: the documented 2.0 samples share one event_id, and the
    # bridge would rightly answer the second as a duplicate.
    target = body.get("header", body)
    if token is None:
        target.pop("token", None)
    else:
        target["token"] = token
    target["event_id" if target is not body else "uuid"] = uuid.uuid4().hex
    return body


async def _wait_ready(
    session: aiohttp.ClientSession, base: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``base + "/readyz"`` every 0.2 s until HTTP 200; raises ``RuntimeError`` after
    ``timeout_s`` seconds, or as soon as ``process`` (the bridge, when given) has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the bridge exited (code {process.returncode}) before it became ready")
        try:
            async with session.get(base + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the bridge did not become ready")


async def _read_back(bootstrap: str) -> int:
    """Read every record of :data:`TOPICS` from the start (at most 20 s, until
    :data:`EXPECTED_RECORDS` came), print each (topic, key, partition, offset, envelope) and the
    count; returns the exit code (0 when all of them were read back)."""
    consumer = AIOKafkaConsumer(
        *TOPICS, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    found = 0
    try:
        deadline = time.monotonic() + 20
        while found < EXPECTED_RECORDS and time.monotonic() < deadline:
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
    return 0 if found == EXPECTED_RECORDS else 1


async def _exercise(base: str, path: str, bootstrap: str) -> int:
    """The webhook run: handshake, the eight samples encrypted and signed, then :func:`_read_back`."""
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
    return await _read_back(bootstrap)


def _bridge_env(bootstrap: str, port: int, **settings: str) -> dict[str, str]:
    """This process's environment without any ``BRIDGE_*`` variable, plus the demo's bridge
    settings (Kafka ``bootstrap``, HTTP on ``127.0.0.1:port``, console logs) and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        BRIDGE_HTTP_HOST="127.0.0.1",
        BRIDGE_HTTP_PORT=str(port),
        BRIDGE_LOG_FORMAT="console",
        **settings,
    )
    return env


def _start_bridge(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python -m bridge serve`` with ``env`` (its output goes to this process's)."""
    return subprocess.Popen([sys.executable, "-m", "bridge", "serve"], env=env)


def _stop_bridge(bridge: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then at most 30 s for a clean exit (printed), else SIGKILL. Blocks: call it off
    the event loop while that loop serves the bridge (the fake platform's close handshake)."""
    bridge.send_signal(signal.SIGTERM)
    try:
        code = bridge.wait(30)
        print(f"bridge stopped (exit code {code})")
    except subprocess.TimeoutExpired:
        bridge.kill()


async def _exercise_long_connection(bootstrap: str, port: int) -> int:
    """The long-connection run: the fake platform, the bridge connected to it, the eight samples
    pushed as plaintext frames (each ack printed: code, ``biz_rt`` in ms), then
    :func:`_read_back`; returns the exit code (0 when every ack is 200 and all records came)."""
    fake = FakeLongConnectionPlatform()
    await fake.start()
    try:
        env = _bridge_env(
            bootstrap,
            port,
            BRIDGE_LARK_SUBSCRIPTION_MODE="long_connection",
            BRIDGE_LARK_APP_ID=fake.app_id,
            BRIDGE_LARK_APP_SECRET=fake.app_secret,
            BRIDGE_LARK_DOMAIN=fake.url,
        )
        bridge = _start_bridge(env)
        try:
            print(f"fake Lark platform on {fake.url}; bridge on the long connection (kafka {bootstrap})", flush=True)
            async with aiohttp.ClientSession() as session:
                # Ready with the long connection alone = delivery ready and the connection open.
                await _wait_ready(session, f"http://127.0.0.1:{port}", 60, bridge)
            codes = []
            for kind in SAMPLE_TYPES:
                payload = json.dumps(_with_token(sample(kind), None), ensure_ascii=False).encode()
                ack = await fake.wait_ack(await fake.push(payload), timeout_s=ACK_TIMEOUT_S)
                codes.append(ack.code)
                print(f"{kind} -> ack code={ack.code} biz_rt={ack.header('biz_rt')} ms")
            exit_code = await _read_back(bootstrap)
            return exit_code if all(code == 200 for code in codes) else 1
        finally:
            await asyncio.to_thread(_stop_bridge, bridge)
    finally:
        await fake.close()


def run_demo(*, kafka_version: str | None = None, long_connection: bool = False) -> int:
    """Run the demo (webhook, or the long connection when ``long_connection``); returns the exit
    code (0 when all nine records were read back and, on the long connection, every ack was 200)."""
    broker = LocalBroker(version=kafka_version)
    print(f"starting Kafka {broker.version} (first run downloads it from Maven Central)...", flush=True)
    broker.start(timeout_s=180)
    try:
        port = free_port()
        if long_connection:
            return asyncio.run(_exercise_long_connection(broker.bootstrap_servers, port))
        env = _bridge_env(
            broker.bootstrap_servers, port, BRIDGE_LARK_VERIFICATION_TOKEN=DEMO_TOKEN, BRIDGE_LARK_ENCRYPT_KEY=DEMO_KEY
        )
        bridge = _start_bridge(env)
        try:
            url = f"http://127.0.0.1:{port}/webhook/event"
            print(f"bridge listening on {url} (kafka {broker.bootstrap_servers})", flush=True)
            return asyncio.run(_exercise(f"http://127.0.0.1:{port}", "/webhook/event", broker.bootstrap_servers))
        finally:
            _stop_bridge(bridge)
    finally:
        broker.stop()
        broker.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m bridge_devtools.demo [--kafka-version V] [--long-connection]``; returns the exit code."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bridge_devtools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--kafka-version", default=None, help="Kafka version of the local broker")
    parser.add_argument(
        "--long-connection",
        action="store_true",
        help="deliver over the long connection from a fake Lark platform instead of the webhook",
    )
    args = parser.parse_args(argv)
    return run_demo(kafka_version=args.kafka_version, long_connection=args.long_connection)


if __name__ == "__main__":
    sys.exit(main())
