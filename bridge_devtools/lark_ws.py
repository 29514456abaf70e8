"""A fake Lark / Feishu platform for the long connection (docs/long_connection.md), for tests only.

An aiohttp server on ``127.0.0.1`` (a port chosen by the OS) that speaks the real protocol:

- ``POST /callback/ws/endpoint`` (§1): reads the JSON body ``{"AppID", "AppSecret"}`` whatever its
  ``Content-Type``, answers ``{"code": 0, "msg": "ok", "data": {"URL": …, "ClientConfig": …}}``
  with ``URL`` = ``ws://127.0.0.1:<port>/ws?device_id=<uuid>&service_id=<service_id>&ticket=<random>``;
  :attr:`FakeLongConnectionPlatform.endpoint_script` serves scripted failures first.
- ``GET /ws`` (§2): the WebSocket. Binary messages are parsed as ``pbbp2.Frame`` (§3). A ping
  frame (``method`` 0, header ``type=ping``) is answered with a pong frame (header ``type=pong``,
  payload = :attr:`~FakeLongConnectionPlatform.pong_config` as JSON, or none) (§4); a data frame
  (``method`` 1) is recorded as an :class:`Ack` (§6); anything else is recorded in
  :attr:`~FakeLongConnectionPlatform.other_messages` and otherwise ignored. RFC 6455 protocol
  pings are answered while :attr:`~FakeLongConnectionPlatform.answer_ws_pings` is true (§2).
- :meth:`~FakeLongConnectionPlatform.push` sends an event as one data frame or split into parts
  (§5), :meth:`~FakeLongConnectionPlatform.send_raw` any bytes.

Every frame is built and parsed with the official SDK's own class
``lark_oapi.ws.pb.pbbp2_pb2.Frame`` (lark-oapi, a dev dependency), never with
``bridge.ingress.frames``, so that tests of the bridge against this fake are cross-checked
against the SDK. ``tests/integration/test_fake_platform_vs_sdk.py`` runs the SDK's own client
against it.

The fake's own choices (the real platform's are unknown, docs/long_connection.md §10):

- wrong credentials (or a body that is not a JSON object with string ``AppID`` and ``AppSecret``):
  HTTP 200 ``{"code": 1000040351, "msg": "invalid app_id or app_secret"}``
  (:data:`BAD_CREDENTIALS_CODE`; any code other than 0, 1 and 1000040343 is "do not retry" to the SDKs);
- the URL's ``ticket`` is valid for one upgrade: an unknown or reused ticket, or a
  ``device_id`` / ``service_id`` that does not match it, is refused with HTTP 514 and headers
  ``handshake-status: 514``, ``handshake-autherrcode: 1000040351``
  (:data:`BAD_TICKET_AUTH_CODE`, "authentication failed", retryable for the SDKs);
- :attr:`~FakeLongConnectionPlatform.endpoint_script` answers are served before the credentials
  are checked; a ``("handshake", …)`` entry answers normally and refuses the upgrade on the URL
  that answer carried (so "the next upgrade" of a client that always fetches a new URL, §1);
- a pong's ``SeqID`` / ``LogID`` are 0 and its ``service`` is the ping's;
- the default ``ClientConfig`` is short (reconnect every 1 s, no jitter, ping every 2 s) so
  tests run fast; pongs carry no payload unless :attr:`pong_config` is set;
- data frames get ``service`` = the fake's ``service_id``; all parts of a split message share
  ``SeqID`` and ``LogID``; ``SeqID`` counts up from 1, ``LogID`` is random (full uint64 range);
- a protocol close from :meth:`close` uses 1001 (going away); the close handshake waits at
  most 2 s for the client.

Records are bounded (:data:`MAX_RECORDS` entries per list; past it the oldest tenth is
dropped), so a runaway client cannot grow the test process without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar

from aiohttp import WSMsgType, web
from lark_oapi.ws.pb.pbbp2_pb2 import Frame

__all__ = [
    "BAD_CREDENTIALS_CODE",
    "BAD_TICKET_AUTH_CODE",
    "DEFAULT_CLIENT_CONFIG",
    "ENDPOINT_PATH",
    "MAX_RECORDS",
    "WS_PATH",
    "Ack",
    "ConnectionRecord",
    "EndpointRequest",
    "FakeLongConnectionPlatform",
    "ScriptEntry",
    "sdk_frame",
    "split_payload",
]

ENDPOINT_PATH: Final = "/callback/ws/endpoint"
WS_PATH: Final = "/ws"
#: The fake's answer ``code`` to wrong credentials (non-retryable to the SDKs, §1).
BAD_CREDENTIALS_CODE: Final = 1000040351
#: The fake's ``handshake-autherrcode`` (with ``handshake-status: 514``) for a bad ticket (§2).
BAD_TICKET_AUTH_CODE: Final = "1000040351"
#: Seconds, except ``ReconnectCount`` (a count; negative = unlimited) (§1).
DEFAULT_CLIENT_CONFIG: Final[Mapping[str, int]] = {
    "ReconnectCount": -1,
    "ReconnectInterval": 1,
    "ReconnectNonce": 0,
    "PingInterval": 2,
}
#: Largest number of entries any record list keeps.
MAX_RECORDS: Final = 100_000
CLOSE_TIMEOUT_S: Final = 2.0
#: Largest WebSocket message accepted from a client, bytes (aiohttp's default).
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
_HANDSHAKE_MESSAGES: Final[Mapping[int, str]] = {514: "auth failed", 403: "forbidden"}
_HTTP_REASONS: Final[Mapping[int, str]] = {514: "Auth Failed"}

#: One scripted endpoint answer: ``("code", n)`` → HTTP 200 ``{"code": n, "msg": …}``;
#: ``("http", status)`` → that HTTP status; ``("handshake", status, autherrcode)`` or
#: ``("handshake", status, autherrcode, msg)`` → a normal answer whose URL's upgrade is refused
#: with HTTP ``status`` and headers ``handshake-status`` / ``handshake-msg`` /
#: ``handshake-autherrcode`` (the last left out when ``autherrcode`` is ``""``).
ScriptEntry = tuple[Any, ...]

_T = TypeVar("_T")


def _record(records: list[_T], item: _T) -> None:
    """Append ``item``; past :data:`MAX_RECORDS` entries the oldest tenth goes."""
    if len(records) >= MAX_RECORDS:
        del records[: MAX_RECORDS // 10]
    records.append(item)


def sdk_frame(
    *,
    seq_id: int,
    log_id: int,
    service: int,
    method: int,
    headers: Iterable[tuple[str, str]] = (),
    payload: bytes | None = None,
    optional_fields: Mapping[str, str] | None = None,
) -> bytes:
    """One ``pbbp2.Frame`` serialized by the SDK's class: ``seq_id`` / ``log_id`` uint64,
    ``service`` / ``method`` int32, ``headers`` in order, ``payload`` left out when ``None``,
    ``optional_fields`` any of ``payload_encoding`` / ``payload_type`` / ``LogIDNew`` (strings).
    For hostile-input tests use :meth:`FakeLongConnectionPlatform.send_raw` on the result (or on
    anything else)."""
    frame = Frame()
    frame.SeqID = seq_id
    frame.LogID = log_id
    frame.service = service
    frame.method = method
    for key, value in headers:
        header = frame.headers.add()
        header.key = key
        header.value = value
    if payload is not None:
        frame.payload = payload
    for name, value in (optional_fields or {}).items():
        if name not in ("payload_encoding", "payload_type", "LogIDNew"):
            raise ValueError(f"not an optional string field of pbbp2.Frame: {name!r}")
        setattr(frame, name, value)
    data: bytes = frame.SerializeToString()
    return data


def split_payload(payload: bytes, parts: int) -> list[bytes]:
    """``payload`` cut into ``parts`` consecutive non-empty pieces (sizes differ by at most one
    byte). The SDKs treat an empty part as missing (§5), so ``len(payload) >= parts`` is required."""
    if parts < 1:
        raise ValueError("parts must be at least 1")
    if len(payload) < parts:
        raise ValueError(f"a {len(payload)}-byte payload cannot be split into {parts} non-empty parts")
    size, extra = divmod(len(payload), parts)
    pieces, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        pieces.append(payload[start:end])
        start = end
    return pieces


@dataclass(frozen=True, slots=True)
class Ack:
    """A data frame the client sent back (§6), as parsed by the SDK's ``Frame``.

    ``message_id``: its ``message_id`` header (``""`` when absent); ``code``: the payload's JSON
    ``code`` (``-1`` when the payload is not a JSON object with an integer ``code``); ``headers``:
    every header in order; ``seq_id`` / ``log_id``: uint64; ``service`` / ``method``: int32;
    ``payload``: the payload parsed as a JSON object (``{}`` when it is not one); ``raw``: the
    message's bytes; ``received_at``: the event loop's clock (``loop.time()``, seconds)."""

    message_id: str
    code: int
    headers: list[tuple[str, str]]
    seq_id: int
    log_id: int
    service: int
    method: int
    payload: dict[str, Any]
    raw: bytes
    received_at: float
    #: Which connection it came on: index into :attr:`FakeLongConnectionPlatform.connections`.
    connection: int = -1

    def header(self, key: str) -> str | None:
        """The last value of header ``key``, or ``None``."""
        found = None
        for k, v in self.headers:
            if k == key:
                found = v
        return found


@dataclass(frozen=True, slots=True)
class EndpointRequest:
    """One ``POST /callback/ws/endpoint``: its ``headers`` (names as sent) and ``body`` (the
    parsed JSON, or the raw text when it is not JSON)."""

    headers: dict[str, str]
    body: Any


@dataclass(slots=True)
class ConnectionRecord:
    """One accepted WebSocket: ``device_id`` / ``service_id`` from its URL, ``headers`` of the
    upgrade request, ``opened_at`` / ``closed_at`` on the loop clock (seconds), ``close_code``
    (aiohttp's view once closed), ``client_close_code`` (the code of the client's close frame,
    None when the client sent none)."""

    index: int
    device_id: str
    service_id: str
    headers: dict[str, str]
    opened_at: float
    ws: web.WebSocketResponse = field(repr=False)
    closed_at: float | None = None
    close_code: int | None = None
    client_close_code: int | None = None


@dataclass(frozen=True, slots=True)
class _Ticket:
    device_id: str
    service_id: str
    refusal: tuple[int, str, str] | None  # (status, autherrcode, msg)


class FakeLongConnectionPlatform:
    """The platform side of the long connection, on ``127.0.0.1``; see the module docstring.

    ``client_config``: the ``ClientConfig`` of every successful endpoint answer (default
    :data:`DEFAULT_CLIENT_CONFIG`; may be replaced between calls); ``service_id``: the URL's
    ``service_id``, an int32. Use ``async with FakeLongConnectionPlatform() as fake:`` or
    :meth:`start` / :meth:`close`.
    """

    def __init__(
        self,
        app_id: str = "cli_fake_app",
        app_secret: str = "fake-app-secret",  # noqa: S107 - the fake's own test credential
        *,
        client_config: dict[str, Any] | None = None,
        service_id: int = 4242,
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.client_config: dict[str, Any] = dict(DEFAULT_CLIENT_CONFIG if client_config is None else client_config)
        self.service_id = service_id
        #: Answers served before the normal one, consumed in order (see :data:`ScriptEntry`).
        self.endpoint_script: list[ScriptEntry] = []
        self.endpoint_calls = 0
        self.endpoint_requests: list[EndpointRequest] = []
        #: Every URL a successful endpoint answer carried (secrets of the fake: tests check logs against them).
        self.issued_urls: list[str] = []
        self.connects_total = 0
        self.handshakes_refused = 0
        #: Every accepted WebSocket, in order (open ones have ``closed_at is None``).
        self.connections: list[ConnectionRecord] = []
        #: ``(service, loop.time())`` of each ping frame received (seconds).
        self.pings: list[tuple[int, float]] = []
        #: When set, every pong carries it as its JSON payload (§4); ``None``: pongs without payload.
        self.pong_config: dict[str, Any] | None = None
        #: While false, RFC 6455 protocol pings are not answered, on open connections too (half-open test).
        self.answer_ws_pings = True
        #: While false, ping *frames* (§4) get no pong frame (a platform that went quiet).
        self.answer_pings = True
        #: Every data frame the client sent back.
        self.acks: list[Ack] = []
        #: Everything else received: undecodable or other binary messages (bytes), text messages (str).
        self.other_messages: list[bytes | str] = []
        self._open: list[ConnectionRecord] = []
        self._tickets: dict[str, _Ticket] = {}
        self._ack_waiters: dict[str, list[asyncio.Future[Ack]]] = {}
        self._next_seq_id = 1
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on ``127.0.0.1`` on a free port (bound to port 0: no race with other tests)."""
        if self._runner is not None:
            raise RuntimeError("already started")
        app = web.Application()
        app.router.add_post(ENDPOINT_PATH, self._endpoint)
        app.router.add_get(WS_PATH, self._websocket)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Close every WebSocket (code 1001, going away) and the server. Idempotent."""
        await self.drop_connections(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for waiters in self._ack_waiters.values():
            for fut in waiters:
                fut.cancel()
        self._ack_waiters.clear()

    async def __aenter__(self) -> FakeLongConnectionPlatform:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the domain a client is given (it appends ``/callback/ws/endpoint``)."""
        if self._port is None:
            raise RuntimeError("the fake platform is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def open_connections(self) -> int:
        """How many WebSockets are open now."""
        return len(self._open)

    # ------------------------------------------------------------------ endpoint (§1)

    async def _endpoint(self, request: web.Request) -> web.Response:
        self.endpoint_calls += 1
        text = await request.text()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        _record(self.endpoint_requests, EndpointRequest(dict(request.headers), body))
        refusal: tuple[int, str, str] | None = None
        if self.endpoint_script:
            entry = self.endpoint_script.pop(0)
            kind = entry[0]
            if kind == "code":
                return web.json_response({"code": int(entry[1]), "msg": f"scripted code {entry[1]}"})
            if kind == "http":
                status = int(entry[1])
                return web.json_response({"code": status, "msg": f"scripted HTTP {status}"}, status=status)
            if kind == "handshake":
                status = int(entry[1])
                msg = str(entry[3]) if len(entry) > 3 else _HANDSHAKE_MESSAGES.get(status, "server error")
                refusal = (status, str(entry[2]), msg)
            else:
                raise ValueError(f"unknown endpoint_script entry: {entry!r}")
        if not self._credentials_ok(body):
            return web.json_response({"code": BAD_CREDENTIALS_CODE, "msg": "invalid app_id or app_secret"})
        device_id = str(uuid.uuid4())
        ticket = secrets.token_urlsafe(24)
        service_id = str(self.service_id)
        self._tickets[ticket] = _Ticket(device_id, service_id, refusal)
        if len(self._tickets) > MAX_RECORDS:  # tickets never used: drop the oldest
            del self._tickets[next(iter(self._tickets))]
        url = f"ws://127.0.0.1:{self._port}{WS_PATH}?device_id={device_id}&service_id={service_id}&ticket={ticket}"
        _record(self.issued_urls, url)
        return web.json_response(
            {"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": dict(self.client_config)}}
        )

    def _credentials_ok(self, body: Any) -> bool:
        if not isinstance(body, dict):
            return False
        app_id, secret = body.get("AppID"), body.get("AppSecret")
        if not isinstance(app_id, str) or not isinstance(secret, str):
            return False
        return hmac.compare_digest(app_id.encode(), self.app_id.encode()) and hmac.compare_digest(
            secret.encode(), self.app_secret.encode()
        )

    # ------------------------------------------------------------------ WebSocket (§2–§6)

    def _refuse(self, status: int, autherrcode: str, msg: str) -> web.Response:
        self.handshakes_refused += 1
        headers = {"handshake-status": str(status), "handshake-msg": msg}
        if autherrcode:
            headers["handshake-autherrcode"] = autherrcode
        return web.Response(status=status, reason=_HTTP_REASONS.get(status), headers=headers, text=msg)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        ticket = self._tickets.pop(query.get("ticket", ""), None)
        device_id, service_id = query.get("device_id", ""), query.get("service_id", "")
        if ticket is None or (ticket.device_id, ticket.service_id) != (device_id, service_id):
            return self._refuse(514, BAD_TICKET_AUTH_CODE, "auth failed: invalid ticket")
        if ticket.refusal is not None:
            return self._refuse(*ticket.refusal)
        # autoping=False: protocol pings reach the loop below, which answers them while
        # answer_ws_pings is true — so the flag also acts on connections already open.
        ws = web.WebSocketResponse(autoping=False, timeout=CLOSE_TIMEOUT_S, max_msg_size=MAX_MESSAGE_BYTES)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="not a WebSocket upgrade")
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        conn = ConnectionRecord(
            index=self.connects_total,
            device_id=device_id,
            service_id=service_id,
            headers=dict(request.headers),
            opened_at=loop.time(),
            ws=ws,
        )
        self.connects_total += 1
        _record(self.connections, conn)
        self._open.append(conn)
        try:
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.BINARY:
                    await self._on_binary(conn, msg.data)
                elif msg.type is WSMsgType.TEXT:
                    _record(self.other_messages, str(msg.data))
                elif msg.type is WSMsgType.PING:
                    if self.answer_ws_pings:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    continue
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    if msg.type is WSMsgType.CLOSE:
                        conn.client_close_code = int(msg.data)
                    break
        finally:
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            conn.closed_at = loop.time()
            conn.close_code = ws.close_code
            if conn in self._open:
                self._open.remove(conn)
        return ws

    async def _on_binary(self, conn: ConnectionRecord, data: bytes) -> None:
        frame = Frame()
        try:
            frame.ParseFromString(data)
        except Exception:  # the SDK's pure-Python protobuf raises several kinds
            _record(self.other_messages, bytes(data))
            return
        headers = [(str(h.key), str(h.value)) for h in frame.headers]
        types = [v for k, v in headers if k == "type"]
        if frame.method == 0 and types[:1] == ["ping"]:  # the SDKs read the first `type`
            _record(self.pings, (int(frame.service), asyncio.get_running_loop().time()))
            pong = sdk_frame(
                seq_id=0,
                log_id=0,
                service=int(frame.service),
                method=0,
                headers=[("type", "pong")],
                payload=None if self.pong_config is None else json.dumps(self.pong_config).encode(),
            )
            if self.answer_pings:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.send_bytes(pong)
        elif frame.method == 1:
            self._on_ack(conn, frame, headers, bytes(data))
        else:
            _record(self.other_messages, bytes(data))

    def _on_ack(self, conn: ConnectionRecord, frame: Any, headers: list[tuple[str, str]], raw: bytes) -> None:
        payload: dict[str, Any] = {}
        with contextlib.suppress(ValueError, RecursionError):
            parsed = json.loads(bytes(frame.payload))
            if isinstance(parsed, dict):
                payload = parsed
        code = payload.get("code")
        message_ids = [v for k, v in headers if k == "message_id"]
        ack = Ack(
            message_id=message_ids[-1] if message_ids else "",
            code=code if isinstance(code, int) and not isinstance(code, bool) else -1,
            headers=headers,
            seq_id=int(frame.SeqID),
            log_id=int(frame.LogID),
            service=int(frame.service),
            method=int(frame.method),
            payload=payload,
            raw=raw,
            received_at=asyncio.get_running_loop().time(),
            connection=conn.index,
        )
        _record(self.acks, ack)
        for fut in self._ack_waiters.pop(ack.message_id, []):
            if not fut.done():
                fut.set_result(ack)

    # ------------------------------------------------------------------ sending

    def _connection(self, connection: int) -> ConnectionRecord:
        if not self._open:
            raise RuntimeError("no open connection")
        try:
            return self._open[connection]
        except IndexError:
            raise RuntimeError(f"no open connection at index {connection} ({len(self._open)} open)") from None

    async def push(
        self,
        payload: bytes,
        *,
        parts: int = 1,
        order: Sequence[int] | None = None,
        message_id: str | None = None,
        trace_id: str | None = None,
        frame_type: str = "event",
        extra_headers: Mapping[str, str] | None = None,
        seq_id: int | None = None,
        log_id: int | None = None,
        optional_fields: Mapping[str, str] | None = None,
        connection: int = -1,
    ) -> str:
        """Send ``payload`` (the event body's bytes) as ``parts`` data frames (§5) and return its
        ``message_id`` (default a random 32-hex id).

        Each frame: ``SeqID`` = ``seq_id`` (default the next of a counter from 1), ``LogID`` =
        ``log_id`` (default random uint64), ``service`` = the fake's ``service_id``, ``method`` 1,
        headers ``type`` (= ``frame_type``), ``message_id``, ``sum`` (= ``parts``), ``seq`` (the
        part's 0-based index), ``trace_id`` (default random) in the SDKs' order, then
        ``extra_headers`` (e.g. ``timestamp``, ``instance_id``), then ``optional_fields``
        (``payload_encoding`` / ``payload_type`` / ``LogIDNew``). Parts are sent in ``order``
        (indexes of parts, default ``0..parts-1``; leave one out to test a missing part, repeat one
        to test a duplicate) on ``connection``: an index into the currently open connections in
        opening order (-1: the newest). Raises ``RuntimeError`` without an open connection,
        ``ValueError`` when ``len(payload) < parts``."""
        conn = self._connection(connection)
        pieces = split_payload(payload, parts)
        message_id = message_id if message_id is not None else uuid.uuid4().hex
        trace_id = trace_id if trace_id is not None else uuid.uuid4().hex
        if seq_id is None:
            seq_id = self._next_seq_id
            self._next_seq_id += 1
        if log_id is None:
            log_id = secrets.randbits(64)
        frames = []
        for seq, piece in enumerate(pieces):
            headers = [
                ("type", frame_type),
                ("message_id", message_id),
                ("sum", str(parts)),
                ("seq", str(seq)),
                ("trace_id", trace_id),
                *(extra_headers or {}).items(),
            ]
            frames.append(
                sdk_frame(
                    seq_id=seq_id,
                    log_id=log_id,
                    service=self.service_id,
                    method=1,
                    headers=headers,
                    payload=piece,
                    optional_fields=optional_fields,
                )
            )
        for index in range(parts) if order is None else order:
            await conn.ws.send_bytes(frames[index])
        return message_id

    async def send_raw(self, data: bytes, *, connection: int = -1) -> None:
        """Send ``data`` as one binary WebSocket message, unchecked (hostile-input tests)
        on ``connection`` (as in :meth:`push`)."""
        await self._connection(connection).ws.send_bytes(data)

    async def wait_ack(self, message_id: str, timeout_s: float = 5.0) -> Ack:
        """The first ack (already received or coming) whose ``message_id`` header is
        ``message_id``; raises ``TimeoutError`` after ``timeout_s`` seconds."""
        for ack in self.acks:
            if ack.message_id == message_id:
                return ack
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._ack_waiters.setdefault(message_id, []).append(fut)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            raise TimeoutError(f"no ack for message {message_id!r} within {timeout_s} s") from None
        finally:
            waiters = self._ack_waiters.get(message_id)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._ack_waiters[message_id]

    async def drop_connections(self, code: int = 1000) -> None:
        """Close every open WebSocket with close ``code`` (the close handshake waits at most
        :data:`CLOSE_TIMEOUT_S` seconds for each client)."""
        conns = list(self._open)
        await asyncio.gather(*(c.ws.close(code=code) for c in conns), return_exceptions=True)
