"""The bridge's configuration: one frozen pydantic-settings object read from ``BRIDGE_*``.

Every field of :class:`Settings` is one environment variable, ``BRIDGE_`` + the field name in
upper case (``http_port`` → ``BRIDGE_HTTP_PORT``). These names are the public interface: the Helm
chart, the configuration reference (docs/configuration.md) and ``python -m bridge serve --help``
are all derived from this model (see :func:`setting_docs`), so they cannot drift apart.

Secrets (the verification token, the encrypt keys, the app secret, the SASL and registry
passwords) are ``SecretStr``: their ``repr``/``str`` is masked, and :func:`load_settings` reports
a bad value by variable name and reason only, never by value.
"""

from __future__ import annotations

import difflib
import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "BRIDGE_"
DEV_PREFIX = "BRIDGE_DEV_"  # the development tools' variables, e.g. BRIDGE_DEV_KAFKA_VERSION
#: Variables renamed, old → new: the old one is still read when the new one is not set, and
#: ``serve`` logs a deprecation warning naming both (:func:`deprecated_variables`).
DEPRECATED_VARIABLES: Final = {"BRIDGE_KAFKA_PUBLISH_TIMEOUT_S": "BRIDGE_ANSWER_DEADLINE_S"}


class LogFormat(enum.StrEnum):
    """Log line format: ``json`` (one JSON object per line) or ``console`` (for humans)."""

    JSON = "json"
    CONSOLE = "console"


class SecurityProtocol(enum.StrEnum):
    """Kafka ``security.protocol``."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(enum.StrEnum):
    """Kafka ``sasl.mechanism`` values the bridge supports."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class DedupStore(enum.StrEnum):
    """Where the dedup ledger comes from: ``kafka`` (rebuilt from and kept in step with the
    bridge's own topics: survives restarts, spans replicas) or ``memory`` (this process only)."""

    KAFKA = "kafka"
    MEMORY = "memory"


class SubscriptionMode(enum.StrEnum):
    """How events reach the bridge — the app's subscription mode in the developer console: the
    HTTP ``webhook`` ("send events to developer server"), the platform's ``long_connection``
    (docs/long_connection.md), or ``both`` (to switch an app's mode without a gap)."""

    WEBHOOK = "webhook"
    LONG_CONNECTION = "long_connection"
    BOTH = "both"


class EventLoop(enum.StrEnum):
    """The asyncio event loop implementation: ``uvloop`` (libuv; less CPU per request) or
    ``asyncio`` (the standard library's selector loop)."""

    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


class CloudEventsMode(enum.StrEnum):
    """CloudEvents content mode of a topic's records (the Kafka protocol binding): ``structured``
    (the value is the whole event as JSON) or ``binary`` (the value is ``data`` alone, the other
    attributes are ``ce_*`` headers; docs/envelope.md, "Binary content mode")."""

    STRUCTURED = "structured"
    BINARY = "binary"


def parse_mode_overrides(text: str | None) -> dict[str, CloudEventsMode]:
    """Read ``BRIDGE_CLOUDEVENTS_MODE_OVERRIDES``: ``topic=mode`` pairs separated by commas.

    Args:
        text: The variable's value; None or blank: no override. Blanks around names, modes and
            commas are ignored, and so is an empty pair (a trailing comma).

    Returns:
        ``{topic: mode}``.

    Raises:
        ValueError: A pair without ``=``, an empty topic, a mode other than ``structured`` or
            ``binary``, or a topic named twice; the message names it.
    """
    out: dict[str, CloudEventsMode] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        topic, sep, mode = (part.strip() for part in pair.partition("="))
        if not sep or not topic:
            raise ValueError(f"{pair.strip()!r} is not topic=mode")
        if mode not in set(CloudEventsMode):
            raise ValueError(f"topic {topic!r}: mode {mode!r} is not structured or binary")
        if topic in out:
            raise ValueError(f"topic {topic!r} is named twice")
        out[topic] = CloudEventsMode(mode)
    return out


class Compression(enum.StrEnum):
    """Producer ``compression.type``."""

    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


