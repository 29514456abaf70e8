"""Prometheus metrics of one bridge app, in a registry of its own (no process globals).

Histogram buckets resolve the platform's deadlines: 1 s for the URL-verification handshake and
3 s for an event (docs/protocol.md §5, §7). Labels are fixed identifiers (outcomes, reasons, Lark types,
topic names) — never a token, key, body or delivery id.
"""

from __future__ import annotations

from typing import Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)


class Children(Generic[M]):
    """The children of a labelled metric by label values, each looked up once: ``metric.labels()``
    validates and locks on every call, this is one dict lookup on the hot path. Label values are
    positional, in the metric's label order; like the metric's own, the cache grows with the
    label values' cardinality, which the callers keep bounded (fixed identifiers)."""

    __slots__ = ("_cache", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._cache: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        """The child of ``values`` (as ``metric.labels(*values)``)."""
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child


LATENCY_BUCKETS_S: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    3.0,
    5.0,
)


class Metrics:
    """The bridge's metrics; ``registry`` is what ``GET /metrics`` renders."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bridge_requests_total",
            "Webhook requests by outcome and HTTP status.",
            ["outcome", "status"],
            registry=r,
        )
        self.published = Counter(
            "bridge_events_published_total",
            "Records acknowledged by the broker, by Lark type and topic.",
            ["lark_type", "topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "bridge_dead_letters_total",
            "Dead-letter records acknowledged, by reason.",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "bridge_duplicates_suppressed_total",
            "Deliveries answered 200 without a new record (already delivered), by who marked the "
            "id first: local (this process published it) or log (read from the bridge's topics: "
            "another replica, or this one before a restart).",
            ["source"],
            registry=r,
        )
        self.auth_failures = Counter(
            "bridge_auth_failures_total",
            "Requests rejected with 401, by reason.",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge("bridge_requests_in_flight", "Webhook requests being handled.", registry=r)
        self.request_latency = Histogram(
            "bridge_request_duration_seconds",
            "Webhook handling time, receive to answer, by kind (handshake/event).",
            ["kind"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.ack_latency = Histogram(
            "bridge_broker_ack_duration_seconds",
            "From handing a request's records to the producer to the broker's last ack.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.publish_failures = Counter(
            "bridge_publish_failures_total",
            "Publishes that did not complete, by reason.",
            ["reason"],
            registry=r,
        )
        self.producer_starts = Counter(
            "bridge_producer_starts_total",
            "Kafka producers started (the first, then reconnects and replacements).",
            registry=r,
        )
        self.producer_replacements = Counter(
            "bridge_producer_replacements_total",
            "Producers replaced after a fatal error, by reason.",
            ["reason"],
            registry=r,
        )
        self.dedup_entries = Gauge(
            "bridge_dedup_entries",
            "Delivery ids held in the dedup window.",
            registry=r,
        )
        self.ready = Gauge("bridge_ready", "1 while /readyz answers 200.", registry=r)
        self.dedup_replay_seconds = Gauge(
            "bridge_dedup_replay_seconds",
            "Duration of the dedup ledger's replay from the bridge's topics at start, in seconds.",
            registry=r,
        )
        self.dedup_replay_ids = Gauge(
            "bridge_dedup_replay_ids",
            "Delivery ids read from the bridge's topics by the replay at start.",
            registry=r,
        )
        self.dedup_replay_incomplete = Counter(
            "bridge_dedup_replay_incomplete_total",
            "Replays still running after BRIDGE_DEDUP_REPLAY_TIMEOUT_S (the bridge served anyway).",
            registry=r,
        )
        self.registry_failures = Counter(
            "bridge_schema_registry_failures_total",
            "Failed attempts to register or look up the topics' schemas, by reason.",
            ["reason"],
            registry=r,
        )
        self.long_connection_up = Gauge(
            "bridge_long_connection_up", "1 while the long connection's WebSocket is open.", registry=r
        )
        self.long_connection_connects = Counter(
            "bridge_long_connection_connects_total",
            "Attempts to open the long connection, by outcome (connected, or why it failed).",
            ["outcome"],
            registry=r,
        )
        self.long_connection_disconnects = Counter(
            "bridge_long_connection_disconnects_total",
            "Long connections lost (each followed by a reconnect), by reason: read_deadline, "
            "heartbeat, server_closed, error.",
            ["reason"],
            registry=r,
        )
        self.long_connection_ping_rtt = Histogram(
            "bridge_long_connection_ping_rtt_seconds",
            "Round trip from a ping frame to the platform's pong, in seconds.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.long_connection_frames = Counter(
            "bridge_long_connection_frames_total",
            "Frames received over the long connection, by kind (event, card, ping, pong, other, invalid, text).",
            ["kind"],
            registry=r,
        )
        self.long_connection_acks = Counter(
            "bridge_long_connection_acks_total",
            "Events acknowledged over the long connection, by ack code (200 handled, 500 re-push).",
            ["code"],
            registry=r,
        )
        self.long_connection_partials_dropped = Counter(
            "bridge_long_connection_partials_dropped_total",
            "Split messages dropped incomplete (a part missing after 5 s, or too many at once).",
            registry=r,
        )
        self.dedup_tail_lag = Histogram(
            "bridge_dedup_tail_lag_seconds",
            "Delay from a record's timestamp to its delivery id entering this process's ledger.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        # Cached children of the metrics written for every event (see Children).
        self.requests_by: Children[Counter] = Children(self.requests)
        self.request_latency_by: Children[Histogram] = Children(self.request_latency)
        self.published_by: Children[Counter] = Children(self.published)
        self.dead_letters_by: Children[Counter] = Children(self.dead_letters)
        self.duplicates_by: Children[Counter] = Children(self.duplicates)
        self.long_connection_frames_by: Children[Counter] = Children(self.long_connection_frames)
        self.long_connection_acks_by: Children[Counter] = Children(self.long_connection_acks)
