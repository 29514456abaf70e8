"""The HTTP webhook ingress ("send events to developer server", docs/protocol.md §1–§6).

``POST {BRIDGE_HTTP_PATH}``: read the body → :meth:`bridge.verify.Verifier.verify` (signature,
freshness, decryption, token) → the handshake's answer, or the inbound event handed to the
delivery → ``200 {"msg": "success"}`` once every record is acknowledged by the broker.

Answers (README "HTTP interface"):

====== ===================================================================================
200    ``{"challenge": …}`` for the handshake; ``{"msg": "success"}`` once every record of the
       event is acknowledged by the broker (or it is a duplicate of a delivered one)
400    body not a JSON object
401    authentication failed (fixed body; the reason goes to the log and metrics only)
403    the client's address is not among the platform's egress IPs
       (``BRIDGE_LARK_IP_ALLOWLIST=enforce``), answered before the body is read
408    the body did not arrive within ``BRIDGE_ANSWER_DEADLINE_S`` of the request
413    body over ``BRIDGE_HTTP_MAX_BODY_BYTES``
415    a ``Content-Encoding`` other than identity (the platform never compresses)
503    not delivered now (broker away, publish timeout, shutting down; in ``enforce`` mode
       before the egress IP list was first fetched) + ``Retry-After``
====== ===================================================================================

The allow-list (:func:`check_source`) is the first thing :func:`handle_event` does, before any
byte of the body is read: the client's address (the peer, or the ``X-Forwarded-For`` entry that
``BRIDGE_HTTP_TRUSTED_PROXY_HOPS`` names, :func:`bridge.allowlist.client_address`) against
the list :class:`bridge.egress_ips.EgressIps` keeps. The handshake is checked like any event.

Every answer comes within ``BRIDGE_ANSWER_DEADLINE_S`` (under the platform's 3 s) of the
request's arrival: reading the body and waiting for the broker share that one deadline. A
client that hangs up mid-body is logged and counted with status 499 ``client_disconnected``.

:func:`map_error` is the one place where an error (a :class:`~bridge.errors.BridgeError` or any
other exception) becomes an HTTP answer, a pure function; :func:`request_context_middleware` sets
``request_id`` for the whole request (:data:`bridge.logs.REQUEST_ID`: every line logged while it
runs carries it), opens the request's span, counts it and writes its one log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from aiohttp import hdrs, web
from opentelemetry.trace import SpanKind

from bridge.allowlist import client_address
from bridge.errors import (
    AuthenticationError,
    BodyTooLarge,
    BridgeError,
    ClientDisconnected,
    Forbidden,
    RequestTimeout,
    Unavailable,
    UnsupportedEncoding,
)
from bridge.ingress.http import json_answer
from bridge.logs import REQUEST_ID, capped
from bridge.state import STATE
from bridge.tracing import set_lark, set_outcome
from bridge.verify import Handshake

log = structlog.get_logger("bridge.request")
#: The standard-library logger behind ``log``: its level (cached by ``logging``) decides whether
#: the request's line is built at all.
_log_level_of = logging.getLogger("bridge.request").isEnabledFor


@dataclass(slots=True)
class RequestLog:
    """Fields of the one log line of a request, filled in as it goes; ``arrived_s``: the event
    loop's clock (``loop.time()``, seconds) when the request reached the handler chain."""

    request_id: str
    arrived_s: float
    outcome: str = "error"
    status: int = 500
    fields: dict[str, Any] = field(default_factory=dict)
    span: Any = None  # the request's span when tracing is on (bridge.tracing)


REQUEST_LOG = web.RequestKey("bridge_request_log", RequestLog)


_OUTCOME_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    408: "timeout",
    413: "too_large",
    415: "unsupported_encoding",
    499: "client_disconnected",
    503: "unavailable",
}


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """What an error becomes: the HTTP ``status``, the request's ``outcome`` (log line and the
    ``bridge_requests_total`` label), the JSON ``body`` (a fixed text, never the error's own) and
    extra ``headers`` (``Retry-After`` for :class:`~bridge.errors.Unavailable`), or None."""

    status: int
    outcome: str
    body: dict[str, str]
    headers: dict[str, str] | None = None


#: The answer to any exception that is no :class:`~bridge.errors.BridgeError`.
INTERNAL_ERROR: Final = ErrorAnswer(500, "error", {"msg": "internal error"})


def map_error(exc: Exception) -> ErrorAnswer:
    """The one place where an error becomes an HTTP answer (docs/architecture.md, "Errors, and
    where they become HTTP").

    Args:
        exc: what the handler raised (aiohttp's own ``HTTPException`` and cancellation are not
            errors of the bridge: the middleware lets them through unmapped).

    Returns:
        For a :class:`~bridge.errors.BridgeError`: its class's status and fixed ``{"msg": …}``,
        the outcome of that status (``bad_request``, ``unauthorized``, ``forbidden``, ``timeout``, ``too_large``,
        ``unsupported_encoding``, ``client_disconnected``, ``unavailable``; else ``error``) and,
        for :class:`~bridge.errors.Unavailable`, ``Retry-After`` in whole seconds. For anything
        else: :data:`INTERNAL_ERROR` (500 ``internal error``).
    """
    if not isinstance(exc, BridgeError):
        return INTERNAL_ERROR
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
    return ErrorAnswer(exc.status, _OUTCOME_OF_STATUS.get(exc.status, "error"), {"msg": exc.message}, headers)


