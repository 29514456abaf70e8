"""The aiohttp application: factory, the webhook handler, health/readiness/metrics, error mapping.

Routes: ``POST {BRIDGE_HTTP_PATH}`` (the Lark webhook), ``GET /healthz`` (liveness),
``GET /readyz`` (readiness), ``GET /metrics`` (Prometheus). All app state lives under
:data:`STATE` (a typed ``web.AppKey``); the Kafka producer's life is the app's cleanup context.

Answers of the webhook (issue #2, #4):

====== ===================================================================================
200    ``{"challenge": …}`` for the handshake; ``{"msg": "success"}`` once every record of the
       event is acknowledged by the broker (or it is a duplicate of a delivered one)
400    body not a JSON object
401    authentication failed (fixed body; the reason goes to the log and metrics only)
413    body over ``BRIDGE_HTTP_MAX_BODY_BYTES``
503    not delivered now (broker away, publish timeout, shutting down) + ``Retry-After``
====== ===================================================================================
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.dedup import DeliveryLedger
from bridge.delivery import EventSink, KafkaDelivery
from bridge.errors import AuthenticationError, BodyTooLarge, BridgeError, Unavailable
from bridge.metrics import Metrics
from bridge.normalize import Topics
from bridge.publish import Publisher
from bridge.settings import Settings
from bridge.verify import Verifier

log = structlog.get_logger("bridge.request")
_json = msgspec.json.Encoder()


@dataclass(slots=True)
class AppState:
    """Everything the handlers need, built once by :func:`create_app`."""

    settings: Settings
    verifier: Verifier
    sink: EventSink
    metrics: Metrics
    publisher: Publisher | None
    ledger: DeliveryLedger | None = None
    draining: bool = False


@dataclass(slots=True)
class RequestLog:
    """Fields of the one log line of a request, filled in as it goes."""

    request_id: str
    outcome: str = "error"
    status: int = 500
    fields: dict[str, Any] = field(default_factory=dict)


STATE = web.AppKey("bridge_state", AppState)
REQUEST_LOG = web.RequestKey("bridge_request_log", RequestLog)


def topics_of(settings: Settings) -> Topics:
    """The topic map configured by ``BRIDGE_TOPIC_*``."""
    return Topics.from_names(
        room_created=settings.topic_room_created,
        reserve_config_updated=settings.topic_reserve_config_updated,
        third_party=settings.topic_third_party_meeting_room_event,
        dead_letter=settings.topic_dead_letter,
    )


def _answer(body: dict[str, str], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
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
    metrics = state.metrics
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
            return _answer({"msg": exc.message}, exc.status, headers)
        except web.HTTPException as exc:  # 405 and the like from aiohttp itself
            rl.status, rl.outcome = exc.status, "http_error"
            raise
        except Exception:
            rl.status, rl.outcome = 500, "error"
            log.exception("unhandled error", request_id=rl.request_id)
            return _answer({"msg": "internal error"}, 500)
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
            request_id=rl.request_id,
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
    auth = state.verifier.verify(body, request.headers, now=received)
    if auth.handshake:
        rl.outcome = "handshake"
        assert auth.challenge is not None
        return _answer({"challenge": auth.challenge})
    outcome = await state.sink.deliver(auth, received_ms=int(received * 1000))
    rl.outcome = outcome.kind
    rl.fields.update(
        lark_type=outcome.lark_type,
        delivery_id=outcome.delivery_id,
        tenant_key=outcome.tenant_key,
        records=[{"topic": t, "partition": p, "offset": o} for t, p, o in outcome.records],
    )
    if outcome.reason:
        rl.fields["reason"] = outcome.reason
    return _answer({"msg": "success"})


async def handle_healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return _answer({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    """Readiness: 200 while the producer is connected and the topics exist; else 503 + reason."""
    state = request.app[STATE]
    if state.draining:
        return _answer({"status": "unavailable", "reason": "shutting_down"}, 503)
    publisher = state.publisher
    if publisher is not None and not publisher.ready:
        return _answer({"status": "unavailable", "reason": publisher.not_ready_reason or "not_ready"}, 503)
    return _answer({"status": "ok"})


async def handle_metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this app's registry."""
    state = request.app[STATE]
    resp = web.Response(body=generate_latest(state.metrics.registry))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def create_app(
    settings: Settings,
    *,
    sink: EventSink | None = None,
    producer_factory: Callable[[], AIOKafkaProducer] | None = None,
) -> web.Application:
    """Build the bridge's aiohttp app from ``settings``.

    ``sink``: where authenticated events go; default is the Kafka delivery (producer started and
    stopped by the app's cleanup context). A test may pass its own and then no producer is made.
    ``producer_factory``: see :class:`bridge.publish.Publisher`.
    """
    metrics = Metrics()
    verifier = Verifier(
        settings.lark_verification_token.get_secret_value(),
        settings.encrypt_keys,
        max_age_s=settings.lark_max_signature_age_s,
    )
    publisher: Publisher | None = None
    delivery: KafkaDelivery | None = None
    ledger: DeliveryLedger | None = None
    if sink is None:
        topics = topics_of(settings)
        publisher = Publisher(settings, topics, metrics, producer_factory=producer_factory)
        ledger = DeliveryLedger(settings.dedup_ttl_s, settings.dedup_max_entries)
        delivery = KafkaDelivery(
            publisher, topics, ledger, metrics, timeout_s=settings.kafka_publish_timeout_s
        )
        sink = delivery
    app = web.Application(
        client_max_size=settings.http_max_body_bytes, middlewares=[error_middleware]
    )
    app[STATE] = AppState(settings, verifier, sink, metrics, publisher, ledger)
    app.router.add_post(settings.http_path, handle_event)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)

    if publisher is not None:

        async def producer_ctx(app: web.Application) -> AsyncIterator[None]:
            await publisher.start()
            yield
            app[STATE].draining = True
            if delivery is not None:
                await delivery.drain(settings.kafka_publish_timeout_s)
            await publisher.close(timeout_s=max(1.0, settings.shutdown_timeout_s / 2))

        app.cleanup_ctx.append(producer_ctx)
    return app
