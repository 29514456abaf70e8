"""The long-connection ingress: events over an outbound WebSocket to the platform, no public URL
(docs/long_connection.md; the design is §9).

One client per process, a background service (``start`` / ``close`` / ``not_ready_reason``)
started in the app's cleanup context once the delivery is ready:

1. :func:`bridge.ingress.connect.fetch_endpoint` → the WebSocket URL and the ``ClientConfig``
   (§1); then :func:`bridge.ingress.connect.open_websocket` (§2), with aiohttp's RFC 6455
   heartbeat so that a half-open connection is noticed.
2. A ``ping`` frame every ``PingInterval`` seconds; a ``pong`` carrying a ``ClientConfig``
   replaces the current one (§4). Nothing received for two ``PingInterval`` s: the connection is
   replaced (the read deadline, §9.4).
3. Data frames of ``type=event`` → :class:`bridge.ingress.reassembly.Reassembler` (split
   messages, §5) → :func:`bridge.inbound.read_inbound` → :meth:`bridge.delivery.EventSink.deliver`
   with the same deadline as the webhook (``BRIDGE_ANSWER_DEADLINE_S`` from the arrival of
   the message's first part) → the ack frame, written only once ``deliver`` returned (§6, §9.2):
   code 200 for published / dead-lettered / duplicate, 500 (the platform re-pushes) for
   :class:`~bridge.errors.Unavailable`, an unreadable payload, a payload over
   ``BRIDGE_LONG_CONNECTION_MAX_PAYLOAD_BYTES``, bad ``sum``/``seq``, more than
   :data:`MAX_IN_FLIGHT` events in delivery (``busy``) or shutdown (``shutting_down``).
4. Reconnection as the SDKs do it (§7), by :func:`bridge.ingress.reconnect.reconnect_delay`. A
   client error (:class:`~bridge.ingress.connect.ClientError`) or exhausted attempts end it for
   good: :attr:`LongConnection.failed` is set with :attr:`LongConnection.stopped`, and the
   process exits non-zero (``bridge.server.serve``).

No signature, encryption or token check: the connection is authenticated when it is opened
(§5). The WebSocket URL admits the connection, so it is a secret: logs carry its ``device_id``,
never the URL. Every duration the client waits on is in :class:`Timings` (tests shrink them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aiohttp
import structlog
from opentelemetry.trace import SpanKind

from bridge.delivery import EventSink
from bridge.errors import Unavailable
from bridge.inbound import UnreadableJSON, read_inbound
from bridge.ingress import frames as fr
from bridge.ingress.connect import ENDPOINT_TIMEOUT_S, ClientError, RetryableError, fetch_endpoint, open_websocket
from bridge.ingress.reassembly import PARTIAL_TTL_S, Complete, Reassembler
from bridge.ingress.reconnect import ClientConfig, GiveUp, reconnect_delay
from bridge.lifecycle import TaskRunner
from bridge.logs import capped
from bridge.metrics import Metrics
from bridge.settings import Settings
from bridge.tracing import Tracing, set_lark, set_outcome

log = structlog.get_logger("bridge.long_connection")

#: aiohttp's RFC 6455 heartbeat: a ping every this many seconds, the connection closed when no
#: pong comes within half of it (§2: the SDK's websockets library pings every 20 s).
HEARTBEAT_S: Final = 20.0
#: Most events being delivered at once; beyond it, acked 500 ``busy`` (§9.1).
MAX_IN_FLIGHT: Final = 1024
#: Frame kinds counted in ``bridge_long_connection_frames_total`` (a fixed set: bounded series).
FRAME_KINDS: Final = ("event", "card", "ping", "pong", "other", "invalid", "text")


@dataclass(frozen=True, slots=True)
class Timings:
    """Every duration the client waits on, in seconds. The defaults are the production values
    (docs/long_connection.md §9.4); tests shrink them instead of sleeping.

    Attributes:
        platform_second_s: the length of one second of the platform's ``ClientConfig`` values
            (``PingInterval``, ``ReconnectInterval``, ``ReconnectNonce``, the SDKs' defaults, and
            the clamp of intervals to [1, 3600] of them — so the ping interval's floor is one
            of them) (§1, §4, §9.4). Default 1.0.
        backoff_first_s: the first wait after a failed attempt before the platform has sent a
            ``ClientConfig``; doubled per attempt up to ``ReconnectInterval`` (§9.4). Default 1.0.
        heartbeat_s: aiohttp's RFC 6455 heartbeat (§2, §9.4). Default :data:`HEARTBEAT_S`.
        read_deadline_pings: the read deadline, in ping intervals: nothing received for that
            long (no pong, no event) replaces the connection (§9.4). Default 2.
        partial_ttl_s: an incomplete split message is dropped this long after its latest part
            (§5). Default :data:`~bridge.ingress.reassembly.PARTIAL_TTL_S`.
        tick_max_s: the read deadline, pings and the partials' expiry are checked every quarter
            ping interval, at most this far apart. Default 1.0.
        endpoint_timeout_s: the endpoint call's timeout (§1). Default
            :data:`~bridge.ingress.connect.ENDPOINT_TIMEOUT_S`.
        ready_poll_s: how often the delivery's readiness is polled before connecting. Default 0.2.
        ws_close_s: the WebSocket close handshake's timeout. Default 5.0.
    """

    platform_second_s: float = 1.0
    backoff_first_s: float = 1.0
    heartbeat_s: float = HEARTBEAT_S
    read_deadline_pings: float = 2.0
    partial_ttl_s: float = PARTIAL_TTL_S
    tick_max_s: float = 1.0
    endpoint_timeout_s: float = ENDPOINT_TIMEOUT_S
    ready_poll_s: float = 0.2
    ws_close_s: float = 5.0


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
    partials: Reassembler
    ping_sent_s: float | None = None
    lost: str | None = None
    close_code: int | None = None


class LongConnection:
    """The long-connection client (module docstring), a background service: :meth:`start` and
    :meth:`close` from the app's cleanup context, :meth:`not_ready_reason` for readiness.

    Args:
        settings: ``lark_app_id`` / ``lark_app_secret`` / ``lark_domain`` (required with the
            long connection), ``long_connection_max_payload_bytes``, ``answer_deadline_s``.
        sink: the delivery (:class:`~bridge.delivery.EventSink`; tests pass a fake).
        metrics: where the ``bridge_long_connection_*`` metrics go.
        delivery_ready: whether the delivery can take events now (producer connected, ledger
            replayed) — the client connects only then, since a connected client is offered
            events (§9.4). Default: always.
        session_factory: makes the aiohttp session (default ``aiohttp.ClientSession``).
        tracing: the spans of events (:mod:`bridge.tracing`; default: the global provider's).
        timings: every duration waited on (default: :class:`Timings`, the production values).
        rand: a random source in ``[0, 1)`` for the reconnect jitter (default :func:`random.random`).
        max_in_flight: most events being delivered at once (default :data:`MAX_IN_FLIGHT`).

    Attributes:
        connected: a WebSocket is open.
        failed: why the client stopped for good (a client error or exhausted attempts), else None.
        stopped: set together with :attr:`failed`.
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
        timings: Timings | None = None,
        rand: Callable[[], float] = random.random,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        assert settings.lark_app_id is not None, "the settings require it with the long connection"
        self._settings = settings
        self._tracing = tracing or Tracing()
        self._sink = sink
        self._metrics = metrics
        self._delivery_ready = delivery_ready
        self._session_factory = session_factory or aiohttp.ClientSession
        self._timings = timings or Timings()
        self._rand = rand
        self._max_in_flight = max_in_flight
        self._config = ClientConfig(second_s=self._timings.platform_second_s)
        self._task = TaskRunner("bridge-long-connection")
        self._events: set[asyncio.Task[None]] = set()
        self._closing = False
        self.connected = False
        self.failed: str | None = None
        self.stopped = asyncio.Event()

    def not_ready_reason(self) -> str | None:
        """Why the long connection cannot take events now (§9.4).

        Returns:
            ``long_connection_down`` while no WebSocket is open, else None.
        """
        return None if self.connected else "long_connection_down"

    async def start(self) -> None:
        """Start connecting in the background (once the delivery is ready). Never raises."""
        self._task.spawn(self._run())

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop: new events are acked 500 ``shutting_down``; the acks of events in flight are
        sent (§9.4); then the WebSocket is closed with code 1000.

        Args:
            timeout_s: seconds to wait at most for the events in flight; default: the answer
                deadline (``settings.answer_deadline_s``), the longest an event can take.
        """
        self._closing = True
        if self._events:
            wait_s = self._settings.answer_deadline_s if timeout_s is None else timeout_s
            await asyncio.wait(list(self._events), timeout=wait_s)
        await self._task.cancel()
        self.connected = False
        self._metrics.long_connection_up.set(0)

    # ---- connecting -----------------------------------------------------------------------

    async def _run(self) -> None:
        t = self._timings
        async with self._session_factory() as session:
            attempts = 0
            lost_before = False
            while not self._closing:
                while not self._delivery_ready():  # noqa: ASYNC110 - a predicate over several parts, polled
                    await asyncio.sleep(t.ready_poll_s)
                if lost_before:
                    jitter = reconnect_delay(0, config=self._config, lost_before=True, rand=self._rand)
                    if isinstance(jitter, float) and jitter > 0:
                        await asyncio.sleep(jitter)
                try:
                    endpoint = await fetch_endpoint(session, self._settings, timeout_s=t.endpoint_timeout_s)
                    if endpoint.client_config is not None:
                        self._config.update(endpoint.client_config)
                        self._config.received = True
                    ws = await open_websocket(
                        session,
                        endpoint.url,
                        heartbeat_s=t.heartbeat_s,
                        max_msg_size=self._settings.long_connection_max_payload_bytes + 64 * 1024,
                        close_timeout_s=t.ws_close_s,
                    )
                except ClientError as exc:
                    self._fail(exc.reason)
                    return
                except RetryableError as exc:
                    attempts += 1
                    self._metrics.long_connection_connects.labels(outcome=exc.reason).inc()
                    delay = reconnect_delay(
                        attempts,
                        config=self._config,
                        lost_before=lost_before,
                        rand=self._rand,
                        backoff_first_s=t.backoff_first_s,
                    )
                    if isinstance(delay, GiveUp):
                        self._fail(f"gave up after {attempts} attempts ({exc.reason})")
                        return
                    log.warning("long connection: %s; retrying in %.0fs", exc.reason, delay)
                    await asyncio.sleep(delay)
                    lost_before = False
                    continue
                attempts = 0
                self._metrics.long_connection_connects.labels(outcome="connected").inc()
                await self._serve(ws, endpoint.url)
                lost_before = True

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.error("long connection stopped for good: %s", reason)
        self.stopped.set()

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
        loop = asyncio.get_running_loop()
        partials = Reassembler(
            self._settings.long_connection_max_payload_bytes,
            loop.time,
            ttl_s=self._timings.partial_ttl_s,
            on_evict=self._metrics.long_connection_partials_dropped.inc,
        )
        conn = _Connection(ws, service_id, loop.time(), partials)
        pinger = asyncio.create_task(self._ping(conn))
        try:
            while True:
                msg = await ws.receive()
                conn.last_frame_s = loop.time()
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
            # 1001 "going away" when we leave a quiet platform (§9.4); 1000 otherwise. The code is
            # chosen here: the deadline's own close() wakes this loop first, whose close goes out.
            code = aiohttp.WSCloseCode.GOING_AWAY if conn.lost == "read_deadline" else aiohttp.WSCloseCode.OK
            with contextlib.suppress(Exception):
                await ws.close(code=code)
            reason = "shutdown" if self._closing else (conn.lost or "error")
            if reason != "shutdown":
                self._metrics.long_connection_disconnects.labels(reason=reason).inc()
            log.info("long connection closed", device_id=device_id, reason=reason, platform_close_code=conn.close_code)

    async def _ping(self, conn: _Connection) -> None:
        """Ping every PingInterval (§4); close a connection that has sent nothing — no pong, no
        event — for two ping intervals (the read deadline: a half-open socket, or a platform that
        went quiet); drop incomplete messages 5 s after their latest part (§5)."""
        t = self._timings
        last_ping = -float("inf")
        loop = asyncio.get_running_loop()
        while not conn.ws.closed:
            now = loop.time()
            interval = self._config.ping_interval_s
            if now - conn.last_frame_s > t.read_deadline_pings * interval:
                conn.lost = "read_deadline"
                log.warning("long connection: nothing received for %.0fs; reconnecting", now - conn.last_frame_s)
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
                return
            if now - last_ping >= interval:
                last_ping = conn.ping_sent_s = now
                with contextlib.suppress(Exception):
                    await conn.ws.send_bytes(fr.ping_frame(conn.service_id))
            dropped = conn.partials.expire(now)
            if dropped:
                self._metrics.long_connection_partials_dropped.inc(dropped)
            await asyncio.sleep(min(t.tick_max_s, interval / 4))

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
        result = conn.partials.add(headers, frame.payload, received_ms=int(time.time() * 1000))
        if result is None:
            return None  # no ack for a part that does not complete its message (§5)
        if isinstance(result, Complete):
            return self._spawn(conn.ws, _Message(frame, result.payload, result.first_s, result.first_ms))
        return self._spawn(conn.ws, _Message(frame, None, result.first_s, result.first_ms, result.reason))

    def _spawn(self, ws: aiohttp.ClientWebSocketResponse, message: _Message) -> None:
        if message.refused is None and (self._closing or len(self._events) >= self._max_in_flight):
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
                    "event_id": capped(event.event_id),
                    "tenant_key": capped(event.tenant_key),
                }
                set_lark(span, fields["lark_type"], fields["event_id"])
                try:
                    result = await self._sink.deliver(
                        event,
                        received_ms=message.arrived_ms,
                        deadline_s=message.arrived_s + self._settings.answer_deadline_s,
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