@web.middleware
async def request_context_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The context of one webhook request: its id, log line, span and metrics.

    Other paths (health, readiness, metrics) pass through untouched. For ``BRIDGE_HTTP_PATH``:
    the request id (``X-Request-Id``, capped, or a new one) is set in
    :data:`bridge.logs.REQUEST_ID` for the whole request; a :class:`RequestLog` goes under
    :data:`REQUEST_LOG`; with tracing on, a SERVER span wraps it. Errors become answers through
    :func:`map_error`; then ``bridge_requests_total`` / ``bridge_request_duration_seconds`` and
    the one ``request`` log line are written.

    Args:
        request: the aiohttp request.
        handler: the rest of the chain.

    Returns:
        The handler's response, or the mapped error's JSON answer.

    Raises:
        web.HTTPException: aiohttp's own (405 and the like), counted with outcome ``http_error``.
        asyncio.CancelledError: the server cancelled the handler (outcome ``cancelled``, 499).
    """
    state = request.app[STATE]
    webhook = request.path == state.settings.http_path
    if not webhook:
        return await handler(request)
    arrived_s = asyncio.get_running_loop().time()
    rl = RequestLog(request_id=capped(request.headers.get("X-Request-Id")) or state.request_ids(), arrived_s=arrived_s)
    request[REQUEST_LOG] = rl
    token = REQUEST_ID.set(rl.request_id)
    try:
        if not state.tracing.enabled:
            return await _handle_logged(request, handler, rl)
        attributes = {"http.request.method": request.method, "url.path": state.settings.http_path}
        with state.tracing.event_span(
            f"{request.method} {state.settings.http_path}", SpanKind.SERVER, attributes
        ) as span:
            rl.span = span
            return await _handle_logged(request, handler, rl)
    finally:
        REQUEST_ID.reset(token)


async def _handle_logged(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], rl: RequestLog
) -> web.StreamResponse:
    metrics = request.app[STATE].metrics
    started = time.perf_counter()
    metrics.in_flight.inc()
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 405 and the like from aiohttp itself
            rl.status, rl.outcome = exc.status, "http_error"
            raise
        except asyncio.CancelledError:  # the server cancelled the handler (shutdown past its budget)
            rl.status, rl.outcome = 499, "cancelled"
            raise
        except Exception as exc:
            answer = map_error(exc)
            rl.status, rl.outcome = answer.status, answer.outcome
            if isinstance(exc, BridgeError):
                rl.fields["reason"] = exc.reason
                if isinstance(exc, AuthenticationError):
                    metrics.auth_failures.labels(reason=exc.reason).inc()
            else:
                log.exception("unhandled error")
            return json_answer(answer.body, answer.status, answer.headers)
        else:
            rl.status = response.status
            return response
    finally:
        elapsed = time.perf_counter() - started
        metrics.in_flight.dec()
        set_outcome(rl.span, rl.outcome, reason=rl.fields.get("reason"), status_code=rl.status, error=rl.status >= 500)
        metrics.requests_by(rl.outcome, str(rl.status)).inc()
        metrics.request_latency_by("handshake" if rl.outcome == "handshake" else "event").observe(elapsed)
        if _log_level_of(logging.INFO):
            log.info(
                "request",
                status=rl.status,
                outcome=rl.outcome,
                latency_ms=round(elapsed * 1000, 3),
                **rl.fields,
            )


#: Seconds in ``Retry-After`` while no egress IP list was fetched yet (``enforce``).
EGRESS_IPS_RETRY_AFTER_S: Final = 5


def check_source(request: web.Request, rl: RequestLog) -> None:
    """The allow-list of the platform's egress IPs, applied before any body byte is read.

    Without ``BRIDGE_LARK_IP_ALLOWLIST`` (off) it does nothing. Otherwise the client's address
    (:func:`bridge.allowlist.client_address` with ``BRIDGE_HTTP_TRUSTED_PROXY_HOPS``) is looked
    up in the current list; an unlisted one is counted (``bridge_unlisted_requests_total{mode}``)
    and logged with the request's line (``client_address``, capped).

    Raises:
        Forbidden: ``enforce`` and the address is not listed (or missing).
        Unavailable: ``egress_ips_unknown`` — ``enforce`` and no list was fetched yet.
    """
    egress = request.app[STATE].egress_ips
    if egress is None:
        return
    allowlist = egress.allowlist
    enforce = egress.mode == "enforce"
    if allowlist is None:
        if enforce:
            raise Unavailable("egress_ips_unknown", retry_after_s=EGRESS_IPS_RETRY_AFTER_S)
        return
    state = request.app[STATE]
    address = client_address(
        request.remote, request.headers.getall(hdrs.X_FORWARDED_FOR, ()), state.settings.http_trusted_proxy_hops
    )
    if allowlist.admits(address):
        return
    state.metrics.unlisted_by(egress.mode).inc()
    rl.fields["client_address"] = capped(address) or "-"
    if enforce:
        raise Forbidden()
    rl.fields["unlisted"] = True


async def handle_event(request: web.Request) -> web.Response:
    """``POST {BRIDGE_HTTP_PATH}``: allow-list → verify → (handshake answer | deliver) → answer."""
    state = request.app[STATE]
    rl = request[REQUEST_LOG]
    check_source(request, rl)  # before any byte of the body is read
    if state.draining:
        raise Unavailable("shutting_down", retry_after_s=5)
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedEncoding()
    length = request.content_length
    settings = state.settings
    if length is not None and length > settings.http_max_body_bytes:
        raise BodyTooLarge()
    held = _HeldBytes(state, length)
    try:
        return await _read_and_deliver(request, rl, held, deadline_s=rl.arrived_s + settings.answer_deadline_s)
    finally:
        held.release()


#: Share of ``BRIDGE_HTTP_MAX_BODY_BYTES_IN_FLIGHT`` kept for small bodies (a declared length of
#: at most 1/16 of ``BRIDGE_HTTP_MAX_BODY_BYTES``: 64 KiB by default, where every platform event
#: fits), so that clients stalling in large bodies cannot turn the platform's events away.
SMALL_BODY_RESERVE: Final = 0.25


class _HeldBytes:
    """Body bytes one request holds, counted in ``AppState.body_bytes_in_flight`` as they arrive
    (not as a client declares them: a stalled client holds only what it sent). A large body (or
    one of unknown length) may fill the budget only up to 75 %; the rest is for small ones."""

    __slots__ = ("count", "limit", "state")

    def __init__(self, state: Any, declared: int | None) -> None:
        self.state = state
        self.count = 0
        budget = state.settings.http_max_body_bytes_in_flight
        small = declared is not None and declared <= state.settings.http_max_body_bytes // 16
        self.limit = budget if small else budget - int(budget * SMALL_BODY_RESERVE)

    def take(self, n: int) -> None:
        """Hold ``n`` more bytes; raises :class:`Unavailable` (``bodies_in_flight``) when the
        total over all requests would pass this request's share of
        ``BRIDGE_HTTP_MAX_BODY_BYTES_IN_FLIGHT``."""
        state = self.state
        if state.body_bytes_in_flight + n > self.limit:
            raise Unavailable("bodies_in_flight", retry_after_s=1)
        state.body_bytes_in_flight += n
        self.count += n

    def release(self) -> None:
        self.state.body_bytes_in_flight -= self.count
        self.count = 0


async def _read_body(request: web.Request, held: _HeldBytes, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (else :class:`BodyTooLarge`), each chunk counted
    in ``held`` as it arrives."""
    chunks = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        held.take(len(chunk))
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_and_deliver(
    request: web.Request, rl: RequestLog, held: _HeldBytes, *, deadline_s: float
) -> web.Response:
    """Read the body by ``deadline_s`` (loop clock, s), verify, deliver by the same deadline."""
    state = request.app[STATE]
    limit = state.settings.http_max_body_bytes
    content = request.content
    if content.is_eof():  # the whole body came with the headers (every platform event): no wait
        body = content.read_nowait()
        if len(body) > limit:
            raise BodyTooLarge()
        held.take(len(body))
    else:
        try:
            async with asyncio.timeout_at(deadline_s):
                body = await _read_body(request, held, limit)
        except TimeoutError:
            raise RequestTimeout() from None
        except ConnectionResetError:  # the client hung up mid-body
            raise ClientDisconnected() from None
    received = time.time()
    assert state.verifier is not None  # the route exists only with the webhook enabled
    verified = state.verifier.verify(body, request.headers, now=received)
    if isinstance(verified, Handshake):
        rl.outcome = "handshake"
        return json_answer({"challenge": verified.challenge})
    rl.fields.update(
        lark_type=capped(verified.lark_type),
        event_id=capped(verified.event_id),
        tenant_key=capped(verified.tenant_key),
    )
    set_lark(rl.span, rl.fields["lark_type"], rl.fields["event_id"])
    outcome = await state.sink.deliver(verified, received_ms=int(received * 1000), deadline_s=deadline_s)
    rl.outcome = outcome.kind
    if _log_level_of(logging.INFO):  # only the request's log line reads it
        rl.fields["records"] = [{"topic": t, "partition": p, "offset": o} for t, p, o in outcome.records]
    if outcome.reason:
        rl.fields["reason"] = outcome.reason
    return json_answer({"msg": "success"})
