"""The inbound event: one authenticated push from the platform, its top level read once.

Every ingress (the HTTP webhook, the long connection) turns what the platform sent into an
:class:`InboundEvent` right after the payload is proven authentic, with :func:`read_inbound`;
every later stage — dedup, decode, normalize, dead letter, logs — reads its fields, and nothing
after this module parses the top level again.

Where each fact sits in the payload (docs/protocol.md §2, §6):

=============  ================================  ==========================================
fact           schema 2.0                        schema 1.0 (``type: "event_callback"``)
=============  ================================  ==========================================
event id    ``header.event_id``               ``uuid``
Lark type      ``header.event_type``             ``event.type``
app            ``header.app_id``                 ``event.app_id``
tenant         ``header.tenant_key``             ``event.tenant_key``
create time    ``header.create_time`` (ms or µs) ``ts`` (unix seconds, decimal fraction)
token          ``header.token``                  ``token``
=============  ================================  ==========================================

A push whose top level is malformed (unsupported ``schema``, ``header`` not an object or missing
a required field, no ``event`` object, neither shape) is still an inbound event: ``defect`` says
what is wrong and where, the facts that could be read are kept, and the delivery dead-letters it.

Pure; no I/O. Imports only msgspec and the bridge's own validation helper.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Final, Literal

import msgspec

from bridge.validation import Invalid, convert

#: A string of at least one character.
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
#: The handshake's top-level ``type`` (docs/protocol.md §5).
URL_VERIFICATION: Final = "url_verification"
#: A schema 1.0 event's top-level ``type`` (docs/protocol.md §2).
EVENT_CALLBACK: Final = "event_callback"


class Outer(msgspec.Struct):
    """The top level of a (decrypted) push, loosely typed, with ``event`` left raw.

    Fields are ``Any`` on purpose: a wrong type here makes an invalid *event* (a dead letter),
    not an unreadable request. Only :func:`read_inbound` and the verify stage look at it. Each
    attribute is the top-level member of the same name, None when absent.

    Attributes:
        encrypt: The ``encrypt`` value of an encrypted push (docs/protocol.md §3).
        schema: ``"2.0"`` on a schema 2.0 event; absent on schema 1.0 and the handshake.
        header: A schema 2.0 event's ``header`` (any JSON value; an object when well-formed).
        token: The top-level verification token (schema 1.0 and the handshake, §6).
        type: ``"event_callback"`` (schema 1.0) or ``"url_verification"`` (the handshake, §5).
        challenge: The handshake's challenge.
        uuid: A schema 1.0 event's event id.
        ts: A schema 1.0 event's create time.
        event: The raw ``event`` JSON; empty when absent.
    """

    encrypt: Any = None
    schema: Any = None
    header: Any = None
    token: Any = None
    type: Any = None
    challenge: Any = None
    uuid: Any = None
    ts: Any = None
    event: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)

    @property
    def is_handshake(self) -> bool:
        """Whether this is the URL-verification handshake: ``type == "url_verification"`` and no
        ``schema`` (docs/protocol.md §5)."""
        return self.type == URL_VERIFICATION and self.schema is None

    @property
    def verification_token(self) -> Any:
        """The verification token, from where the schema puts it (docs/protocol.md §6).

        Schema 2.0: ``header.token``; schema 1.0 and the handshake: the top-level ``token``.

        Returns:
            Any JSON value, or None when absent (or when a schema 2.0 ``header`` is not an
            object).
        """
        if self.schema is not None:
            return self.header.get("token") if isinstance(self.header, dict) else None
        return self.token


#: The decoder of :class:`Outer`, built once.
OUTER_DECODER: Final = msgspec.json.Decoder(Outer)


class UnreadableJSON(ValueError):
    """Bytes that are not one JSON object this bridge can read.

    Malformed JSON, not an object, invalid UTF-8, or nested deeper than the decoder's recursion
    limit. The message is the name of the underlying exception (``DecodeError``,
    ``RecursionError``, ``UnicodeDecodeError``).
    """


_ANY_DECODER: Final = msgspec.json.Decoder()


def read_json(data: bytes) -> Any:
    """Decode bytes as generic JSON.

    Args:
        data: UTF-8 JSON text (bytes).

    Returns:
        The value as dicts, lists and scalars.

    Raises:
        UnreadableJSON: ``data`` is not readable JSON (malformed, invalid UTF-8, nested too
            deep).
    """
    try:
        return _ANY_DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise UnreadableJSON(type(exc).__name__) from None


def decode_outer(payload: bytes) -> Outer:
    """Decode the top level of a push.

    Args:
        payload: The body or decrypted plaintext (bytes).

    Returns:
        The :class:`Outer`, with ``event`` left raw.

    Raises:
        UnreadableJSON: For anything unreadable — never ``RecursionError`` or
            ``UnicodeDecodeError``, which msgspec raises for hostile bodies (a thousand nested
            arrays; a ``\xff`` inside a string) besides its own ``DecodeError``.
    """
    try:
        return OUTER_DECODER.decode(payload)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise UnreadableJSON(type(exc).__name__) from None


class HeaderV2(msgspec.Struct, kw_only=True):
    """Schema 2.0 ``header``: what a well-formed one must hold (docs/protocol.md §2).

    Attributes:
        event_id: The event id; not empty.
        event_type: The Lark event type; not empty.
        create_time: The create time as a string of 13-digit ms or 16-digit µs.
        app_id: The app the event is for.
        tenant_key: The tenant the event is from.
        token: The verification token (docs/protocol.md §6); optional.
    """

    event_id: NonEmptyStr
    event_type: NonEmptyStr
    create_time: str
    app_id: str
    tenant_key: str
    token: str | None = None


class _EventV1Peek(msgspec.Struct):
    """What schema 1.0 keeps inside ``event`` that every stage needs (docs/protocol.md §9.1)."""

    type: Any = None
    app_id: Any = None
    tenant_key: Any = None


_peek_v1: Final = msgspec.json.Decoder(_EventV1Peek)


class Defect(msgspec.Struct, frozen=True):
    """What is wrong with a push's top level.

    Attributes:
        detail: What is wrong, in msgspec's wording.
        path: The JSON path where it is wrong (``$.header``; ``$`` for the whole).
    """

    detail: str
    path: str


class InboundEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event the platform pushed to us, authenticated and in plaintext.

    Built by :func:`read_inbound` or :func:`unreadable`; where each fact sits in the payload is
    the module's table (docs/protocol.md §2, §6).

    Attributes:
        schema: The top level's shape: ``"2.0"`` (a ``schema`` field; any value other than
            ``"2.0"`` is a defect) or ``"1.0"`` (``type: "event_callback"`` or a ``uuid``); None
            when it is neither.
        event_id: ``header.event_id`` / ``uuid``, the dedup key; None when absent or empty.
        lark_type: The Lark event type; None when not a string.
        app_id: The app; None when not a string.
        tenant_key: The tenant; None when not a string.
        create_time: As sent, unparsed (2.0: 13-digit ms or 16-digit µs; 1.0: unix seconds with
            a fraction); None when not a string.
        event: The raw ``event`` JSON; empty when absent.
        payload: The whole plaintext JSON object as received (decrypted when it came encrypted).
        defect: What is wrong with the top level; None for a well-formed one.
    """

    schema: Literal["1.0", "2.0"] | None
    event_id: str | None
    lark_type: str | None
    app_id: str | None
    tenant_key: str | None
    create_time: str | None
    event: msgspec.Raw
    payload: bytes
    defect: Defect | None = None

    def dedup_key(self) -> str:
        """The delivery ledger's key for this event (docs/protocol.md §7).

        An event without an event id (a malformed top level, an unreadable payload: always a
        dead letter) is keyed by its payload, so that the platform's retries of it still make one
        dead letter.

        Returns:
            The event id, or ``"sha256:<hex>"`` of :attr:`payload` when there is none.
        """
        if self.event_id is not None:
            return self.event_id
        return "sha256:" + hashlib.sha256(self.payload).hexdigest()


