"""The app's typed state: one :class:`AppState` under :data:`STATE`, built by ``create_app``.

Kept apart from :mod:`bridge.app` so that the ingress modules can read it without importing the
factory that registers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from bridge.dedup import DeliveryLedger
from bridge.dedup_feed import LedgerFeed
from bridge.delivery import EventSink
from bridge.egress_ips import EgressIps
from bridge.ingress.long_connection import LongConnection
from bridge.logs import RequestIds
from bridge.metrics import Metrics
from bridge.publish import Publisher
from bridge.registry import SchemaIds
from bridge.settings import Settings
from bridge.tracing import Tracing
from bridge.verify import Verifier


@dataclass(slots=True)
class AppState:
    """Everything the handlers need, built once by :func:`bridge.app.create_app`.

    ``draining`` turns true when shutdown begins: readiness answers 503 and new events get 503.
    ``publisher``, ``ledger`` and ``feed`` are None when a test passed its own sink; ``feed`` is
    also None with ``BRIDGE_DEDUP_STORE=memory``; ``schema_ids`` is None without a schema
    registry (``BRIDGE_SCHEMA_REGISTRY_URL``); ``verifier`` without the webhook and
    ``long_connection`` without the long connection (``BRIDGE_LARK_SUBSCRIPTION_MODE``). ``body_bytes_in_flight``:
    request body bytes received and held by requests being handled (``BRIDGE_HTTP_MAX_BODY_BYTES_IN_FLIGHT``).
    ``request_ids`` names requests that bring no ``X-Request-Id``; ``tracing`` makes their spans.
    ``egress_ips``: the platform's egress IP list the webhook checks clients against, None with
    ``BRIDGE_LARK_IP_ALLOWLIST=off`` or without the webhook.
    """

    settings: Settings
    verifier: Verifier | None
    sink: EventSink
    metrics: Metrics
    publisher: Publisher | None
    ledger: DeliveryLedger | None = None
    feed: LedgerFeed | None = None
    schema_ids: SchemaIds | None = None
    long_connection: LongConnection | None = None
    draining: bool = False
    body_bytes_in_flight: int = 0
    request_ids: RequestIds = field(default_factory=RequestIds)
    tracing: Tracing = field(default_factory=Tracing)
    egress_ips: EgressIps | None = None


STATE = web.AppKey("bridge_state", AppState)
