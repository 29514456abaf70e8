"""Prometheus metrics of one bridge app, in a registry of its own (no process globals).

Histogram buckets resolve the platform's deadlines: 1 s for the URL-verification handshake and
3 s for an event (docs/protocol.md §5, §7). Labels are fixed identifiers (outcomes, reasons, Lark types,
topic names) — never a token, key, body or event id. Every label's values are declared in
:func:`label_values` (a test fails for a label without one), and :func:`metrics_markdown` — the
table of ``docs/metrics.md``, ``python -m bridge metrics-reference`` — is generated from the
metrics of :class:`Metrics` and those declarations.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.utils import floatToGoString

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
        self.transactions = Counter(
            "bridge_kafka_transactions_total",
            "Kafka transactions ended (BRIDGE_KAFKA_TRANSACTIONS), by outcome: committed, or aborted "
            "(a send failed, or the earliest answer deadline of its deliveries passed first).",
            ["outcome"],
            registry=r,
        )
        self.transaction_deliveries = Histogram(
            "bridge_kafka_transaction_deliveries",
            "Deliveries sharing one Kafka transaction (group commit).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
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
            "Event ids held in the dedup window.",
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
            "Event ids read from the bridge's topics by the replay at start.",
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
            "Delay from a record's timestamp to its event id entering this process's ledger.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.dedup_feed_lag_records = Gauge(
            "bridge_dedup_feed_lag_records",
            "Records of a partition of the bridge's topics the dedup feed has not read yet (high "
            "watermark minus its position), sampled every 5 s.",
            ["topic", "partition"],
            registry=r,
        )
        self.dedup_feed_lag_seconds = Gauge(
            "bridge_dedup_feed_lag_seconds",
            "How long a partition of the bridge's topics has been behind in the dedup feed (0 when "
            "read up to its high watermark), sampled every 5 s.",
            ["topic", "partition"],
            registry=r,
        )
        self.dedup_barriers = Counter(
            "bridge_dedup_barriers_total",
            "Retries (events created more than BRIDGE_DEDUP_BARRIER_AGE_S before they arrived) that "
            "waited for the dedup feed to catch up with the broker before publishing.",
            registry=r,
        )
        self.egress_ips = Gauge(
            "bridge_egress_ips",
            "Ranges in the allow-list of the platform's egress IPs (BRIDGE_LARK_IP_ALLOWLIST), as last "
            "fetched; 0 before the first fetch.",
            registry=r,
        )
        self.egress_ips_age_seconds = Gauge(
            "bridge_egress_ips_age_seconds",
            "Seconds since the egress IP list was last fetched successfully (+Inf before the first "
            "fetch; 0 with BRIDGE_LARK_IP_ALLOWLIST=off).",
            registry=r,
        )
        self.egress_ips_refresh_failures = Counter(
            "bridge_egress_ips_refresh_failures_total",
            "Failed fetches of the egress IP list (each attempt), by error name; the last good list stays in use.",
            ["reason"],
            registry=r,
        )
        self.unlisted_requests = Counter(
            "bridge_unlisted_requests_total",
            "Webhook requests from an address not in the egress IP list, by BRIDGE_LARK_IP_ALLOWLIST "
            "mode: enforce (answered 403) or report (let through).",
            ["mode"],
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
        self.unlisted_by: Children[Counter] = Children(self.unlisted_requests)


# ---- the metrics reference (docs/metrics.md) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelValues:
    """The values one metric label can take — each distinct value is a new series, so every label
    is bounded. ``values``: the closed set; ``families``: values made of a fixed part and a bounded
    one, written ``prefix_<what>`` (e.g. ``connect_<exception class>``); ``note``: where the set
    comes from, as the reference shows it (instead of the list when that is longer than
    :data:`MAX_LISTED`)."""

    values: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    note: str = ""

    def admits(self, value: str) -> bool:
        """``value`` is one of :attr:`values` or fits one of :attr:`families`."""
        return value in self.values or any(_family_pattern(f).fullmatch(value) for f in self.families)

    def markdown(self) -> str:
        """The set as the reference table shows it."""
        parts: list[str] = []
        if len(self.values) <= MAX_LISTED:
            parts.append(", ".join(f"`{v}`" for v in self.values))
        parts.extend(f"`{f}`" for f in self.families)
        text = ", ".join(p for p in parts if p)
        if len(self.values) > MAX_LISTED:
            text = f"{self.note} ({len(self.values)} values)" + (f"; {text}" if text else "")
        elif self.note:
            text = f"{text} ({self.note})" if text else self.note
        return text


#: Longest value set the reference lists in full; a longer one is shown by its note and size.
MAX_LISTED: Final = 16


def _family_pattern(family: str) -> re.Pattern[str]:
    """``"connect_<exception class>"`` → ``connect_[A-Za-z0-9_]+``."""
    return re.compile(r"[A-Za-z0-9_]+".join(re.escape(part) for part in re.split(r"<[^>]+>", family)))


def _class_names(base: type) -> tuple[str, ...]:
    """``base`` and every subclass of it, by name."""
    seen: set[type] = set()
    todo = [base]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
    return tuple(sorted(c.__name__ for c in seen))


def label_values() -> dict[str, dict[str, LabelValues]]:
    """The values of every label of every metric of :class:`Metrics`, by the metric's name on
    ``/metrics`` and the label's name: the code's own constants where it has them. (A function,
    not a constant: the modules it reads import this one.)"""
    from aiokafka.errors import KafkaError

    from bridge.dedup import LOCAL, LOG
    from bridge.egress_ips import EGRESS_FAILURES
    from bridge.envelope import LARK_TYPES, DeadLetterReason
    from bridge.errors import AUTH_REASONS
    from bridge.ingress.connect import RETRYABLE_CODES
    from bridge.ingress.long_connection import FRAME_KINDS
    from bridge.lark_api import FIXED_ERROR_NAMES, ErrorCode
    from bridge.settings import Settings

    topic_settings = (
        "topic_room_created",
        "topic_room_updated",
        "topic_room_deleted",
        "topic_room_level_created",
        "topic_room_level_updated",
        "topic_room_level_deleted",
        "topic_reserve_config_updated",
        "topic_third_party_meeting_room_event",
        "topic_dead_letter",
    )
    topics = LabelValues(
        tuple(str(Settings.model_fields[name].default) for name in topic_settings),
        note="the `BRIDGE_TOPIC_*` settings; defaults shown",
    )
    partitions = LabelValues(
        families=("<partition number>",), note="the partitions of the bridge's topics, as the cluster has them"
    )
    return {
        "bridge_requests_total": {
            "outcome": LabelValues(
                (
                    *("published", "duplicate", "dead_lettered", "handshake"),
                    *("bad_request", "unauthorized", "forbidden", "timeout", "too_large", "unsupported_encoding"),
                    *("client_disconnected", "unavailable", "http_error", "cancelled", "error"),
                )
            ),
            "status": LabelValues(
                ("200", "400", "401", "403", "405", "408", "413", "415", "499", "500", "503"),
                note="`405` with `http_error`: a method other than POST; `499`: the client hung up, or shutdown "
                "cut the request short",
            ),
        },
        "bridge_dedup_feed_lag_records": {"topic": topics, "partition": partitions},
        "bridge_dedup_feed_lag_seconds": {"topic": topics, "partition": partitions},
        "bridge_events_published_total": {
            "lark_type": LabelValues((*LARK_TYPES, "other"), note="`other`: any type the bridge does not forward"),
            "topic": topics,
        },
        "bridge_dead_letters_total": {"reason": LabelValues(typing.get_args(DeadLetterReason))},
        "bridge_duplicates_suppressed_total": {"source": LabelValues((LOCAL, LOG))},
        "bridge_auth_failures_total": {"reason": LabelValues(tuple(sorted(AUTH_REASONS)))},
        "bridge_request_duration_seconds": {"kind": LabelValues(("handshake", "event"))},
        "bridge_publish_failures_total": {
            "reason": LabelValues(
                _class_names(KafkaError),
                note="the class name of the `aiokafka.errors.KafkaError` raised, e.g. `KafkaTimeoutError`, "
                "`NotEnoughReplicasError`",
            )
        },
        "bridge_producer_replacements_total": {
            "reason": LabelValues(
                (
                    "OutOfOrderSequenceNumber",
                    "DuplicateSequenceNumber",
                    "InvalidProducerEpoch",
                    "InvalidProducerIdMapping",
                    "ProducerFenced",
                    "UnknownProducerId",
                    "TransactionStuck",
                ),
                note="the fatal idempotence error; `TransactionStuck`: a transaction that could not be "
                "ended within its bound, or failed unforeseen",
            )
        },
        "bridge_kafka_transactions_total": {"outcome": LabelValues(("committed", "aborted"))},
        "bridge_schema_registry_failures_total": {
            "reason": LabelValues(
                (
                    "registry_unreachable",
                    "registry_unauthorized",
                    "schema_incompatible",
                    "schema_invalid",
                    "schema_not_registered",
                    "registry_error",
                )
            )
        },
        "bridge_long_connection_connects_total": {
            "outcome": LabelValues(
                (
                    "connected",
                    "endpoint_bad_answer",
                    "endpoint_no_url",
                    *(f"endpoint_code_{code}" for code in sorted(RETRYABLE_CODES)),
                    "handshake_other",
                ),
                families=(
                    "endpoint_http_<d>xx",
                    "endpoint_<exception class>",
                    "handshake_<HTTP status>",
                    "connect_<exception class>",
                ),
                note="`<d>xx`: the endpoint's HTTP status class; `<exception class>`: the aiohttp, timeout, "
                "JSON or OS error's class name; `<HTTP status>`: the handshake's three-digit status",
            )
        },
        "bridge_long_connection_disconnects_total": {
            "reason": LabelValues(("read_deadline", "heartbeat", "server_closed", "error"))
        },
        "bridge_long_connection_frames_total": {"kind": LabelValues(FRAME_KINDS)},
        "bridge_long_connection_acks_total": {"code": LabelValues(("200", "500"), note="200 handled, 500 re-push")},
        "bridge_egress_ips_refresh_failures_total": {
            "reason": LabelValues(
                (*(code.name for code in ErrorCode if code), *FIXED_ERROR_NAMES, *EGRESS_FAILURES),
                families=("code_<n>", "http_<status>", "transport_<exception class>"),
                note="the Open API error's name (`bridge.lark_api.ErrorCode`, e.g. `SCOPE_REQUIRED` when the "
                "app lacks `event:ip_list`, or `bridge.lark_api.FIXED_ERROR_NAMES`, e.g. `deadline_exceeded`), "
                "`empty_list` (no usable entry), `error` (anything else)",
            )
        },
        "bridge_unlisted_requests_total": {"mode": LabelValues(("enforce", "report"))},
    }


@dataclass(frozen=True, slots=True)
class MetricDoc:
    """One metric as ``/metrics`` exposes it: ``name`` (a counter's with its ``_total``), ``type``,
    ``labels`` (in order), ``help``, and a histogram's bucket bounds (``le``, as exposed)."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    buckets: tuple[str, ...] = ()


def metric_docs() -> list[MetricDoc]:
    """Every metric of a fresh :class:`Metrics`, in registration order: what its registry collects,
    with the label names and buckets of the metric objects behind it."""
    metrics = Metrics()
    objects = {m._name: m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    docs = []
    for family in metrics.registry.collect():
        obj = objects[family.name]
        name = f"{family.name}_total" if family.type == "counter" else family.name
        buckets = tuple(_le(b) for b in getattr(obj, "_upper_bounds", ()))
        docs.append(MetricDoc(name, family.type, tuple(obj._labelnames), family.documentation, buckets))
    return docs


#: A bucket bound as the exposition writes it in ``le`` (prometheus_client's own formatting).
_le: Final = typing.cast(Callable[[float], str], floatToGoString)


def metrics_markdown() -> str:
    """The metrics table of ``docs/metrics.md``: name, type, labels with their values, help.
    Raises ValueError for a label without declared values (see :func:`label_values`)."""
    declared = label_values()
    lines = ["| Metric | Type | Labels: values | Description |", "|---|---|---|---|"]
    for d in metric_docs():
        labels = []
        for label in d.labels:
            values = declared.get(d.name, {}).get(label)
            if values is None:
                raise ValueError(f"{d.name}: label {label!r} has no declared values (bridge.metrics.label_values)")
            labels.append(f"`{label}`: {values.markdown()}")
        if d.buckets:
            labels.append(f"`le` (of `{d.name}_bucket`): " + ", ".join(f"`{b}`" for b in d.buckets))
        kind = d.type + (" (`_bucket`, `_sum`, `_count`)" if d.type == "histogram" else "")
        cells = [f"`{d.name}`", kind, "<br>".join(labels) or "—", d.help]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)
