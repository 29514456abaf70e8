"""The webhook through aiohttp's test client: every status, with a recording sink (no Kafka)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.delivery import Outcome
from bridge.errors import Unavailable
from bridge.inbound import InboundEvent
from bridge.logs import add_request_id
from bridge.server import runner_options
from bridge.settings import load_settings
from bridge.state import STATE
from bridge_devtools.platform import Platform
from tests.support.credentials import KEY, TOKEN
from tests.support.fakes import RecordingSink
from tests.support.samples import sample_event

PATH = "/webhook/event"


class ServedLikeProduction(TestServer):
    """aiohttp's TestServer, but run with the production runner's options (``runner_options``):
    TestServer alone cancels handlers on disconnect and inflates compressed bodies, which the
    bridge's server does not."""

    def __init__(self, app: web.Application, *, options: dict[str, Any]) -> None:
        super().__init__(app)
        self._options = options

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return web.AppRunner(self.app, **{**kwargs, **self._options})


def settings(**env: str):
    return load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": TOKEN, "BRIDGE_HTTP_MAX_BODY_BYTES": "4096", **env})


Client = Callable[..., Any]


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient] = []

    async def make(sink: RecordingSink, **env: str) -> TestClient:
        s = settings(**env)
        client = TestClient(ServedLikeProduction(create_app(s, sink=sink), options=runner_options(s)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def post(client: TestClient, req: Any) -> tuple[int, Any, Any]:
    resp = await client.post(PATH, data=req.body, headers=req.headers)
    return resp.status, await resp.json(), resp.headers


async def test_encrypted_event_is_delivered_and_answered_success(make_client: Any) -> None:
    sink = RecordingSink()
    client = await make_client(sink, BRIDGE_LARK_ENCRYPT_KEY=KEY)
    status, body, _ = await post(client, Platform(encrypt_key=KEY).request(sample_event()))
    assert (status, body) == (200, {"msg": "success"})
    assert json.loads(sink.received[0].payload) == sample_event()


async def test_plain_event_with_token(make_client: Any) -> None:
    sink = RecordingSink()
    client = await make_client(sink)
    status, body, _ = await post(client, Platform().request(sample_event()))
    assert (status, body) == (200, {"msg": "success"}) and len(sink.received) == 1


@pytest.mark.parametrize("encrypted", [False, True])
async def test_handshake_answers_challenge_without_touching_the_sink(make_client: Any, encrypted: bool) -> None:
    sink = RecordingSink()
    sink.fail = Unavailable("broker_unavailable")  # Kafka "down": the handshake must not care
    env = {"BRIDGE_LARK_ENCRYPT_KEY": KEY} if encrypted else {}
    client = await make_client(sink, **env)
    req = Platform(encrypt_key=KEY if encrypted else None).handshake(TOKEN, "ch-42")
    status, body, headers = await post(client, req)
    assert (status, body) == (200, {"challenge": "ch-42"})
    assert headers["Content-Type"].startswith("application/json")
    assert sink.received == []


async def test_body_over_limit_is_413(make_client: Any) -> None:
    client = await make_client(RecordingSink())
    resp = await client.post(PATH, data=b"{" + b" " * 5000 + b"}")
    assert resp.status == 413 and await resp.json() == {"msg": "request body too large"}


async def test_chunked_body_over_limit_is_413(make_client: Any) -> None:
    client = await make_client(RecordingSink())

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    resp = await client.post(PATH, data=chunks())
    assert resp.status == 413


async def test_not_json_is_400(make_client: Any) -> None:
    client = await make_client(RecordingSink())
    for data in (b"nope", b"[]", b""):
        resp = await client.post(PATH, data=data)
        assert resp.status == 400 and await resp.json() == {"msg": "bad request"}


@pytest.mark.parametrize(
    "build",
    [
        lambda p: p.request(sample_event(), sign_key="wrong"),
        lambda p: p.request(sample_event(), signed=False),
        lambda p: p.request(sample_event(token="wrong-token")),
        lambda p: p.request(sample_event(), timestamp="1000000000"),
        lambda p: Platform().request(sample_event()),
    ],
    ids=["bad-signature", "unsigned-event", "wrong-token", "stale", "plaintext-with-key"],
)
async def test_auth_failures_are_401_with_a_fixed_body(make_client: Any, build: Any) -> None:
    sink = RecordingSink()
    client = await make_client(sink, BRIDGE_LARK_ENCRYPT_KEY=KEY)
    status, body, _ = await post(client, build(Platform(encrypt_key=KEY)))
    assert (status, body) == (401, {"msg": "unauthorized"})
    assert sink.received == []


async def test_undelivered_event_is_503_with_retry_after(make_client: Any) -> None:
    sink = RecordingSink()
    sink.fail = Unavailable("publish_timeout")
    client = await make_client(sink)
    status, body, headers = await post(client, Platform().request(sample_event()))
    assert status == 503 and body == {"msg": "temporarily unavailable, retry later"}
    assert int(headers["Retry-After"]) > 0


async def test_unexpected_error_is_500_without_details(make_client: Any) -> None:
    sink = RecordingSink()
    sink.fail = RuntimeError("boom with details")
    client = await make_client(sink)
    status, body, _ = await post(client, Platform().request(sample_event()))
    assert (status, body) == (500, {"msg": "internal error"})


async def test_health_and_readiness_without_kafka_sink(make_client: Any) -> None:
    client = await make_client(RecordingSink())
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    assert (await client.get(PATH)).status == 405


async def test_custom_path(make_client: Any) -> None:
    client = await make_client(RecordingSink(), BRIDGE_HTTP_PATH="/lark/hook")
    assert (await client.post("/lark/hook", data=Platform().handshake(TOKEN, "x").body)).status == 200
    assert (await client.post(PATH, data=b"{}")).status == 404


class LoggingSink(RecordingSink):
    """Logs a line through structlog and one through a stdlib library logger from inside the
    delivery, as the Kafka delivery and aiokafka do."""

    async def deliver(self, event: InboundEvent, *, received_ms: int, deadline_s: float | None = None) -> Outcome:
        structlog.get_logger("x").info("inside delivery")
        logging.getLogger("aiokafka").warning("library line inside delivery")
        return await super().deliver(event, received_ms=received_ms, deadline_s=deadline_s)


@pytest.fixture
def library_lines() -> Iterator[io.StringIO]:
    """What the ``aiokafka`` stdlib logger writes, rendered as bridge.logs renders foreign records
    (the request id added), one JSON object a line."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[add_request_id],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield buf
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_request_id_is_bound_to_every_line_logged_during_the_request(
    make_client: Any, library_lines: io.StringIO
) -> None:
    sink = LoggingSink()
    client = await make_client(sink)
    request_logger = logging.getLogger("bridge.request")  # the request line is built only when INFO is on
    level = request_logger.level
    request_logger.setLevel(logging.INFO)
    with structlog.testing.capture_logs(processors=[add_request_id]) as logs:
        req = Platform().request(sample_event())
        resp = await client.post(PATH, data=req.body, headers={**req.headers, "X-Request-Id": "req-from-the-caller"})
        assert resp.status == 200
        resp = await client.post(PATH, data=req.body, headers=req.headers)  # no X-Request-Id
        assert resp.status == 200
        request_logger.setLevel(logging.WARNING)
        resp = await client.post(PATH, data=req.body, headers=req.headers)  # a duplicate, line filtered out
        assert resp.status == 200
    request_logger.setLevel(level)
    inside = [e for e in logs if e["event"] == "inside delivery"]
    request = [e for e in logs if e["event"] == "request"]
    assert len(inside) == 3 and len(request) == 2 and len(sink.received) == 3
    assert inside[0]["request_id"] == request[0]["request_id"] == "req-from-the-caller"
    generated = request[1]["request_id"]
    assert inside[1]["request_id"] == generated != "req-from-the-caller"
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", generated)
    library = [json.loads(line) for line in library_lines.getvalue().splitlines()]
    assert [line["request_id"] for line in library][:2] == ["req-from-the-caller", generated]


# ---- hostile and unlucky clients ---------------------------------------------------------------


async def metric_value(client: TestClient, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    text = await (await client.get("/metrics")).text()
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(name + "{"):
            head, _, value = line.rpartition(" ")
            got = "{" + ",".join(sorted(head[len(name) + 1 : -1].split(","))) + "}"
            if name + got == want:
                return float(value)
    return 0.0


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-unknown"])
async def test_a_content_encoding_is_415_and_never_inflated(make_client: Any, encoding: str) -> None:
    sink = RecordingSink()
    client = await make_client(sink)
    body = gzip.compress(Platform().request(sample_event()).body) if encoding == "gzip" else b"\x78\x9c"
    resp = await client.post(PATH, data=body, headers={"Content-Encoding": encoding})
    assert resp.status == 415 and await resp.json() == {"msg": "unsupported content encoding"}
    assert sink.received == []
    resp = await client.post(
        PATH, data=Platform().request(sample_event()).body, headers={"Content-Encoding": "identity"}
    )
    assert resp.status == 200


async def raw_request(
    client: TestClient, head: bytes, body: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(head + body)
    await writer.drain()
    return reader, writer


def post_head(length: int) -> bytes:
    return f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()


async def test_a_client_hanging_up_mid_body_is_499_not_a_server_error(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(RecordingSink())
    _, writer = await raw_request(client, post_head(1000), b"{" + b" " * 99)
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if await metric_value(client, "bridge_requests_total", outcome="client_disconnected", status="499"):
            break
        await asyncio.sleep(0.02)
    assert await metric_value(client, "bridge_requests_total", outcome="client_disconnected", status="499") == 1
    assert await metric_value(client, "bridge_requests_total", outcome="error", status="500") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_that_misses_the_deadline_is_408_in_time(make_client: Any) -> None:
    client = await make_client(RecordingSink(), BRIDGE_ANSWER_DEADLINE_S="0.3")
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await raw_request(client, post_head(1000), b"{")
    status_line = await asyncio.wait_for(reader.readline(), 5)
    elapsed = loop.time() - started
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 408") and 0.25 <= elapsed < 1.0


async def test_body_bytes_in_flight_are_counted_as_they_arrive_bounded_and_released(make_client: Any) -> None:
    sink = RecordingSink()
    # Budget 128 KiB: large bodies (declared > 4 KiB, or chunked) may hold 96 KiB of it.
    client = await make_client(
        sink,
        BRIDGE_HTTP_MAX_BODY_BYTES="65536",
        BRIDGE_HTTP_MAX_BODY_BYTES_IN_FLIGHT="131072",
        BRIDGE_ANSWER_DEADLINE_S="0.5",
    )
    valid = Platform().request(sample_event()).body
    assert len(valid) <= 4096  # a platform event is a small body
    # Declared 64 KiB each but sent one byte: they hold one byte each, not the budget.
    idle = [await raw_request(client, post_head(65536), b"{") for _ in range(8)]
    await asyncio.sleep(0.1)
    assert (await client.post(PATH, data=valid)).status == 200
    # Two large bodies sent 48 KiB each and stalled: the large share is full ...
    stalled = [await raw_request(client, post_head(65536), b"{" + b" " * (49152 - 9)) for _ in range(2)]
    await asyncio.sleep(0.1)
    late = await raw_request(client, post_head(65536), b"{" + b" " * 999)
    assert (await asyncio.wait_for(late[0].readline(), 5)).startswith(b"HTTP/1.1 503")
    late[1].close()
    # ... but small bodies still get through on the reserve ...
    assert (await client.post(PATH, data=Platform().request(sample_event()).body)).status == 200
    # ... until the whole budget is full.
    small_stalls = [await raw_request(client, post_head(4096), b"{" + b" " * 4000) for _ in range(8)]
    await asyncio.sleep(0.1)
    resp = await client.post(PATH, data=valid)
    assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
    for reader, writer in idle + stalled + small_stalls:  # their deadline passes: 408, budget free
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 408")
        writer.close()
    resp = await client.post(PATH, data=Platform().request(sample_event()).body)
    assert resp.status == 200 and len(sink.received) == 3
    assert client.app[STATE].body_bytes_in_flight == 0


@pytest.fixture
def request_lines_on() -> Iterator[None]:
    """The ``bridge.request`` logger at INFO (as ``BRIDGE_LOG_LEVEL=INFO`` sets it): the request's
    line is built only then."""
    logger = logging.getLogger("bridge.request")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("request_lines_on")
async def test_payload_derived_log_fields_are_capped(make_client: Any) -> None:
    sink = RecordingSink()
    client = await make_client(sink, BRIDGE_HTTP_MAX_BODY_BYTES="65536")
    long_id = "e" * 20_000
    with structlog.testing.capture_logs() as logs:
        resp = await client.post(PATH, data=Platform().request(sample_event(event_id=long_id)).body)
    assert resp.status == 200 and sink.received[0].event_id == long_id  # the event keeps it
    [line] = [e for e in logs if e["event"] == "request"]
    assert len(line["event_id"]) == 128 and line["event_id"].endswith("…")
