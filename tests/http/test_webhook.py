"""The webhook through aiohttp's test client: every status, with a recording sink (no Kafka)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.delivery import Outcome
from bridge.devtools.platform import Platform
from bridge.errors import Unavailable
from bridge.inbound import InboundEvent
from bridge.samples import sample
from bridge.settings import load_settings
from tests.conftest import KEY, TOKEN

PATH = "/webhook/event"


class RecordingSink:
    """Records what reaches the next stage; can be told to fail or to hang."""

    def __init__(self) -> None:
        self.received: list[InboundEvent] = []
        self.fail: Exception | None = None
        self.delay_s = 0.0

    async def deliver(self, event: InboundEvent, *, received_ms: int) -> Outcome:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        self.received.append(event)
        return Outcome("published", records=[("t", 0, 1)])


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


def room_event(token: str = TOKEN) -> dict[str, Any]:
    body = sample("vc.room.created_v1")
    body["header"]["token"] = token
    return body


async def post(client: TestClient, req: Any) -> tuple[int, Any, Any]:
    resp = await client.post(PATH, data=req.body, headers=req.headers)
    return resp.status, await resp.json(), resp.headers


async def test_encrypted_event_is_delivered_and_answered_success(make_client: Any) -> None:
    sink = RecordingSink()
    client = await make_client(sink, BRIDGE_LARK_ENCRYPT_KEY=KEY)
    status, body, _ = await post(client, Platform(encrypt_key=KEY).request(room_event()))
    assert (status, body) == (200, {"msg": "success"})
    assert json.loads(sink.received[0].payload) == room_event()


async def test_plain_event_with_token(make_client: Any) -> None:
    sink = RecordingSink()
    client = await make_client(sink)
    status, body, _ = await post(client, Platform().request(room_event()))
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
        lambda p: p.request(room_event(), sign_key="wrong"),
        lambda p: p.request(room_event(), signed=False),
        lambda p: p.request(room_event("wrong-token")),
        lambda p: p.request(room_event(), timestamp="1000000000"),
        lambda p: Platform().request(room_event()),
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
    status, body, headers = await post(client, Platform().request(room_event()))
    assert status == 503 and body == {"msg": "temporarily unavailable, retry later"}
    assert int(headers["Retry-After"]) > 0


async def test_unexpected_error_is_500_without_details(make_client: Any) -> None:
    sink = RecordingSink()
    sink.fail = RuntimeError("boom with details")
    client = await make_client(sink)
    status, body, _ = await post(client, Platform().request(room_event()))
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
