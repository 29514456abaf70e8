"""The fake long-connection platform is faithful: the official SDK's own client
(``lark_oapi.ws.Client``, run as ``tests/support/sdk_ws_client.py`` in a subprocess) works
against :class:`bridge_devtools.lark_ws.FakeLongConnectionPlatform` as docs/long_connection.md
describes it (test plan §9.5 item 2) — before the fake is used to test the bridge.

Checked: the endpoint call's body (§1), the connection and its pings with the URL's
``service_id`` (§4), a pong's ``ClientConfig`` changing the ping cadence (§4), the ack of a
pushed event in the §6 shape (200 with ``biz_rt``, 500 without), a split message acked once
(§5), reconnection through the retryable failures of §1/§2 with a new endpoint call (§7), and
the client errors on which the SDK gives up (§1, §2).

No Kafka broker is needed. Each SDK start costs about 3 s (importing ``lark_oapi``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import websockets
from lark_oapi.ws.pb.pbbp2_pb2 import Frame as SdkFrame

from bridge.samples import sample
from bridge_devtools.lark_ws import (
    BAD_CREDENTIALS_CODE,
    BAD_TICKET_AUTH_CODE,
    Ack,
    FakeLongConnectionPlatform,
    sdk_frame,
)
from bridge_devtools.platform import compact
from tests.support.processes import REPO_ROOT
from tests.support.sdk_ws_client import EVENT_LINE, FAIL_PREFIX, TYPED_LINE
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

ROOM_CREATED = "vc.room.created_v1"
#: Long enough for the SDK to import lark_oapi, call the endpoint and connect on a busy machine.
CONNECT_TIMEOUT_S = 20.0
#: Sent in every pong of the cadence test: ping every 1 s instead of the endpoint's 2 s.
FAST_PINGS = {"ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0, "PingInterval": 1}


@dataclass
class SdkProcess:
    """The SDK client subprocess and the lines it has printed so far (stdout and stderr)."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        """The last lines printed, for failure messages."""
        return "\n".join(self.lines[-60:])

    def typed(self) -> list[tuple[str, str, Any]]:
        """``(event class, event_id, event as JSON)`` of each event a typed handler ran for."""
        prefix = TYPED_LINE + " "
        out = []
        for line in self.lines:
            if line.startswith(prefix):
                cls, event_id, typed = line[len(prefix) :].split(" ", 2)
                out.append((cls, event_id, json.loads(typed)))
        return out

    def events(self) -> list[str]:
        """The ``event_id`` of each event its handler ran for, in order."""
        prefix = EVENT_LINE + " "
        return [line[len(prefix) :] for line in self.lines if line.startswith(prefix)]


@contextlib.asynccontextmanager
async def sdk_client(fake: FakeLongConnectionPlatform, *, app_secret: str | None = None) -> AsyncIterator[SdkProcess]:
    """The SDK's client against ``fake`` (its domain, app id and, unless given, app secret);
    killed on exit, whatever happened."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("BRIDGE_LARK_APP_SECRET", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.sdk_ws_client",
        fake.url,
        fake.app_id,
        fake.app_secret if app_secret is None else app_secret,
        cwd=REPO_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    sdk = SdkProcess(proc)

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            sdk.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    reader = asyncio.create_task(read())
    try:
        yield sdk
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 5)


async def connected(fake: FakeLongConnectionPlatform, sdk: SdkProcess, *, total: int = 1) -> None:
    """Wait until the SDK has opened ``total`` connections and one is open."""
    await wait_until(
        lambda: fake.connects_total >= total and fake.open_connections == 1,
        timeout_s=CONNECT_TIMEOUT_S,
        interval_s=0.05,
        message=f"the SDK did not connect (connection {total})\n{sdk.output()}",
    )


def event_body(event_id: str) -> bytes:
    """The documented ``vc.room.created_v1`` sample (schema 2.0) with ``event_id``, compact JSON."""
    body = sample(ROOM_CREATED)
    body["header"]["event_id"] = event_id
    return compact(body)


def sdk_parse(raw: bytes) -> Any:
    frame = SdkFrame()
    frame.ParseFromString(raw)
    return frame