class Settings(BaseSettings):
    """All settings of one bridge process. Built once at start, then passed down; never mutated.

    Units are in the names: ``_s`` seconds, ``_bytes`` bytes. Raises ``pydantic.ValidationError``
    on construction when a value is missing or bad (use :func:`load_settings` for the friendly
    exit-code-2 path).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read only the values passed in (pydantic-settings' hook for the sources).

        :func:`load_settings` reads the mapping it is given (by default ``os.environ``) and
        nothing else — no process environment behind its back, no ``.env`` file, no secrets
        directory.

        Returns:
            ``(init_settings,)``: the other sources are dropped.
        """
        return (init_settings,)

    # --- HTTP ingress -------------------------------------------------------------------------
    http_host: str = Field("0.0.0.0", description="Address the HTTP server binds to.")
    http_port: int = Field(8080, ge=1, le=65535, description="TCP port of the HTTP server.")
    http_path: str = Field(
        "/webhook/event",
        pattern=r"^/[^\s?#]*$",
        description="Path of the Lark event webhook (the URL you paste into the developer console).",
    )
    http_max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted, in bytes; larger is 413."
    )
    http_max_body_bytes_in_flight: int = Field(
        33_554_432,
        ge=1024,
        description="Most request body bytes held at once across all requests, in bytes, counted "
        "as they arrive; a request whose body would pass it gets 503.",
    )

    # --- Lark protocol ------------------------------------------------------------------------
    lark_subscription_mode: SubscriptionMode = Field(
        SubscriptionMode.WEBHOOK,
        description="webhook (the platform POSTs events to BRIDGE_HTTP_PATH), long_connection (the "
        "bridge connects out to the platform: no public URL) or both.",
    )
    lark_verification_token: SecretStr | None = Field(
        None,
        description="Verification Token from the developer console (required with the webhook; secret).",
    )
    lark_encrypt_key: SecretStr | None = Field(
        None,
        description="Encrypt Key from the developer console. When set, bodies must be encrypted "
        "and events signed (secret).",
    )
    lark_encrypt_key_previous: SecretStr | None = Field(
        None,
        description="The Encrypt Key before a rotation, accepted alongside the current one so "
        "that in-flight retries are not lost (secret).",
    )
    lark_max_signature_age_s: int = Field(
        28_800,
        ge=60,
        description="Oldest X-Lark-Request-Timestamp accepted, in seconds (the platform retries for about 7.1 h).",
    )

    lark_app_id: str | None = Field(
        None, description="App ID (cli_…) from the developer console (required with the long connection)."
    )
    lark_app_secret: SecretStr | None = Field(
        None, description="App Secret from the developer console (required with the long connection; secret)."
    )
    lark_domain: str = Field(
        "https://open.feishu.cn",
        description="Open-platform base URL the long connection asks for its endpoint: "
        "https://open.feishu.cn (Feishu) or https://open.larksuite.com (Lark).",
    )
    long_connection_max_payload_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest event payload accepted over the long connection (split messages "
        "reassembled), in bytes; larger is acked as a failure.",
    )

    # --- Webhook allow-list: the platform's egress IPs ---------------------------------------
    lark_ip_allowlist: Literal["off", "enforce", "report"] = Field(
        "off",
        description="Check the webhook's client address against the platform's event egress IPs "
        "(GET /open-apis/event/v1/outbound_ip, fetched with BRIDGE_LARK_APP_ID/SECRET; the app needs "
        "the event:ip_list permission): off; enforce (an unlisted address gets 403 before its body is "
        "read; 503 until the list was fetched once); report (only counted and logged). The long "
        'connection is not affected (docs/operations.md, "Allow-listing the platform\'s egress IPs").',
    )
    lark_ip_allowlist_refresh_s: int = Field(
        21_600,
        ge=60,
        description="How often the egress IP list is fetched again, in seconds (the platform "
        "recommends 6 h); a failed fetch keeps the last list and is retried sooner, with backoff.",
    )
    http_trusted_proxy_hops: int = Field(
        0,
        ge=0,
        le=16,
        description="Proxies of yours in front of the bridge that each append to X-Forwarded-For "
        "(ingress controller, load balancer): 0 trusts no header (the TCP peer is the client); N "
        "takes the N-th address from the right of X-Forwarded-For, and a request with fewer "
        "entries counts as unlisted.",
    )

    @model_validator(mode="after")
    def _allowlist_needs_the_app(self) -> Settings:
        if self.lark_ip_allowlist != "off" and (not self.lark_app_id or self.lark_app_secret is None):
            raise ValueError(
                "BRIDGE_LARK_APP_ID and BRIDGE_LARK_APP_SECRET are required with BRIDGE_LARK_IP_ALLOWLIST="
                + self.lark_ip_allowlist
            )
        return self

    # --- Kafka --------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1, description="Comma-separated host:port list.")
    kafka_client_id: str = Field("lark-bridge", description="Kafka client.id of the producer.")
    kafka_security_protocol: SecurityProtocol = Field(
        SecurityProtocol.PLAINTEXT, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    kafka_ssl_cafile: str | None = Field(
        None, description="Path of a PEM CA bundle that signs the brokers' certificates."
    )
    kafka_compression: Compression = Field(Compression.NONE, description="none, gzip, snappy, lz4 or zstd.")
    answer_deadline_s: float = Field(
        2.0,
        gt=0,
        lt=3.0,
        description="The whole deadline of an answer to the platform, in seconds, from the request's "
        "arrival (the webhook: reading the body included; the long connection: from the first part "
        "of the message) to the broker's ack: past it the event is answered 503 (ack 500) and the "
        "platform retries. The platform gives up after 3 s. Formerly BRIDGE_KAFKA_PUBLISH_TIMEOUT_S, "
        "still read (with a deprecation warning) when this one is not set.",
    )
    kafka_max_record_bytes: int = Field(
        1_048_576,
        ge=16_384,
        description="Largest record the bridge sends (key + value + headers, as the producer counts "
        "it), in bytes; keep it at most the topics' max.message.bytes. An event whose records "
        "would be larger is dead-lettered, never retried forever.",
    )
    kafka_linger_ms: int = Field(
        0,
        ge=0,
        le=1000,
        description="How long the producer waits to fill a batch before sending it, in ms (adds up "
        "to that much to every answer; see BENCHMARKS.md for the trade).",
    )
    kafka_create_topics: bool = Field(True, description="Create missing topics at start.")
    kafka_transactions: bool = Field(
        False,
        description="Publish each delivery in a Kafka transaction (several deliveries share one: "
        "group commit) and read the bridge's own topics read_committed, so that an attempt that "
        "outlived its request is aborted instead of appearing beside its retry's copy "
        '(docs/delivery.md, "Transactions"). Consumers must then read with '
        "isolation.level=read_committed; the principal needs the TransactionalId Write and Describe "
        "rights on ids starting with BRIDGE_KAFKA_CLIENT_ID.",
    )
    kafka_topic_partitions: int = Field(12, ge=1, description="Partitions of topics the bridge creates.")
    kafka_topic_replication_factor: int | None = Field(
        None, ge=1, description="Replication of topics the bridge creates (unset: broker default)."
    )
    kafka_topic_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of topics the bridge creates (unset: one less than their "
        "replication, at least 1 — 2 with 3 replicas: an acknowledged record is on two brokers and "
        "writes go on with one down).",
    )

    # --- Topics -------------------------------------------------------------------------------
    topic_room_created: str = Field("lark.vc.room.created_v1", min_length=1, description="Topic of vc.room.created_v1.")
    topic_room_updated: str = Field("lark.vc.room.updated_v1", min_length=1, description="Topic of vc.room.updated_v1.")
    topic_room_deleted: str = Field("lark.vc.room.deleted_v1", min_length=1, description="Topic of vc.room.deleted_v1.")
    topic_room_level_created: str = Field(
        "lark.vc.room_level.created_v1", min_length=1, description="Topic of vc.room_level.created_v1."
    )
    topic_room_level_updated: str = Field(
        "lark.vc.room_level.updated_v1", min_length=1, description="Topic of vc.room_level.updated_v1."
    )
    topic_room_level_deleted: str = Field(
        "lark.vc.room_level.deleted_v1", min_length=1, description="Topic of vc.room_level.deleted_v1."
    )
    topic_reserve_config_updated: str = Field(
        "lark.vc.reserve_config.updated_v1",
        min_length=1,
        description="Topic of vc.reserve_config.updated_v1.",
    )
    topic_third_party_meeting_room_event: str = Field(
        "lark.third_party_meeting_room_event",
        min_length=1,
        description="Topic of third_party_meeting_room_event_created/updated/deleted.",
    )
    topic_dead_letter: str = Field("lark.bridge.dead_letter", min_length=1, description="Dead-letter topic.")
    cloudevents_mode: CloudEventsMode = Field(
        CloudEventsMode.STRUCTURED,
        description="CloudEvents content mode of every topic's records, the dead-letter topic's too: "
        "structured (the value is the whole event as JSON) or binary (the value is the event's data "
        "alone, the other attributes are ce_* headers and content-type; docs/envelope.md).",
    )
    cloudevents_mode_overrides: str | None = Field(
        None,
        description="Topics whose content mode differs from BRIDGE_CLOUDEVENTS_MODE, as "
        "topic=mode pairs separated by commas (e.g. lark.vc.room.created_v1=binary); each topic "
        "must be one of BRIDGE_TOPIC_*.",
    )

    # --- Schema registry ------------------------------------------------------------------------
    schema_registry_url: str | None = Field(
        None,
        description="Base URL of a Confluent-compatible schema registry (e.g. Apicurio's "
        "http://host:8080/apis/ccompat/v7). Set: each topic's schema is registered under "
        "<topic>-value and records are framed in the Confluent wire format. Unset: plain JSON.",
    )
    schema_registry_username: str | None = Field(None, description="Registry basic-auth user name.")
    schema_registry_password: SecretStr | None = Field(None, description="Registry basic-auth password (secret).")
    schema_registry_cafile: str | None = Field(
        None, description="Path of a PEM CA bundle that signs the registry's certificate."
    )
    schema_registry_auto_register: bool = Field(
        True,
        description="Register the schemas at start (true), or only look up the ids of identical "
        "schemas already registered (false, for registries that only a pipeline may write to).",
    )

    # --- Dedup --------------------------------------------------------------------------------
    dedup_barrier_age_s: float = Field(
        1.0,
        ge=0,
        description="An event the ledger does not know that was created more than this many seconds "
        "before it arrived (a retry, or a redelivery) is published only once the dedup feed has read "
        "its topics up to the broker's offsets as of its arrival; else 503. 0: every event.",
    )
    dedup_ttl_s: int = Field(
        86_400,
        ge=60,
        description="How long a published event id is remembered, in seconds (>= BRIDGE_LARK_MAX_SIGNATURE_AGE_S).",
    )
    dedup_max_entries: int = Field(1_000_000, ge=1, description="Most event ids remembered; the oldest go first.")
    dedup_store: DedupStore = Field(
        DedupStore.KAFKA,
        description="kafka (the ledger is rebuilt from the bridge's topics at start and follows "
        "them: survives restarts, spans replicas) or memory (this process only).",
    )
    dedup_replay_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Longest wait for the ledger's replay at start before serving anyway, in seconds.",
    )

    # --- Operations ---------------------------------------------------------------------------
    log_level: Annotated[str, Field(pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")] = Field(
        "INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
    log_format: LogFormat = Field(LogFormat.JSON, description="json or console.")
    event_loop: EventLoop = Field(
        EventLoop.UVLOOP, description="uvloop (less CPU per event) or asyncio (the standard library's loop)."
    )
    shutdown_timeout_s: float = Field(
        20.0,
        gt=0,
        description="Longest graceful shutdown after SIGTERM, in seconds (below Kubernetes' 30 s).",
    )

    @field_validator("lark_verification_token")
    @classmethod
    def _token_not_blank(cls, v: SecretStr | None) -> SecretStr | None:
        # "" is "not configured" (Helm renders it for an unset value); only blanks are wrong.
        if v is not None and v.get_secret_value() and not v.get_secret_value().strip():
            raise ValueError("must not be blank")
        return None if v is None or v.get_secret_value() == "" else v

    @field_validator(
        "lark_encrypt_key",
        "lark_encrypt_key_previous",
        "kafka_sasl_password",
        "schema_registry_password",
        "lark_app_secret",
    )
    @classmethod
    def _blank_is_unset(cls, v: SecretStr | None) -> SecretStr | None:
        # Helm renders unset optional values as "", which means "not configured".
        if v is not None and v.get_secret_value() == "":
            return None
        return v

    @field_validator(
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_ssl_cafile",
        "schema_registry_url",
        "schema_registry_username",
        "schema_registry_cafile",
        "lark_app_id",
        mode="before",
    )
    @classmethod
    def _blank_str_is_unset(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials: use BRIDGE_SCHEMA_REGISTRY_USERNAME/_PASSWORD")
        return v.rstrip("/")

    @field_validator("cloudevents_mode_overrides")
    @classmethod
    def _mode_overrides(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or not v.strip():
            return None
        overrides = parse_mode_overrides(v)
        topic_fields = [name for name in cls.model_fields if name.startswith("topic_")]
        if all(name in info.data for name in topic_fields):  # else a topic's own error is reported
            topics = {info.data[name] for name in topic_fields}
            unknown = sorted(set(overrides) - topics)
            if unknown:
                raise ValueError(
                    f"names {', '.join(repr(t) for t in unknown)}, not a topic of the bridge "
                    f"(BRIDGE_TOPIC_*: {', '.join(sorted(topics))})"
                )
        return v

    @field_validator("kafka_topic_replication_factor", "kafka_topic_min_insync_replicas", mode="before")
    @classmethod
    def _blank_int_is_unset(cls, v: Any) -> Any:
        return None if v == "" else v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.lark_encrypt_key_previous is not None and self.lark_encrypt_key is None:
            raise ValueError("BRIDGE_LARK_ENCRYPT_KEY_PREVIOUS is set but BRIDGE_LARK_ENCRYPT_KEY is not")
        if self.http_max_body_bytes_in_flight < self.http_max_body_bytes:
            raise ValueError("BRIDGE_HTTP_MAX_BODY_BYTES_IN_FLIGHT must be >= BRIDGE_HTTP_MAX_BODY_BYTES")
        if self.dedup_ttl_s < self.lark_max_signature_age_s:
            raise ValueError(
                "BRIDGE_DEDUP_TTL_S must be >= BRIDGE_LARK_MAX_SIGNATURE_AGE_S, or a replay inside "
                "the signature window would be published twice"
            )
        if self.webhook_enabled and self.lark_verification_token is None:
            raise ValueError(
                "BRIDGE_LARK_VERIFICATION_TOKEN is required with the webhook (BRIDGE_LARK_SUBSCRIPTION_MODE)"
            )
        if self.long_connection_enabled and (not self.lark_app_id or self.lark_app_secret is None):
            raise ValueError("BRIDGE_LARK_APP_ID and BRIDGE_LARK_APP_SECRET are required with the long connection")
        if urlsplit(self.lark_domain).scheme not in ("http", "https") or not urlsplit(self.lark_domain).hostname:
            raise ValueError("BRIDGE_LARK_DOMAIN must be an http(s) URL")
        if (self.schema_registry_username is None) != (self.schema_registry_password is None):
            raise ValueError("BRIDGE_SCHEMA_REGISTRY_USERNAME and BRIDGE_SCHEMA_REGISTRY_PASSWORD go together")
        if self.schema_registry_url is not None:
            from bridge.normalize import Topics  # local: settings need not load the decode stage

            if not Topics.from_settings(self).one_kind_per_topic():
                raise ValueError(
                    "with a schema registry each BRIDGE_TOPIC_* must name its own topic (one schema per topic)"
                )
        if self.kafka_security_protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism is None:
                raise ValueError("BRIDGE_KAFKA_SASL_MECHANISM is required with a SASL_* protocol")
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ValueError(
                    "BRIDGE_KAFKA_SASL_USERNAME and BRIDGE_KAFKA_SASL_PASSWORD are required with a SASL_* protocol"
                )
        return self

    def cloudevents_modes(self) -> dict[str, CloudEventsMode]:
        """Say each topic's CloudEvents content mode.

        Returns:
            ``{topic: mode}`` for every ``BRIDGE_TOPIC_*`` topic: its override
            (``BRIDGE_CLOUDEVENTS_MODE_OVERRIDES``), else ``BRIDGE_CLOUDEVENTS_MODE``.
        """
        overrides = parse_mode_overrides(self.cloudevents_mode_overrides)
        topics = {getattr(self, name) for name in type(self).model_fields if name.startswith("topic_")}
        return {topic: overrides.get(topic, self.cloudevents_mode) for topic in sorted(topics)}

    @property
    def webhook_enabled(self) -> bool:
        """Whether the HTTP webhook takes events (``BRIDGE_LARK_SUBSCRIPTION_MODE`` webhook or both)."""
        return self.lark_subscription_mode != SubscriptionMode.LONG_CONNECTION

    @property
    def long_connection_enabled(self) -> bool:
        """Whether the long connection takes events (``BRIDGE_LARK_SUBSCRIPTION_MODE`` long_connection or both)."""
        return self.lark_subscription_mode != SubscriptionMode.WEBHOOK

    @property
    def encrypt_keys(self) -> tuple[str, ...]:
        """The accepted encrypt keys, plain: ``BRIDGE_LARK_ENCRYPT_KEY``, then ``…_PREVIOUS`` if set.

        Empty when encryption is off. What :class:`bridge.verify.Verifier` takes.
        """
        keys = (self.lark_encrypt_key, self.lark_encrypt_key_previous)
        return tuple(k.get_secret_value() for k in keys if k is not None)

    def secret_values(self) -> tuple[str, ...]:
        """List every configured secret's plain value, for tests and log scrubbing checks.

        Returns:
            The plain values of the verification token, the encrypt keys, the SASL and registry
            passwords and the app secret that are set.
        """
        secrets = (
            self.lark_verification_token,
            self.lark_encrypt_key,
            self.lark_encrypt_key_previous,
            self.kafka_sasl_password,
            self.schema_registry_password,
            self.lark_app_secret,
        )
        return tuple(s.get_secret_value() for s in secrets if s is not None)


class SettingsError(Exception):
    """Raised by :func:`load_settings`.

    ``str()`` is ``invalid configuration:`` followed by one ``BRIDGE_X: reason`` line per bad
    variable: it names the variables, never their values.
    """


def env_name(field: str) -> str:
    """Name the environment variable of a :class:`Settings` field.

    Args:
        field: The field's name (``http_port``).

    Returns:
        ``BRIDGE_`` + the name in upper case (``BRIDGE_HTTP_PORT``).
    """
    return ENV_PREFIX + field.upper()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from an environment, and from nothing else.

    Variable names are matched case-insensitively; ``BRIDGE_*`` names that are not settings are
    ignored here (see :func:`unknown_variables`); a renamed variable's old name is read when the
    new one is not set (:data:`DEPRECATED_VARIABLES`). All settings: docs/configuration.md.

    Args:
        environ: The variables. Default ``os.environ``.

    Returns:
        The frozen settings.

    Raises:
        SettingsError: A value is missing or bad; the message lists each bad variable as
            ``BRIDGE_X: reason`` — the offending value is never included (it may be a secret).
    """
    env = os.environ if environ is None else environ
    values = {k.upper(): v for k, v in env.items() if k.upper().startswith(ENV_PREFIX)}
    read_from: dict[str, str] = {}  # field -> the variable it was read from, when that is an old name
    for old, new in DEPRECATED_VARIABLES.items():
        if old in values and new not in values:
            values[new] = values[old]
            read_from[new[len(ENV_PREFIX) :].lower()] = old
    fields = {k[len(ENV_PREFIX) :].lower(): v for k, v in values.items()}
    known: dict[str, Any] = {k: v for k, v in fields.items() if k in Settings.model_fields}
    try:
        return Settings(**known)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = err.get("loc") or ()
            name = (read_from.get(str(loc[0])) or env_name(str(loc[0]))) if loc else "settings"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


# Variables Kubernetes injects for a Service named ``bridge…`` when service links are on
# (``{SVC}_SERVICE_HOST``, ``{SVC}_PORT_8080_TCP_ADDR``, …): not typos, never warned about.
_SERVICE_LINK = re.compile(r"_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)$")


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Find the ``BRIDGE_*`` variables that are not settings.

    A typo such as ``BRIDGE_KAFKA_BOOTSTRAP_SERVER`` would otherwise be silently ignored.
    Kubernetes service-link variables are left out. ``BRIDGE_DEV_*`` variables belong to the
    development tools (``bridge_devtools``) and are left out too. Only names are returned, never
    values.

    Args:
        environ: The variables.

    Returns:
        ``[(variable, closest setting's variable or None)]``, sorted by variable.
    """
    known = [env_name(f) for f in Settings.model_fields]
    out = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(DEV_PREFIX) or upper in known:
            continue
        if upper in DEPRECATED_VARIABLES:  # read all the same; deprecated_variables() names it
            continue
        if _SERVICE_LINK.search(upper):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        out.append((name, close[0] if close else None))
    return out


def deprecated_variables(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """Find the variables set under a name that was renamed (:data:`DEPRECATED_VARIABLES`).

    Args:
        environ: The variables.

    Returns:
        ``[(old variable as set, new variable)]``, sorted; names only, never values.
    """
    return sorted(
        (name, DEPRECATED_VARIABLES[name.upper()]) for name in environ if name.upper() in DEPRECATED_VARIABLES
    )


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One row of the configuration reference.

    Attributes:
        env: The variable (``BRIDGE_HTTP_PORT``).
        default: The default as text: ``(required)``, ``(unset)``, an enum's value, ``true`` /
            ``false``, or ``str()`` of the value.
        description: The field's description.
        required: Whether the variable must be set.
        secret: Whether the value is a secret (``SecretStr``).
    """

    env: str
    default: str
    description: str
    required: bool
    secret: bool


def setting_docs() -> list[SettingDoc]:
    """Derive the configuration reference from :class:`Settings`.

    Returns:
        One :class:`SettingDoc` per field, in declaration order.
    """
    rows = []
    for name, field in Settings.model_fields.items():
        required = field.is_required()
        default = field.default
        if required:
            text = "(required)"
        elif default is None:
            text = "(unset)"
        elif isinstance(default, enum.Enum):
            text = str(default.value)
        elif isinstance(default, bool):
            text = "true" if default else "false"
        else:
            text = str(default)
        ann = str(field.annotation)
        rows.append(
            SettingDoc(
                env=env_name(name),
                default=text,
                description=field.description or "",
                required=required,
                secret="SecretStr" in ann,
            )
        )
    return rows


def settings_markdown() -> str:
    """Render the configuration reference table of docs/configuration.md from :class:`Settings`.

    ``python -m bridge config-reference`` prints it; a test checks the page holds it.

    Returns:
        A Markdown table (no trailing newline): variable, default, description; secrets marked
        **Secret.** unless their description already has the word "secret".
    """
    lines = ["| Variable | Default | Description |", "|---|---|---|"]
    for d in setting_docs():
        default = d.default if d.default.startswith("(") else f"`{d.default}`"
        secret = " **Secret.**" if d.secret and "secret" not in d.description else ""
        lines.append(f"| `{d.env}` | {default} | {d.description.replace('|', '/')}{secret} |")
    return "\n".join(lines)
