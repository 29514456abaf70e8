"""The passthrough: the ceiling's aiohttp app whose handler publishes the raw body — our floor.

``python -m benchmarks.passthrough PORT`` (host 127.0.0.1, POST to any path; ``GET /readyz``)
with the bridge's ``BRIDGE_*`` environment (the runner gives it the very environment it gives
``python -m bridge serve``) and ``PASSTHROUGH_TOPIC`` (default ``bench.passthrough``; the runner
creates it with the partition count of the bridge's topics).

What the chosen libraries cost by themselves: the ceiling's app (``benchmarks/ceiling.py``: aiohttp
on the bridge's event loop, ``BRIDGE_EVENT_LOOP``, response ``{"msg":"success"}``, no access log) plus the bridge's own
aiokafka producer, built by :func:`bridge.kafka.build_producer` from
:func:`bridge.settings.load_settings`, so that its configuration (idempotent, ``acks=all``,
linger, compression, request size and timeout, client id, security) is the bridge's by
construction. Per request: read the body, send it as one record, wait for the broker's ack, answer
200; 503 when the send fails. No signature check, no decryption, no decoding, no dedup, no
record headers, no metrics, no publish deadline (a send without an ack waits for the producer's
own request timeout; only overload steps, which fail anyway, get there). The producer is started
in an aiohttp cleanup context, before the socket opens, and waits for the topic's metadata, so
``/readyz`` answers 200 as soon as anything does.

The record key. The bridge keys a record by its room id, which sits inside the encrypted
payload (the body is ``{"encrypt":"<base64>"}``) and cannot be read without decrypting. Instead
the key is a fixed slice of the raw body: the first :data:`KEY_LEN` (36) characters of the
``encrypt`` string, as long as the benchmark's room ids (``omm_`` + 32 hex digits). They are the
base64 of the request's random IV and the start of its ciphertext, so the key is deterministic per
request, costs one slice, and spreads evenly over the partitions (the producer's default
partitioner, murmur2 of the key) as the room ids do. A body that does not start with
``{"encrypt":"`` is sent without a key (the producer picks the partition).

Process set-up as the bridge's: the open-file limit is raised to its hard limit (one descriptor per
client connection) and the listen backlog is the bridge's; the event loop is the one
``BRIDGE_EVENT_LOOP`` names (``bridge.server.loop_factory``).

Differences in what reaches Kafka: one record per request (the bridge writes one per listed room of
a third-party event: 1-3), whose value is the encrypted body (about 4/3 of the event's JSON; the
bridge's value is the decrypted event in a CloudEvents envelope), without headers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web
from aiokafka import AIOKafkaProducer

from bridge.kafka import build_producer
from bridge.server import LISTEN_BACKLOG, loop_factory, raise_open_file_limit
from bridge.settings import Settings, SettingsError, load_settings

TOPIC_ENV: Final = "PASSTHROUGH_TOPIC"
DEFAULT_TOPIC: Final = "bench.passthrough"
#: Length of the record key, in bytes: that of the benchmark's room ids (``omm_`` + 32 hex digits).
KEY_LEN: Final = 36
_ENCRYPTED: Final = b'{"encrypt":"'  # how an encrypted request's compact JSON body starts
_KEY_START: Final = len(_ENCRYPTED)
_KEY_END: Final = _KEY_START + KEY_LEN
_OK: Final = b'{"msg":"success"}'
_UNAVAILABLE: Final = b'{"msg":"unavailable"}'


def record_key(body: bytes) -> bytes | None:
    """The record key of a request body: the start of its ``encrypt`` string (see the module doc)."""
    return body[_KEY_START:_KEY_END] if body.startswith(_ENCRYPTED) else None


def create_app(settings: Settings, topic: str) -> web.Application:
    """The ceiling's app shape with a handler that publishes the body to ``topic`` and awaits the ack."""
    producer: AIOKafkaProducer | None = None  # set by the cleanup context (needs the running loop)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        assert producer is not None
        try:
            ack = await producer.send(topic, body, key=record_key(body))
            await ack
        except Exception:
            return web.Response(status=503, body=_UNAVAILABLE, content_type="application/json", charset="utf-8")
        return web.Response(body=_OK, content_type="application/json", charset="utf-8")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(body=_OK, content_type="application/json", charset="utf-8")

    async def producer_ctx(app: web.Application) -> AsyncIterator[None]:
        nonlocal producer
        producer = build_producer(settings)
        await producer.start()
        try:
            await producer.partitions_for(topic)  # the topic's metadata, before the first request
            yield
        finally:
            await producer.stop()

    app = web.Application()
    app.cleanup_ctx.append(producer_ctx)
    app.router.add_get("/readyz", ready)
    app.router.add_post("/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.passthrough",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("port", type=int, help="TCP port on 127.0.0.1")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"passthrough: {exc}", file=sys.stderr)
        return 2
    topic = os.environ.get(TOPIC_ENV) or DEFAULT_TOPIC
    raise_open_file_limit()  # as the bridge's serve does: a thousand client connections need descriptors
    loop = loop_factory(settings.event_loop)()  # the bridge's event loop (BRIDGE_EVENT_LOOP)
    web.run_app(
        create_app(settings, topic),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=loop,
        backlog=LISTEN_BACKLOG,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
