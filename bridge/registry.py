"""Schema registry: each topic's schema registered under ``<topic>-value``, records framed in the
Confluent wire format.

With ``BRIDGE_SCHEMA_REGISTRY_URL`` set, the bridge speaks the Confluent Schema Registry REST API
(also served by Apicurio Registry at ``/apis/ccompat/v7``, Karapace, Redpanda…) — three calls,
made at start and by the ``schemas`` CLI, never on the hot path:

* ``POST /subjects/{subject}/versions`` — register (or find) a schema, answers its global ``id``;
* ``POST /subjects/{subject}`` — look up the id of an identical schema already registered
  (``BRIDGE_SCHEMA_REGISTRY_AUTO_REGISTER=false``);
* ``POST /compatibility/subjects/{subject}/versions/latest`` — would the subject accept it?

Subjects follow the default ``TopicNameStrategy``: ``<topic>-value``, one schema per topic
(:func:`bridge.schemas.topic_schema`: the third-party topic's covers its three change types, the
dead-letter topic has its own; a topic in CloudEvents binary content mode gets the schema of its
records' ``data``, their whole value). A framed record value is ``0x00`` (magic byte), the schema id as
a 4-byte big-endian integer, then the same JSON as without a registry — byte for byte
what confluent-kafka's ``JSONSerializer`` writes for that document (compact separators, UTF-8),
so its ``JSONDeserializer``, Kafka Connect's ``JsonSchemaConverter`` and Apicurio's serdes read it.

A small aiohttp client rather than confluent-kafka's: the bridge needs three calls, already
depends on aiohttp, and confluent-kafka would add librdkafka and an HTTP stack to every image.

Configuring and operating it: docs/registry.md.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from bridge.lifecycle import TaskRunner, retrying
from bridge.metrics import Metrics
from bridge.normalize import Topics
from bridge.schemas import topic_schema
from bridge.settings import Settings

log = logging.getLogger("bridge.registry")

#: The first byte of a framed value (Confluent wire format).
MAGIC_BYTE: Final = b"\x00"
#: Bytes the wire format puts before each value: the magic byte and a 4-byte schema id.
WIRE_PREFIX_BYTES: Final = 5
#: ``Accept`` and ``Content-Type`` of every registry call.
CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
#: Default longest time of one registry call, in seconds.
REQUEST_TIMEOUT_S: Final = 10.0
#: Longest text of a registry's answer kept in an error (it goes to a log line).
MAX_MESSAGE_CHARS: Final = 300
#: Backoff between attempts to resolve the schema ids, seconds: the first wait, and the longest.
RESOLVE_BACKOFF_S: Final = (0.5, 30.0)


def subject_of(topic: str) -> str:
    """Name the subject of a topic's record values (Confluent's default ``TopicNameStrategy``).

    Args:
        topic: The topic's name.

    Returns:
        ``<topic>-value``.
    """
    return f"{topic}-value"


def wire_prefix(schema_id: int) -> bytes:
    """Build the bytes that frame a value of one schema (Confluent wire format).

    Args:
        schema_id: The registry's global schema id, ``0 <= id < 2**32``.

    Returns:
        :data:`WIRE_PREFIX_BYTES` (5) bytes: magic byte 0, then the id as a big-endian uint32.

    Raises:
        OverflowError: ``schema_id`` does not fit in 4 unsigned bytes.
    """
    return MAGIC_BYTE + schema_id.to_bytes(4, "big")


def schema_texts(topics: Topics) -> dict[str, str]:
    """Render the schema text registered for each topic.

    The text is compact JSON with keys in the generated order: the same text every time, so a
    restart finds the same id.

    Args:
        topics: The topic map (a topic in :attr:`~bridge.normalize.Topics.binary` gets the
            schema of its records' ``data``).

    Returns:
        ``{topic: schema JSON text}`` for every topic of ``topics``.

    Raises:
        ValueError: One topic carries kinds no single schema covers, or the dead-letter topic also
            carries events.
    """
    kinds: dict[str, set[str]] = {}
    for lark_type, topic in topics.by_type.items():
        kinds.setdefault(topic, set()).add(lark_type)
    out = {
        topic: _text(topic_schema(frozenset(types), binary=topic in topics.binary)) for topic, types in kinds.items()
    }
    if topics.dead_letter in out:
        raise ValueError("the dead-letter topic must not also carry events (one schema per topic)")
    out[topics.dead_letter] = _text(topic_schema(None, binary=topics.dead_letter in topics.binary))
    return out


def _text(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


class RegistryError(Exception):
    """A registry call that did not give what was asked.

    Args:
        reason: ``registry_unreachable`` (connection, timeout, 5xx), ``registry_unauthorized``
            (401/403), ``schema_incompatible`` (409: the subject refuses the schema under its
            compatibility rule), ``schema_not_registered`` (a look-up found no identical
            schema), ``schema_invalid`` (422), ``registry_error`` (any other answer).
        message: The registry's own words, capped at :data:`MAX_MESSAGE_CHARS` characters (never
            a credential: the URL and headers are not included). Default: empty.
        subject: The subject concerned, when known. Default: empty.
    """

    def __init__(self, reason: str, message: str = "", subject: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message[:MAX_MESSAGE_CHARS]
        self.subject = subject


class RegistryClient:
    """The three calls of the Confluent-compatible API the bridge makes (module docstring).

    Use as ``async with RegistryClient(...) as client``. Every call raises :class:`RegistryError`
    (and ``RuntimeError`` outside the ``async with``).

    Args:
        url: The registry's base URL; a trailing slash is dropped.
        username: The basic-auth user, or None for no authentication. Default None.
        password: The basic-auth password (empty when None). Default None.
        cafile: A PEM bundle of CAs for https, or None for the system CAs. Default None.
        timeout_s: Longest time of each call, in seconds. Default :data:`REQUEST_TIMEOUT_S`
            (10 s).
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        cafile: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self._url = url.rstrip("/")
        auth = aiohttp.encode_basic_auth(username, password or "") if username is not None else None
        self._headers = {"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE}
        if auth is not None:
            self._headers["Authorization"] = auth
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else True
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryClient:
        """Build a client from the ``BRIDGE_SCHEMA_REGISTRY_*`` settings.

        Args:
            settings: The bridge's settings.

        Returns:
            The client, not yet entered.

        Raises:
            ValueError: ``BRIDGE_SCHEMA_REGISTRY_URL`` is not set.
        """
        if settings.schema_registry_url is None:
            raise ValueError("BRIDGE_SCHEMA_REGISTRY_URL is not set")
        password = settings.schema_registry_password
        return cls(
            settings.schema_registry_url,
            username=settings.schema_registry_username,
            password=password.get_secret_value() if password is not None else None,
            cafile=settings.schema_registry_cafile,
        )

    async def __aenter__(self) -> RegistryClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def register(self, subject: str, schema: str) -> int:
        """Register a schema under a subject, or find it when an identical one is registered.

        ``POST /subjects/{subject}/versions``.

        Args:
            subject: The subject (:func:`subject_of`).
            schema: The JSON Schema text.

        Returns:
            The schema's global id.

        Raises:
            RegistryError: The call failed (``reason`` as in :class:`RegistryError`; a 409 is
                ``schema_incompatible``).
        """
        body = await self._post(f"/subjects/{quote(subject, safe='')}/versions", schema)
        return _id_of(body)

    async def lookup(self, subject: str, schema: str) -> int:
        """Look up the id of a schema a subject already has, without registering it.

        ``POST /subjects/{subject}`` (``BRIDGE_SCHEMA_REGISTRY_AUTO_REGISTER=false``).

        Args:
            subject: The subject (:func:`subject_of`).
            schema: The JSON Schema text.

        Returns:
            The global id of the identical schema.

        Raises:
            RegistryError: ``schema_not_registered`` when the subject has no identical schema;
                otherwise as in :class:`RegistryError`.
        """
        body = await self._post(f"/subjects/{quote(subject, safe='')}", schema, not_found="schema_not_registered")
        return _id_of(body)

    async def is_compatible(self, subject: str, schema: str) -> tuple[bool, list[str]]:
        """Ask whether a subject would accept a schema under its compatibility rule.

        ``POST /compatibility/subjects/{subject}/versions/latest?verbose=true``.

        Args:
            subject: The subject (:func:`subject_of`).
            schema: The JSON Schema text.

        Returns:
            ``(answer, the registry's messages)``; a subject with no version yet accepts
            anything (``(True, [])``).

        Raises:
            RegistryError: The call failed (``reason`` as in :class:`RegistryError`).
        """
        path = f"/compatibility/subjects/{quote(subject, safe='')}/versions/latest?verbose=true"
        try:
            body = await self._post(path, schema, not_found="subject_not_found")
        except RegistryError as exc:
            if exc.reason == "subject_not_found":
                return True, []
            raise
        messages = body.get("messages") if isinstance(body, dict) else None
        return bool(isinstance(body, dict) and body.get("is_compatible")), [str(m) for m in messages or ()]

    async def _post(self, path: str, schema: str, *, not_found: str = "registry_error") -> Any:
        if self._session is None:
            raise RuntimeError("use RegistryClient as an async context manager")
        payload = json.dumps({"schemaType": "JSON", "schema": schema})
        try:
            async with self._session.post(self._url + path, data=payload, ssl=self._ssl) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RegistryError("registry_unreachable", type(exc).__name__) from None
        if status == 200:
            try:
                return json.loads(text)
            except ValueError:
                raise RegistryError("registry_error", "answer is not JSON") from None
        message = _message_of(text)
        if status in (401, 403):
            raise RegistryError("registry_unauthorized", f"HTTP {status}: {message}")
        if status == 404:
            raise RegistryError(not_found, f"HTTP 404: {message}")
        if status == 409:
            raise RegistryError("schema_incompatible", f"HTTP 409: {message}")
        if status == 422:
            raise RegistryError("schema_invalid", f"HTTP 422: {message}")
        if status >= 500:
            raise RegistryError("registry_unreachable", f"HTTP {status}: {message}")
        raise RegistryError("registry_error", f"HTTP {status}: {message}")


def _id_of(body: Any) -> int:
    schema_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(schema_id, int) or isinstance(schema_id, bool) or not 0 <= schema_id < 2**32:
        raise RegistryError("registry_error", "answer has no schema id")
    return schema_id


def _message_of(text: str) -> str:
    """The registry's error message (``{"error_code", "message"}``), else the start of the text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:MAX_MESSAGE_CHARS]
    message = body.get("message") if isinstance(body, dict) else None
    return (message if isinstance(message, str) else text)[:MAX_MESSAGE_CHARS]


async def resolve_ids(client: RegistryClient, texts: Mapping[str, str], *, register: bool) -> dict[str, int]:
    """Resolve the schema id of each topic, registering each schema or looking it up.

    Args:
        client: An entered :class:`RegistryClient`.
        texts: ``{topic: schema JSON text}`` (:func:`schema_texts`).
        register: Register each schema (:meth:`RegistryClient.register`) when True; only look
            it up (:meth:`RegistryClient.lookup`) when False.

    Returns:
        ``{topic: schema id}``.

    Raises:
        RegistryError: On the first failure, its ``subject`` set.
    """
    ids = {}
    for topic, text in texts.items():
        subject = subject_of(topic)
        try:
            ids[topic] = await (client.register(subject, text) if register else client.lookup(subject, text))
        except RegistryError as exc:
            exc.subject = subject
            raise
    return ids


class SchemaIds:
    """The schema id of each topic, resolved at start in the background and kept in memory.

    A background service (:class:`bridge.lifecycle.BackgroundService`). :meth:`not_ready_reason`
    says why :attr:`prefixes` is not known yet (a :class:`RegistryError` reason, or
    ``schema_ids`` while the first attempt runs). A failed attempt is retried with backoff
    (:data:`RESOLVE_BACKOFF_S`), so a registry that is down at start heals without a restart;
    the log gets one line each time the reason changes (an incompatible or invalid schema is an ERROR
    naming the subject and the registry's message).

    Args:
        settings: ``BRIDGE_SCHEMA_REGISTRY_*`` (``schema_registry_auto_register``: register or
            only look up).
        topics: The topics whose subjects are resolved (:func:`schema_texts`).
        metrics: Where ``bridge_schema_registry_failures_total`` is counted.
        client_factory: Makes the client of each attempt (tests). Default
            :meth:`RegistryClient.from_settings`.

    Attributes:
        prefixes: ``{topic: 5-byte wire prefix}`` once every id is known, None before.
        ids: ``{topic: schema id}`` once every id is known, empty before.

    Raises:
        ValueError: As :func:`schema_texts`, at construction.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        metrics: Metrics,
        *,
        client_factory: Any = None,
    ) -> None:
        self._settings = settings
        self._texts = schema_texts(topics)
        self._metrics = metrics
        self._factory = client_factory or (lambda: RegistryClient.from_settings(settings))
        self._task = TaskRunner("bridge-schema-ids")
        self._reason = "schema_ids"
        self._logged_reason = ""
        self.prefixes: dict[str, bytes] | None = None
        self.ids: dict[str, int] = {}

    def not_ready_reason(self) -> str | None:
        """Say why the ids are not known yet.

        Returns:
            None once every topic's id is known; else ``schema_ids`` (first attempt running) or
            the latest :class:`RegistryError` reason.
        """
        return None if self.prefixes is not None else self._reason

    async def start(self) -> None:
        """Start resolving in the background. Never raises."""
        self._task.spawn(self._run())

    async def close(self) -> None:
        """Stop a resolution still running."""
        await self._task.cancel()

    def _failed(self, exc: BaseException, wait_s: float) -> None:
        if not isinstance(exc, RegistryError):  # a bug: tenacity retries it all the same
            log.warning("schema registry: %s; retrying in %.1fs", type(exc).__name__, wait_s)
            return
        self._reason = exc.reason
        self._metrics.registry_failures.labels(reason=exc.reason).inc()
        if exc.reason != self._logged_reason:
            self._logged_reason = exc.reason
            level = logging.ERROR if exc.reason in ("schema_incompatible", "schema_invalid") else logging.WARNING
            log.log(
                level,
                "schema registry: %s for subject %s: %s; not ready, retrying",
                exc.reason,
                exc.subject,
                exc.message,
            )

    async def _run(self) -> None:
        first_s, max_s = RESOLVE_BACKOFF_S
        register = self._settings.schema_registry_auto_register
        async for attempt in retrying(first_s=first_s, max_s=max_s, on_retry=self._failed):
            with attempt:
                async with self._factory() as client:
                    ids = await resolve_ids(client, self._texts, register=register)
        self.ids = ids
        self.prefixes = {topic: wire_prefix(schema_id) for topic, schema_id in ids.items()}
        log.info("schema registry: ids %s", ",".join(f"{subject_of(t)}={i}" for t, i in sorted(ids.items())))
