"""The aiohttp application: the factory, health/readiness/metrics.

Routes: ``POST {BRIDGE_HTTP_PATH}`` (the webhook ingress, :mod:`bridge.ingress.webhook`),
``GET /healthz`` (liveness), ``GET /readyz`` (readiness), ``GET /metrics`` (Prometheus). All
app state lives under :data:`bridge.state.STATE` (a typed ``web.AppKey``); the Kafka producer's
life is the app's cleanup context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.dedup import DeliveryLedger
from bridge.delivery import EventSink, KafkaDelivery
from bridge.ingress.webhook import error_middleware, handle_event
from bridge.ingress.webhook import json_answer as _answer
from bridge.metrics import Metrics
from bridge.normalize import Topics
from bridge.publish import Publisher
from bridge.settings import Settings
from bridge.state import STATE, AppState
from bridge.verify import Verifier

__all__ = ["STATE", "AppState", "create_app", "topics_of"]


def topics_of(settings: Settings) -> Topics:
    """The topic map configured by ``BRIDGE_TOPIC_*``."""
    return Topics.from_names(
        room_created=settings.topic_room_created,
        reserve_config_updated=settings.topic_reserve_config_updated,
        third_party=settings.topic_third_party_meeting_room_event,
        dead_letter=settings.topic_dead_letter,
    )


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
            publisher,
            topics,
            ledger,
            metrics,
            timeout_s=settings.kafka_publish_timeout_s,
            max_record_bytes=settings.kafka_max_record_bytes,
        )
        sink = delivery
    app = web.Application(client_max_size=settings.http_max_body_bytes, middlewares=[error_middleware])
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
