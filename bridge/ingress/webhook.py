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
413    body over ``BRIDGE_HTTP_MAX_BODY_BYTES``
503    not delivered now (broker away, publish timeout, shutting down) + ``Retry-After``
====== ===================================================================================

:func:`error_middleware` is the one place where :class:`~bridge.errors.BridgeError` becomes an
HTTP answer, and it writes the request's one log line with ``request_id`` bound to the log
context for the whole request (so every line logged while it runs carries it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from aiohttp import web

from bridge.errors import AuthenticationError, BodyTooLarge, BridgeError, Unavailable
from bridge.state import STATE
from bridge.verify import Handshake

log = structlog.get_logger("bridge.request")
_json = msgspec.json.Encoder()


@dataclass(slots=True)
class RequestLog:
    """Fields of the one log line of a request, filled in as it goes."""

    request_id: str
    outcome: str = "error"
    status: int = 500
    fields: dict[str, Any] = field(default_factory=dict)


REQUEST_LOG = web.RequestKey("bridge_request_log", RequestLog)


def json_answer(body: dict[str, str], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response (UTF-8) with ``status`` and optional extra ``headers``."""
    return web.Response(
        body=_json.encode(body), status=status, content_type="application/json", charset="utf-8", headers=headers
    )


_OUTCOME_OF_STATUS = {400: "bad_request", 401: "unauthorized", 413: "too_large", 503: "unavailable"}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one place that maps :class:`BridgeError` to HTTP, and writes the request's log line."""
    state = request.app[STATE]
    webhook = request.path == state.settings.http_path
    if not webhook:
        return await handler(request)
    rl = RequestLog(request_id=request.headers.get("X-Request-Id") or uuid.uuid4().hex)
    request[REQUEST_LOG] = rl
    with structlog.contextvars.bound_contextvars(request_id=rl.request_id):
        return await _handle_logged(request, handler, rl)


async def _handle_logged(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], rl: RequestLog
) -> web.StreamResponse:
    metrics = request.app[STATE].metrics
    started = time.perf_counter()
    metrics.in_flight.inc()
    try:
        try:
            response = await handler(request)
        except BridgeError as exc:
            rl.status = exc.status
            rl.outcome = _OUTCOME_OF_STATUS.get(exc.status, "error")
            rl.fields["reason"] = exc.reason
            if isinstance(exc, AuthenticationError):
                metrics.auth_failures.labels(reason=exc.reason).inc()
            headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
            return json_answer({"msg": exc.message}, exc.status, headers)
        except web.HTTPException as exc:  # 405 and the like from aiohttp itself
            rl.status, rl.outcome = exc.status, "http_error"
            raise
        except Exception:
            rl.status, rl.outcome = 500, "error"
            log.exception("unhandled error")
            return json_answer({"msg": "internal error"}, 500)
        else:
            rl.status = response.status
            return response
    finally:
        elapsed = time.perf_counter() - started
        metrics.in_flight.dec()
        metrics.requests.labels(outcome=rl.outcome, status=str(rl.status)).inc()
        kind = "handshake" if rl.outcome == "handshake" else "event"
        metrics.request_latency.labels(kind=kind).observe(elapsed)
        log.info(
            "request",
            status=rl.status,
            outcome=rl.outcome,
            latency_ms=round(elapsed * 1000, 3),
            **rl.fields,
        )


async def handle_event(request: web.Request) -> web.Response:
    """``POST {BRIDGE_HTTP_PATH}``: verify → (handshake answer | deliver) → answer."""
    state = request.app[STATE]
    rl = request[REQUEST_LOG]
    if state.draining:
        raise Unavailable("shutting_down", retry_after_s=5)
    length = request.content_length
    if length is not None and length > state.settings.http_max_body_bytes:
        raise BodyTooLarge()
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge() from None
    received = time.time()
    verified = state.verifier.verify(body, request.headers, now=received)
    if isinstance(verified, Handshake):
        rl.outcome = "handshake"
        return json_answer({"challenge": verified.challenge})
    rl.fields.update(
        lark_type=verified.lark_type, delivery_id=verified.delivery_id, tenant_key=verified.tenant_key
    )
    outcome = await state.sink.deliver(verified, received_ms=int(received * 1000))
    rl.outcome = outcome.kind
    rl.fields["records"] = [{"topic": t, "partition": p, "offset": o} for t, p, o in outcome.records]
    if outcome.reason:
        rl.fields["reason"] = outcome.reason
    return json_answer({"msg": "success"})