async def test_sdk_connects_pings_and_acks_in_the_documented_shape() -> None:
    async with FakeLongConnectionPlatform() as fake, sdk_client(fake) as sdk:
        fake.pong_config = dict(FAST_PINGS)
        await connected(fake, sdk)

        # §1: one endpoint call, JSON body with the credentials; the URL's ids reach the connection.
        assert fake.endpoint_calls == 1
        request = fake.endpoint_requests[0]
        assert request.body == {"AppID": fake.app_id, "AppSecret": fake.app_secret}
        assert request.headers.get("locale") == "zh"
        query = parse_qs(urlsplit(fake.issued_urls[0]).query)
        conn = fake.connections[0]
        assert conn.device_id == query["device_id"][0]
        assert conn.service_id == query["service_id"][0] == str(fake.service_id)

        # §6: an event is acked with the frame's own fields and headers, + biz_rt, payload code 200.
        headers = [
            ("type", "event"),
            ("message_id", "msg-single"),
            ("sum", "1"),
            ("seq", "0"),
            ("trace_id", "trace-single"),
            ("timestamp", "1700000000000"),
            ("instance_id", "instance-7"),
        ]
        await fake.push(
            event_body("evt-single"),
            message_id="msg-single",
            trace_id="trace-single",
            extra_headers={"timestamp": "1700000000000", "instance_id": "instance-7"},
            seq_id=7,
            log_id=2**64 - 1,
            optional_fields={"payload_encoding": "", "LogIDNew": "log-id-new"},
        )
        ack = await fake.wait_ack("msg-single")
        assert (ack.seq_id, ack.log_id, ack.service, ack.method) == (7, 2**64 - 1, fake.service_id, 1)
        assert ack.headers[:-1] == headers
        assert ack.headers[-1][0] == "biz_rt"
        assert int(ack.headers[-1][1]) >= 0
        assert (ack.code, ack.payload) == (200, {"code": 200})
        parsed = sdk_parse(ack.raw)
        assert parsed.payload == b'{"code": 200}'  # SDK-PY's byte form (§6)
        assert (parsed.HasField("payload_encoding"), parsed.payload_encoding) == (True, "")
        assert parsed.LogIDNew == "log-id-new"
        assert not parsed.HasField("payload_type")
        # Byte for byte: the pushed frame with biz_rt appended and the payload replaced.
        expected = sdk_frame(
            seq_id=7,
            log_id=2**64 - 1,
            service=fake.service_id,
            method=1,
            headers=ack.headers,
            payload=b'{"code": 200}',
            optional_fields={"payload_encoding": "", "LogIDNew": "log-id-new"},
        )
        assert ack.raw == expected

        # §5: three parts out of order make one event and one ack, for the completing part.
        await fake.push(event_body("evt-split"), parts=3, order=[2, 0, 1], message_id="msg-split")
        split_ack = await fake.wait_ack("msg-split")
        assert split_ack.code == 200
        assert split_ack.header("seq") == "1"
        assert split_ack.header("sum") == "3"

        # §6: a handler that raises gets 500, and SDK-PY then adds no biz_rt.
        await fake.push(event_body(f"{FAIL_PREFIX}-evt"), message_id="msg-fail")
        failed = await fake.wait_ack("msg-fail")
        assert (failed.code, failed.payload) == (500, {"code": 500})
        assert failed.header("biz_rt") is None

        # §4: pings carry the URL's service_id; the pong's PingInterval (1 s) replaces the
        # endpoint's (2 s) from the next sleep on: gaps ≈ 2, 1 s.
        await wait_until(
            lambda: len(fake.pings) >= 3,
            timeout_s=10,
            message=f"fewer than 3 pings: {fake.pings}\n{sdk.output()}",
        )
        assert {service for service, _ in fake.pings} == {fake.service_id}
        times = [t for _, t in fake.pings[:3]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert 1.6 < gaps[0] < 2.6, gaps
        assert 0.6 < gaps[1] < 1.5, gaps

        # Each event was handled once by the SDK, the split one included.
        assert sdk.events() == ["evt-single", "evt-split", f"{FAIL_PREFIX}-evt"]
        assert [a.message_id for a in fake.acks] == ["msg-single", "msg-split", "msg-fail"]
        assert fake.other_messages == []


#: The room and room-level kinds and the SDK's event class for each (``lark_oapi.api.vc.v1``).
TYPED_KINDS = {
    "vc.room.updated_v1": "P2VcRoomUpdatedV1",
    "vc.room.deleted_v1": "P2VcRoomDeletedV1",
    "vc.room_level.created_v1": "P2VcRoomLevelCreatedV1",
    "vc.room_level.updated_v1": "P2VcRoomLevelUpdatedV1",
    "vc.room_level.deleted_v1": "P2VcRoomLevelDeletedV1",
}


async def test_the_room_and_room_level_samples_reach_the_sdks_typed_handlers_through_the_fake() -> None:
    # What the fake pushes of these kinds, the SDK routes by header.event_type to its typed model
    # and acks 200 (§6); whole for four, split in two parts for one (§5).
    async with FakeLongConnectionPlatform() as fake, sdk_client(fake) as sdk:
        await connected(fake, sdk)
        for n, kind in enumerate(TYPED_KINDS):
            body = sample(kind)
            body["header"]["event_id"] = f"typed-{n}"
            message_id = await fake.push(compact(body), parts=2 if n == 0 else 1, message_id=f"msg-typed-{n}")
            assert (await fake.wait_ack(message_id)).code == 200, sdk.output()
        await wait_until(
            lambda: len(sdk.typed()) == len(TYPED_KINDS), timeout_s=10, message=f"typed events missing\n{sdk.output()}"
        )
        assert sdk.typed() == [
            (cls, f"typed-{n}", sample(kind)["event"]) for n, (kind, cls) in enumerate(TYPED_KINDS.items())
        ]


async def test_sdk_reconnects_through_retryable_failures_with_a_new_endpoint_call() -> None:
    async with FakeLongConnectionPlatform() as fake, sdk_client(fake) as sdk:
        await connected(fake, sdk)
        # §1 and §2: the failures the SDKs retry, each followed by ReconnectInterval (1 s).
        fake.endpoint_script = [("code", 1), ("code", 1000040343), ("http", 503), ("handshake", 514, "1000040343")]
        await fake.drop_connections(code=1000)
        await connected(fake, sdk, total=2)
        assert fake.endpoint_script == []
        assert fake.endpoint_calls == 6
        assert fake.handshakes_refused == 1
        first, second = fake.connections
        assert first.closed_at is not None
        assert first.device_id != second.device_id
        # The new connection works: an event is acked on it.
        await fake.push(event_body("evt-after-reconnect"), message_id="msg-after")
        ack: Ack = await fake.wait_ack("msg-after")
        assert (ack.code, ack.connection) == (200, 1)


@dataclass(frozen=True)
class ClientErrorCase:
    name: str
    script: list[tuple[Any, ...]]
    app_secret: str | None
    expected: str  # in the SDK's output: "<code>: <msg>" of its ClientException


CLIENT_ERRORS = [
    ClientErrorCase("wrong secret", [], "not-the-secret", f"{BAD_CREDENTIALS_CODE}: "),
    ClientErrorCase("connection limit", [("handshake", 514, "1000040350")], None, "514: auth failed"),
]


async def _gives_up(case: ClientErrorCase) -> None:
    async with FakeLongConnectionPlatform() as fake:
        fake.endpoint_script = list(case.script)
        async with sdk_client(fake, app_secret=case.app_secret) as sdk:
            try:
                rc = await asyncio.wait_for(sdk.proc.wait(), CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise AssertionError(f"{case.name}: the SDK did not give up\n{sdk.output()}") from None
            await asyncio.sleep(0.1)
            assert rc != 0, f"{case.name}\n{sdk.output()}"
            assert "ClientException" in sdk.output(), f"{case.name}\n{sdk.output()}"
            assert case.expected in sdk.output(), f"{case.name}\n{sdk.output()}"
        assert fake.endpoint_calls == 1, case.name
        assert fake.connects_total == 0, case.name
        assert fake.handshakes_refused == (1 if case.script else 0), case.name


async def test_sdk_gives_up_on_client_errors() -> None:
    # §1 "any other code" and §2 514 + 1000040350: the SDK stops at once (run side by side; 403
    # takes the same path in the fake and in the SDK).
    await asyncio.gather(*(_gives_up(case) for case in CLIENT_ERRORS))


async def _endpoint_url(fake: FakeLongConnectionPlatform) -> str:
    async with aiohttp.ClientSession() as session:
        body = {"AppID": fake.app_id, "AppSecret": fake.app_secret}
        async with session.post(fake.url + "/callback/ws/endpoint", json=body) as resp:
            answer = await resp.json()
    assert answer["code"] == 0, answer
    url: str = answer["data"]["URL"]
    return url


async def test_the_fake_with_the_sdks_websocket_library() -> None:
    # The SDK's WebSocket library (websockets) in process, with a short keepalive: what the SDK's
    # 20 s keepalive would see (§2), plus the fake's own rules for tickets and close codes.
    async with FakeLongConnectionPlatform() as fake:
        url = await _endpoint_url(fake)
        async with websockets.connect(url, ping_interval=0.2, ping_timeout=0.5, proxy=None) as ws:
            # A ping frame gets a pong without payload while pong_config is None (§4).
            await ws.send(sdk_frame(seq_id=0, log_id=0, service=fake.service_id, method=0, headers=[("type", "ping")]))
            message = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(message, bytes)
            pong = sdk_parse(message)
            assert [(h.key, h.value) for h in pong.headers] == [("type", "pong")]
            assert (pong.method, pong.service, pong.HasField("payload")) == (0, fake.service_id, False)
            # Anything else is recorded and ignored.
            await ws.send("text")
            await ws.send(b"\xff\x00garbage")
            await wait_until(lambda: len(fake.other_messages) == 2, timeout_s=5, message=str(fake.other_messages))
            # Protocol pings answered: the connection outlives several keepalive rounds ...
            await asyncio.sleep(1.0)
            assert fake.open_connections == 1
            # ... then not answered, on this already-open connection: the client's keepalive ends it.
            fake.answer_ws_pings = False
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), 5)
        await wait_until(lambda: fake.open_connections == 0, timeout_s=5, message="the fake kept the connection")
        # A ticket is good for one upgrade: the same URL again is refused as a failed authentication.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, proxy=None)
        headers = refused.value.response.headers
        assert (refused.value.response.status_code, headers["handshake-status"]) == (514, "514")
        assert headers["handshake-autherrcode"] == BAD_TICKET_AUTH_CODE
        # close() ends the open connections with 1001 (going away).
        fake.answer_ws_pings = True
        ws = await websockets.connect(await _endpoint_url(fake), proxy=None)
        await fake.close()
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1001
