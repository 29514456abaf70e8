"""The long-connection ingress: events over an outbound WebSocket to the platform, no public URL
(docs/long_connection.md; the design is §9).

One client per process, started in the app's cleanup context once the delivery is ready:

1. ``POST {BRIDGE_LARK_DOMAIN}/callback/ws/endpoint`` with ``{"AppID", "AppSecret"}`` → the
   WebSocket URL and the ``ClientConfig`` (§1); then the WebSocket (§2), with aiohttp's RFC 6455
   heartbeat so that a half-open connection is noticed.
2. A ``ping`` frame every ``PingInterval`` seconds; a ``pong`` carrying a ``ClientConfig``
   replaces the current one (§4).
3. Data frames of ``type=event`` (split messages reassembled by ``message_id``, §5) →
   :func:`bridge.inbound.read_inbound` → :meth:`bridge.delivery.EventSink.deliver` with the same
   deadline as the webhook (``BRIDGE_KAFKA_PUBLISH_TIMEOUT_S`` from the arrival of the message's
   first part) → the ack frame, written only once ``deliver`` returned (§6, §9.2): code 200 for
   published / dead-lettered / duplicate, 500 (the platform re-pushes) for
   :class:`~bridge.errors.Unavailable`, an unreadable payload, a payload over
   ``BRIDGE_LONG_CONNECTION_MAX_PAYLOAD_BYTES`` or bad ``sum``/``seq``.
4. Reconnection as the SDKs do it (§7): after a loss, a random wait in ``[0, ReconnectNonce)``
   seconds, a new endpoint call and connection; after a failed attempt ``ReconnectInterval``
   seconds (before the platform has sent its timings: 1 s doubling up to the SDKs' 120 s
   default); at most ``ReconnectCount`` attempts when it is ≥ 0. A client error (endpoint code
   other than 0, 1, 1000040343; handshake ``403``, or ``514`` with ``1000040350``: too many
   connections) or exhausted attempts end it for good: :attr:`LongConnection.failed` is set and
   the process exits non-zero (``bridge.server.serve``).

No signature, encryption or token check: the connection is authenticated when it is opened
(§5). The WebSocket URL admits the connection, so it is a secret: logs carry its ``device_id``,
never the URL. Bounded whatever the platform (or an impostor of it) sends: at most
:data:`MAX_PARTIAL_MESSAGES` incomplete messages of at most :data:`MAX_PARTS` parts, each
dropped :data:`PARTIAL_TTL_S` after its latest part, payloads up to the configured bound, at most
:data:`MAX_IN_FLIGHT` events being delivered (beyond it: ack 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiohttp
import structlog
from opentelemetry.trace import SpanKind

from bridge.delivery import EventSink
from bridge.errors import Unavailable
from bridge.inbound import UnreadableJSON, read_inbound
from bridge.ingress import frames as fr
from bridge.logs import capped
from bridge.metrics import Metrics
from bridge.settings import Settings
from bridge.tracing import Tracing, set_lark, set_outcome

log = structlog.get_logger("bridge.long_connection")

ENDPOINT_PATH: Final = "/callback/ws/endpoint"
ENDPOINT_TIMEOUT_S: Final = 10.0
#: Endpoint ``code`` values that are the server's trouble: retried (§1). Any other non-zero is final.
RETRYABLE_CODES: Final = frozenset({1, 1000040343})
#: Handshake: ``handshake-autherrcode`` of "too many connections for this app" (§2, §8).
TOO_MANY_CONNECTIONS: Final = "1000040350"
#: aiohttp's RFC 6455 heartbeat: a ping every this many seconds, the connection closed when no
#: pong comes within half of it (§2: the SDK's websockets library pings every 20 s).
HEARTBEAT_S: Final = 20.0
MAX_PARTS: Final = 64
MAX_PARTIAL_MESSAGES: Final = 64
PARTIAL_TTL_S: Final = 5.0
MAX_IN_FLIGHT: Final = 1024
#: The SDKs' defaults (§1), used until the platform sends its own.
DEFAULT_CONFIG: Final = {"ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": 120}
#: Frame kinds counted in ``bridge_long_connection_frames_total`` (a fixed set: bounded series).
FRAME_KINDS: Final = ("event", "card", "ping", "pong", "other", "invalid", "text")


class ClientError(Exception):
    """A refusal no retry can mend (bad credentials, forbidden, too many connections): ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableError(Exception):
    """A failed attempt to connect that is worth repeating: ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class ClientConfig:
    """The platform's timings (§1, §4), seconds (count for ``reconnect_count``; < 0 = unlimited)."""

    reconnect_count: int = -1
    reconnect_interval_s: float = 120.0
    reconnect_nonce_s: float = 30.0
    ping_interval_s: float = 120.0

    def update(self, raw: Any) -> None:
        """Apply a ``ClientConfig`` JSON object; absent or ill-typed fields keep their value, and
        intervals are clamped to [1 s, 1 h] so that a hostile value cannot spin or stall us."""
        if not isinstance(raw, dict):
            return
        for key, attr, low in (
            ("ReconnectCount", "reconnect_count", None),
            ("ReconnectInterval", "reconnect_interval_s", 1.0),
            ("ReconnectNonce", "reconnect_nonce_s", 0.0),
            ("PingInterval", "ping_interval_s", 1.0),
        ):
            value = raw.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, attr, value if low is None else min(max(float(value), low), 3600.0))


