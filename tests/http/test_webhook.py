"""The webhook through aiohttp's test client: every status, with a recording sink (no Kafka)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.delivery import Outcome
from bridge.errors import Unavailable
from bridge.inbound import InboundEvent
from bridge.settings import load_settings
from bridge_devtools.platform import Platform
from tests.support.credentials import KEY, TOKEN
from tests.support.fakes import RecordingSink
from tests.support.samples import sample_event

PATH = "/webhook/event"


def settings(**env: str):
    return load_settings({"BRIDGE_LARK_VERIFICATION_TOKEN": TOKEN, "BRIDGE_HTTP_MAX_BODY_BYTES": "4096", **env})


Client = Callable[..., Any]


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient] = []

    async def make(sink: RecordingSink, **env: str) -> TestClient:
        client = TestClient(TestServer(create_app(settings(**env), sink=sink)))
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
    (context vars merged in), one JSON object a line."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.contextvars.merge_contextvars],
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
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        req = Platform().request(sample_event())
        resp = await client.post(PATH, data=req.body, headers={**req.headers, "X-Request-Id": "req-from-the-caller"})
        assert resp.status == 200
        resp = await client.post(PATH, data=req.body, headers=req.headers)  # no X-Request-Id
        assert resp.status == 200
    inside = [e for e in logs if e["event"] == "inside delivery"]
    request = [e for e in logs if e["event"] == "request"]
    assert len(inside) == 2 and len(request) == 2 and len(sink.received) == 2
    assert inside[0]["request_id"] == request[0]["request_id"] == "req-from-the-caller"
    generated = request[1]["request_id"]
    assert inside[1]["request_id"] == generated != "req-from-the-caller"
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    library = [json.loads(line) for line in library_lines.getvalue().splitlines()]
    assert [line["request_id"] for line in library] == ["req-from-the-caller", generated]
