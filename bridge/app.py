"""The aiohttp application: the factory, health/readiness/metrics.

Routes: ``POST {BRIDGE_HTTP_PATH}`` (the webhook ingress, :mod:`bridge.ingress.webhook`),
``GET /healthz`` (liveness), ``GET /readyz`` (readiness), ``GET /metrics`` (Prometheus). All
app state lives under :data:`bridge.state.STATE` (a typed ``web.AppKey``); the Kafka producer's
life is the app's cleanup context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.dedup import DeliveryLedger
from bridge.dedup_feed import LedgerFeed
from bridge.delivery import EventSink, KafkaDelivery
from bridge.egress_ips import EgressIps
from bridge.ingress.http import json_answer as _answer
from bridge.ingress.long_connection import LongConnection
from bridge.ingress.webhook import handle_event, request_context_middleware
from bridge.lark_api import LarkApi
from bridge.metrics import Metrics
from bridge.normalize import Topics
from bridge.publish import Publisher
from bridge.registry import WIRE_PREFIX_BYTES, RegistryClient, SchemaIds
from bridge.settings import DedupStore, Settings
from bridge.state import STATE, AppState
from bridge.tracing import Tracing
from bridge.verify import Verifier

__all__ = ["STATE", "AppState", "create_app"]


async def handle_healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return _answer({"status": "ok"})


def not_ready_reason(state: AppState) -> str | None:
    """Why the bridge is not ready (``shutting_down``, the producer's reason, the schema
    registry's, ``dedup_replay``, ``long_connection_down``, ``egress_ips_unknown``), or None when
    it is: the producer is connected, the topics exist, every topic's schema id is known (with a
    registry), the dedup ledger is replayed, — with the long connection as the only ingress — its
    WebSocket is open (docs/long_connection.md §9.4; with ``both`` the webhook keeps its traffic
    meanwhile) and — with ``BRIDGE_LARK_IP_ALLOWLIST=enforce`` — the platform's egress IP list
    was fetched."""
    reason = delivery_not_ready_reason(state)
    if reason is None and state.long_connection is not None and not state.settings.webhook_enabled:
        return state.long_connection.not_ready_reason()
    if reason is None and state.egress_ips is not None:
        return state.egress_ips.not_ready_reason()
    return reason


def delivery_ready(state: AppState) -> bool:
    """The delivery can take events now (:func:`delivery_not_ready_reason` has none)."""
    return delivery_not_ready_reason(state) is None


def delivery_not_ready_reason(state: AppState) -> str | None:
    """Why the delivery cannot take events now — ``shutting_down``, or the first reason of the
    producer, the schema ids and the dedup feed, in that order — or None."""
    if state.draining:
        return "shutting_down"
    for service in (state.publisher, state.schema_ids, state.feed):
        if service is not None and (reason := service.not_ready_reason()) is not None:
            return reason
    return None


async def handle_readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when :func:`not_ready_reason` has none; else 503 + reason."""
    reason = not_ready_reason(request.app[STATE])
    if reason is not None:
        return _answer({"status": "unavailable", "reason": reason}, 503)
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
    consumer_factory: Callable[[], AIOKafkaConsumer] | None = None,
    registry_client_factory: Callable[[], RegistryClient] | None = None,
    long_connection_session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    lark_api_factory: Callable[[aiohttp.ClientSession], LarkApi] | None = None,
    tracer_provider: Any | None = None,
) -> web.Application:
    """Build the bridge's aiohttp app from ``settings``.

    ``sink``: where authenticated events go; default is the Kafka delivery (producer and, with
    ``BRIDGE_DEDUP_STORE=kafka``, the dedup ledger's feed started and stopped by the app's cleanup
    context). A test may pass its own and then neither is made. ``producer_factory`` /
    ``consumer_factory`` / ``registry_client_factory``: see :class:`bridge.publish.Publisher` /
    :class:`bridge.dedup_feed.LedgerFeed` / :class:`bridge.registry.SchemaIds`. With
    ``BRIDGE_SCHEMA_REGISTRY_URL`` set, the topics' schema ids are resolved in the same cleanup
    context, and records are framed in the Confluent wire format. ``tracer_provider``: the
    OpenTelemetry provider of the spans (:mod:`bridge.tracing`; default: the global one, a no-op
    unless something configured it — tracing off). With ``BRIDGE_LARK_IP_ALLOWLIST`` on (and the
    webhook), the platform's egress IP list is fetched and refreshed by
    :class:`bridge.egress_ips.EgressIps` through the Open API client ``lark_api_factory`` builds
    (default :meth:`bridge.lark_api.LarkApi.from_settings`).
    """
    metrics = Metrics()
    tracing = Tracing(tracer_provider)
    verifier: Verifier | None = None
    if settings.webhook_enabled:
        assert settings.lark_verification_token is not None  # the settings require it
        verifier = Verifier(
            settings.lark_verification_token.get_secret_value(),
            settings.encrypt_keys,
            max_age_s=settings.lark_max_signature_age_s,
        )
    publisher: Publisher | None = None
    delivery: KafkaDelivery | None = None
    ledger: DeliveryLedger | None = None
    feed: LedgerFeed | None = None
    schema_ids: SchemaIds | None = None
    if sink is None:
        topics = Topics.from_settings(settings)
        if settings.schema_registry_url is not None:
            schema_ids = SchemaIds(settings, topics, metrics, client_factory=registry_client_factory)
        ids = schema_ids
        publisher = Publisher(
            settings,
            topics,
            metrics,
            producer_factory=producer_factory,
            value_prefixes=(lambda: ids.prefixes) if ids is not None else None,
            tracing=tracing,
            close_timeout_s=max(1.0, settings.shutdown_timeout_s / 2),
        )
        ledger = DeliveryLedger(settings.dedup_ttl_s, settings.dedup_max_entries)
        if settings.dedup_store == DedupStore.KAFKA:
            feed = LedgerFeed(settings, topics, ledger, metrics, consumer_factory=consumer_factory)
        delivery = KafkaDelivery(
            publisher,
            topics,
            ledger,
            metrics,
            timeout_s=settings.answer_deadline_s,
            # the wire prefix of a registry's framing counts in the producer's size limit too
            max_record_bytes=settings.kafka_max_record_bytes - (WIRE_PREFIX_BYTES if schema_ids is not None else 0),
            ledger_ready=(lambda: feed.ready) if feed is not None else None,
            close_timeout_s=settings.answer_deadline_s,
            barrier=feed.caught_up if feed is not None else None,
            barrier_age_s=settings.dedup_barrier_age_s,
        )
        sink = delivery
    long_connection: LongConnection | None = None
    if settings.long_connection_enabled:
        long_connection = LongConnection(
            settings,
            sink,
            metrics,
            delivery_ready=lambda: delivery_ready(state),
            session_factory=long_connection_session_factory,
            tracing=tracing,
        )
    egress_ips: EgressIps | None = None
    if settings.webhook_enabled and settings.lark_ip_allowlist != "off":
        egress_ips = EgressIps(settings, metrics, api_factory=lark_api_factory)
    app = web.Application(client_max_size=settings.http_max_body_bytes, middlewares=[request_context_middleware])
    state = app[STATE] = AppState(
        settings,
        verifier,
        sink,
        metrics,
        publisher,
        ledger,
        feed,
        schema_ids,
        long_connection=long_connection,
        tracing=tracing,
        egress_ips=egress_ips,
    )
    metrics.ready.set_function(lambda: 0.0 if not_ready_reason(state) else 1.0)
    if settings.webhook_enabled:
        app.router.add_post(settings.http_path, handle_event)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)

    services: list[Service] = [
        s
        for s in (
            # first: the list is fetched while the producer connects; closed last
            egress_ips,
            schema_ids,
            publisher,
            # between the producer and the feed: closing it waits for publishes whose requests
            # already timed out, while the producer still runs
            delivery,
            feed,
            # started last, once the delivery can take its events; closed first (acks of the
            # events in flight written before the producer goes)
            long_connection,
        )
        if s is not None
    ]
    if services:

        async def services_ctx(app: web.Application) -> AsyncIterator[None]:
            for service in services:
                await service.start()
            yield
            app[STATE].draining = True
            for service in reversed(services):
                await service.close()

        app.cleanup_ctx.append(services_ctx)
    return app


class Service(Protocol):
    """What the app's cleanup context starts in order and closes in reverse order
    (:class:`bridge.lifecycle.BackgroundService` without the readiness)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...