@dataclass(slots=True)
class _Message:
    """A message to deliver and ack: the ``frame`` that completed it (echoed in the ack), its
    ``payload`` (None when refused), the first part's arrival (loop clock s, unix ms), and why
    it is refused without a delivery (``refused``: bad_split, too_large, busy, shutting_down)."""

    frame: Any
    payload: bytes | None
    arrived_s: float
    arrived_ms: int
    refused: str | None = None


@dataclass(slots=True)
class _Connection:
    """One open WebSocket: its ``service_id`` (from the URL, §1), the loop time of the latest
    message received and of the ping awaiting its pong (s), its split-message buffers, why it was
    lost (``lost``: read_deadline, heartbeat, server_closed) and the platform's close code, if it
    closed it."""

    ws: aiohttp.ClientWebSocketResponse
    service_id: int
    last_frame_s: float
    ping_sent_s: float | None = None
    partials: dict[str, _Partial] = field(default_factory=dict)
    lost: str | None = None
    close_code: int | None = None


@dataclass(slots=True)
class _Partial:
    """Parts of a split message received so far (§5)."""

    count: int
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    first_ms: int = 0
    first_s: float = 0.0
    last_s: float = 0.0


class LongConnection:
    """The long-connection client (module docstring). :meth:`start` / :meth:`close` from the app's
    cleanup context.

    ``sink``: the delivery; ``delivery_ready``: whether the delivery can take events now
    (producer connected, ledger replayed) — the client connects only then, since a connected
    client is offered events (§9.4). ``session_factory``: makes the aiohttp session (tests).
    ``tracing``: the spans of events (:mod:`bridge.tracing`; default: the global provider's).
    :attr:`connected`: a WebSocket is open; :attr:`failed`: the reason it stopped for good, set
    together with :attr:`stopped`.
    """

    def __init__(
        self,
        settings: Settings,
        sink: EventSink,
        metrics: Metrics,
        *,
        delivery_ready: Callable[[], bool] = lambda: True,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        assert settings.lark_app_id is not None, "the settings require it with the long connection"
        self._settings = settings
        self._tracing = tracing or Tracing()
        self._sink = sink
        self._metrics = metrics
        self._delivery_ready = delivery_ready
        self._session_factory = session_factory or aiohttp.ClientSession
        self._config = ClientConfig()
        self._config_received = False
        self._task: asyncio.Task[None] | None = None
        self._events: set[asyncio.Task[None]] = set()
        self._closing = False
        self.connected = False
        self.failed: str | None = None
        self.stopped = asyncio.Event()

    @property
    def not_ready_reason(self) -> str:
        """``long_connection_down`` while no WebSocket is open, else empty."""
        return "" if self.connected else "long_connection_down"

    async def start(self) -> None:
        """Start connecting in the background. Never raises."""
        self._task = asyncio.create_task(self._run(), name="bridge-long-connection")

    async def close(self, timeout_s: float) -> None:
        """Stop taking events (new ones are acked 500), wait at most ``timeout_s`` seconds for the
        acks of events in flight, then close the WebSocket with code 1000."""
        self._closing = True
        if self._events:
            await asyncio.wait(list(self._events), timeout=timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.connected = False
        self._metrics.long_connection_up.set(0)

    # ---- connecting -----------------------------------------------------------------------

    async def _run(self) -> None:
        async with self._session_factory() as session:
            attempts = 0
            lost_before = False
            while not self._closing:
                while not self._delivery_ready():  # noqa: ASYNC110 - a predicate over several parts, polled
                    await asyncio.sleep(0.2)
                if lost_before and self._config.reconnect_nonce_s > 0:
                    await asyncio.sleep(random.uniform(0, self._config.reconnect_nonce_s))  # noqa: S311 - jitter
                try:
                    url = await self._endpoint(session)
                    ws = await self._connect(session, url)
                except ClientError as exc:
                    self._fail(exc.reason)
                    return
                except RetryableError as exc:
                    attempts += 1
                    self._metrics.long_connection_connects.labels(outcome=exc.reason).inc()
                    count = self._config.reconnect_count
                    if count >= 0 and attempts >= max(count, 1):
                        self._fail(f"gave up after {attempts} attempts ({exc.reason})")
                        return
                    # The platform's interval once it has sent one; before that (first start, the
                    # SDKs' 120 s default) a backoff from 1 s up to that default.
                    delay = self._config.reconnect_interval_s
                    if not self._config_received:
                        delay = min(delay, float(2 ** min(attempts - 1, 7)))
                    log.warning("long connection: %s; retrying in %.0fs", exc.reason, delay)
                    await asyncio.sleep(delay)
                    lost_before = False
                    continue
                attempts = 0
                self._metrics.long_connection_connects.labels(outcome="connected").inc()
                await self._serve(ws, url)
                lost_before = True

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.error("long connection stopped for good: %s", reason)
        self.stopped.set()

    async def _endpoint(self, session: aiohttp.ClientSession) -> str:
        """The WebSocket URL (§1); applies the ``ClientConfig``. Raises ClientError / RetryableError."""
        s = self._settings
        assert s.lark_app_id is not None
        assert s.lark_app_secret is not None
        body = {"AppID": s.lark_app_id, "AppSecret": s.lark_app_secret.get_secret_value()}
        try:
            async with session.post(
                s.lark_domain.rstrip("/") + ENDPOINT_PATH,
                json=body,
                headers={"locale": "zh"},
                timeout=aiohttp.ClientTimeout(total=ENDPOINT_TIMEOUT_S),
            ) as resp:
                if resp.status != 200:
                    raise RetryableError(f"endpoint_http_{resp.status // 100}xx")
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RetryableError(f"endpoint_{type(exc).__name__}") from None
        if not isinstance(answer, dict):
            raise RetryableError("endpoint_bad_answer")
        code = answer.get("code")
        if code != 0:
            if code in RETRYABLE_CODES:
                raise RetryableError(f"endpoint_code_{code}")
            raise ClientError(f"endpoint refused the app: code {capped(str(code))}, {capped(str(answer.get('msg')))}")
        data = answer.get("data")
        url = data.get("URL") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise RetryableError("endpoint_no_url")
        config = data.get("ClientConfig") if isinstance(data, dict) else None
        if isinstance(config, dict):
            self._config.update(config)
            self._config_received = True
        return url

    async def _connect(self, session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
        try:
            return await session.ws_connect(
                url,
                heartbeat=HEARTBEAT_S,
                max_msg_size=self._settings.long_connection_max_payload_bytes + 64 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            headers: Mapping[str, str] = exc.headers or {}
            status = headers.get("handshake-status", "")
            code = headers.get("handshake-autherrcode", "")
            if status == "403" or (status == "514" and code == TOO_MANY_CONNECTIONS):
                what = "too many connections for the app" if code == TOO_MANY_CONNECTIONS else "forbidden"
                raise ClientError(f"handshake refused: {what} ({status} {capped(code)})") from None
            shown = status if status.isdigit() and len(status) == 3 else ("" if not status else "other")
            raise RetryableError(f"handshake_{shown or exc.status}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(f"connect_{type(exc).__name__}") from None

    # ---- one connection -------------------------------------------------------------------

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> None:
        query = parse_qs(urlsplit(url).query)
        device_id = capped((query.get("device_id") or [""])[0])
        try:
            service_id = int((query.get("service_id") or [""])[0])
        except ValueError:
            service_id = 0
        if not -(2**31) <= service_id < 2**31:  # an int32 in the frame (§3)
            service_id = 0
        log.info("long connection open", device_id=device_id)
        self.connected = True
        self._metrics.long_connection_up.set(1)
        conn = _Connection(ws, service_id, asyncio.get_running_loop().time())
        pinger = asyncio.create_task(self._ping(conn))
        try:
            while True:
                msg = await ws.receive()
                conn.last_frame_s = asyncio.get_running_loop().time()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self._on_frame(conn, msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self._count("text")
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    if msg.type == aiohttp.WSMsgType.CLOSE:
                        conn.close_code = msg.data
                    if conn.lost is None:
                        timed_out = isinstance(ws.exception(), aiohttp.ServerTimeoutError)
                        conn.lost = "heartbeat" if timed_out else "server_closed"
                    break
        finally:
            pinger.cancel()
            self.connected = False
            self._metrics.long_connection_up.set(0)
            with contextlib.suppress(Exception):
                await ws.close(code=aiohttp.WSCloseCode.OK)
            reason = "shutdown" if self._closing else (conn.lost or "error")
            if reason != "shutdown":
                self._metrics.long_connection_disconnects.labels(reason=reason).inc()
            log.info("long connection closed", device_id=device_id, reason=reason, platform_close_code=conn.close_code)

    async def _ping(self, conn: _Connection) -> None:
        """Ping every PingInterval (§4); close a connection that has sent nothing — no pong, no
        event — for two ping intervals (the read deadline: a half-open socket, or a platform that
        went quiet); drop incomplete messages 5 s after their latest part (§5)."""
        last_ping = -float("inf")
        loop = asyncio.get_running_loop()
        while not conn.ws.closed:
            now = loop.time()
            interval = self._config.ping_interval_s
            if now - conn.last_frame_s > 2 * interval:
                conn.lost = "read_deadline"
                log.warning("long connection: nothing received for %.0fs; reconnecting", now - conn.last_frame_s)
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
                return
            if now - last_ping >= interval:
                last_ping = conn.ping_sent_s = now
                with contextlib.suppress(Exception):
                    await conn.ws.send_bytes(fr.ping_frame(conn.service_id))
            for message_id in [m for m, p in conn.partials.items() if now - p.last_s > PARTIAL_TTL_S]:
                del conn.partials[message_id]
                self._metrics.long_connection_partials_dropped.inc()
            await asyncio.sleep(min(1.0, interval / 4))

    def _count(self, kind: str) -> None:
        self._metrics.long_connection_frames_by(kind).inc()

    def _on_frame(self, conn: _Connection, data: bytes) -> None:
        try:
            frame = fr.decode_frame(data)
        except fr.FrameError:
            self._count("invalid")
            return None
        headers = fr.headers_of(frame)
        kind = headers.get(fr.TYPE, "")
        if frame.method == fr.METHOD_CONTROL:
            if kind == "pong":
                self._count("pong")
                if conn.ping_sent_s is not None:
                    self._metrics.long_connection_ping_rtt.observe(conn.last_frame_s - conn.ping_sent_s)
                    conn.ping_sent_s = None
                if frame.payload:
                    with contextlib.suppress(ValueError):
                        self._config.update(json.loads(frame.payload))
            else:
                self._count("ping" if kind == "ping" else "other")
            return None
        if frame.method != fr.METHOD_DATA or kind != "event":
            self._count("card" if kind == "card" else "other")  # no reply (§5)
            return None
        self._count("event")
        loop = asyncio.get_running_loop()
        arrived_s, arrived_ms = loop.time(), int(time.time() * 1000)
        message_id = headers.get(fr.MESSAGE_ID, "")
        try:
            count, seq = int(headers.get(fr.SUM, "1")), int(headers.get(fr.SEQ, "0"))
        except ValueError:
            count, seq = 0, -1
        if not 1 <= count <= MAX_PARTS or not 0 <= seq < count or (count > 1 and not message_id):
            return self._spawn(conn.ws, _Message(frame, None, arrived_s, arrived_ms, "bad_split"))
        limit = self._settings.long_connection_max_payload_bytes
        if count == 1:
            payload = bytes(frame.payload)
            reason = "too_large" if len(payload) > limit else None
            return self._spawn(
                conn.ws, _Message(frame, payload if reason is None else None, arrived_s, arrived_ms, reason)
            )
        partial = conn.partials.get(message_id)
        if partial is None or partial.count != count:
            if len(conn.partials) >= MAX_PARTIAL_MESSAGES:  # forget the oldest
                del conn.partials[next(iter(conn.partials))]
                self._metrics.long_connection_partials_dropped.inc()
            partial = conn.partials[message_id] = _Partial(count, first_ms=arrived_ms, first_s=arrived_s)
        if seq not in partial.parts:
            partial.parts[seq] = bytes(frame.payload)
            partial.size += len(frame.payload)
        partial.last_s = arrived_s
        if partial.size > limit:
            del conn.partials[message_id]
            return self._spawn(conn.ws, _Message(frame, None, partial.first_s, partial.first_ms, "too_large"))
        if len(partial.parts) < count:
            return None  # no ack for a part that does not complete its message (§5)
        del conn.partials[message_id]
        payload = b"".join(partial.parts[i] for i in range(count))
        return self._spawn(conn.ws, _Message(frame, payload, partial.first_s, partial.first_ms))

    def _spawn(self, ws: aiohttp.ClientWebSocketResponse, message: _Message) -> None:
        if message.refused is None and (self._closing or len(self._events) >= MAX_IN_FLIGHT):
            message.refused = "shutting_down" if self._closing else "busy"
        task = asyncio.create_task(self._handle(ws, message))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, message: _Message) -> None:
        """Deliver one message and ack it (§9.2): 200 once the delivery returned, else 500; in a
        ``lark event`` CONSUMER span when tracing is on (:mod:`bridge.tracing`)."""
        with self._tracing.event_span("lark event", SpanKind.CONSUMER, {"lark.ingress": "long_connection"}) as span:
            await self._handle_in_span(ws, message, span)

    async def _handle_in_span(self, ws: aiohttp.ClientWebSocketResponse, message: _Message, span: Any) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        fields: dict[str, Any] = {}
        code, outcome = 500, message.refused or "error"
        if message.refused is None and message.payload is not None:
            try:
                event = read_inbound(message.payload)
            except UnreadableJSON:
                outcome = "unreadable"
            else:
                fields = {
                    "lark_type": capped(event.lark_type),
                    "delivery_id": capped(event.delivery_id),
                    "tenant_key": capped(event.tenant_key),
                }
                set_lark(span, fields["lark_type"], fields["delivery_id"])
                try:
                    result = await self._sink.deliver(
                        event,
                        received_ms=message.arrived_ms,
                        deadline_s=message.arrived_s + self._settings.kafka_publish_timeout_s,
                    )
                except Unavailable as exc:
                    outcome = exc.reason
                except Exception:
                    log.exception("long connection: delivery failed")
                else:
                    code, outcome = 200, result.kind
                    if result.reason:
                        fields["reason"] = result.reason
        biz_rt_ms = int((loop.time() - started) * 1000)
        set_outcome(span, outcome, reason=fields.get("reason"), error=code != 200)
        self._metrics.long_connection_acks_by(str(code)).inc()
        log.info("event", ingress="long_connection", outcome=outcome, ack_code=code, biz_rt_ms=biz_rt_ms, **fields)
        if ws.closed:
            return  # the platform re-pushes; dedup answers
        with contextlib.suppress(Exception):
            await ws.send_bytes(fr.ack_frame(message.frame, code, biz_rt_ms))