def unreadable(payload: bytes, detail: str) -> InboundEvent:
    """Build the inbound event of an authentic push whose payload cannot be read.

    That is a signed ``encrypt`` value that does not decrypt, or a decrypted plaintext that is
    not a JSON object. The signature proves the platform sent it, and no retry can make it
    readable: it becomes a dead letter.

    Args:
        payload: The bytes that could not be read.
        detail: Why they could not be read.

    Returns:
        An :class:`InboundEvent` with every fact None and a :class:`Defect` of ``detail`` at
        ``$``.
    """
    return InboundEvent(
        schema=None,
        event_id=None,
        lark_type=None,
        app_id=None,
        tenant_key=None,
        create_time=None,
        event=msgspec.Raw(),
        payload=payload,
        defect=Defect(detail, "$"),
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _nonempty(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def read_inbound(payload: bytes, outer: Outer | None = None) -> InboundEvent:
    """Read the top level of an authentic plaintext payload into an :class:`InboundEvent`.

    Sources: docs/protocol.md §2 (the two schemas), §6 (the token).

    Args:
        payload: A JSON object's bytes, authenticated and decrypted.
        outer: The payload's top level when the caller already decoded it (the verify stage
            does). Default: decoded here.

    Returns:
        The event; every problem of its top level is its ``defect``.

    Raises:
        UnreadableJSON: Only when ``outer`` is not given and ``payload`` is not a readable JSON
            object.
    """
    if outer is None:
        outer = decode_outer(payload)
    if outer.schema is not None:
        return _read_v2(payload, outer)
    if outer.type == EVENT_CALLBACK or outer.uuid is not None:
        return _read_v1(payload, outer)
    return InboundEvent(
        schema=None,
        event_id=None,
        lark_type=_str(outer.type),
        app_id=None,
        tenant_key=None,
        create_time=None,
        event=outer.event,
        payload=payload,
        defect=Defect("neither a schema 2.0 event (schema) nor a schema 1.0 event_callback", "$"),
    )


def _read_v2(payload: bytes, outer: Outer) -> InboundEvent:
    header = outer.header if isinstance(outer.header, dict) else {}
    defect = None
    if outer.schema != "2.0":
        defect = Defect("unsupported schema", "$.schema")
    else:
        try:
            convert(outer.header, HeaderV2, path="$.header")
        except Invalid as exc:
            defect = Defect(exc.detail, exc.path)
        else:
            if not outer.event:
                defect = Defect("Object missing required field `event`", "$")
    return InboundEvent(
        schema="2.0",
        event_id=_nonempty(header.get("event_id")),
        lark_type=_str(header.get("event_type")),
        app_id=_str(header.get("app_id")),
        tenant_key=_str(header.get("tenant_key")),
        create_time=_str(header.get("create_time")),
        event=outer.event,
        payload=payload,
        defect=defect,
    )


def _read_v1(payload: bytes, outer: Outer) -> InboundEvent:
    peek = _EventV1Peek()
    defect = None
    if not outer.event:
        defect = Defect("Object missing required field `event`", "$")
    else:
        try:
            peek = _peek_v1.decode(outer.event)
        except msgspec.ValidationError as exc:  # JSON (Raw is valid JSON), but not an object
            defect = Defect(str(exc), "$.event")
        except (RecursionError, UnicodeDecodeError) as exc:  # e.g. invalid UTF-8 in event.type
            defect = Defect(f"not readable JSON ({type(exc).__name__})", "$.event")
    if defect is None:
        for value, tp, path in (
            (outer.type, Literal["event_callback"], "$.type"),
            (outer.uuid, NonEmptyStr, "$.uuid"),
        ):
            try:
                convert(value, tp, path=path)
            except Invalid as exc:
                defect = Defect(exc.detail, exc.path)
                break
    return InboundEvent(
        schema="1.0",
        event_id=_nonempty(outer.uuid),
        lark_type=_str(peek.type),
        app_id=_str(peek.app_id),
        tenant_key=_str(peek.tenant_key),
        create_time=_str(outer.ts),
        event=outer.event,
        payload=payload,
        defect=defect,
    )
