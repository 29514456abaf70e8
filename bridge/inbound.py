"""The inbound event: one authenticated push from the platform, its top level read once.

Every ingress (the HTTP webhook, the long connection) turns what the platform sent into an
:class:`InboundEvent` right after the payload is proven authentic, with :func:`read_inbound`;
every later stage — dedup, decode, normalize, dead letter, logs — reads its fields, and nothing
after this module parses the top level again.

Where each fact sits in the payload (docs/protocol.md §2, §6):

=============  ================================  ==========================================
fact           schema 2.0                        schema 1.0 (``type: "event_callback"``)
=============  ================================  ==========================================
delivery id    ``header.event_id``               ``uuid``
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

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
URL_VERIFICATION: Final = "url_verification"
EVENT_CALLBACK: Final = "event_callback"


class Outer(msgspec.Struct):
    """The top level of a (decrypted) push, loosely typed, with ``event`` left raw.

    Fields are ``Any`` on purpose: a wrong type here makes an invalid *event* (a dead letter),
    not an unreadable request. Only :func:`read_inbound` and the verify stage look at it.
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
        """The URL-verification handshake: ``type == "url_verification"`` and no ``schema`` (§5)."""
        return self.type == URL_VERIFICATION and self.schema is None

    @property
    def verification_token(self) -> Any:
        """Where the verification token sits (docs/protocol.md §6): schema 2.0 ``header.token``,
        schema 1.0 and the handshake top-level ``token``. Any JSON value, or None when absent."""
        if self.schema is not None:
            return self.header.get("token") if isinstance(self.header, dict) else None
        return self.token


OUTER_DECODER: Final = msgspec.json.Decoder(Outer)


class UnreadableJSON(ValueError):
    """Bytes that are not one JSON object this bridge can read: malformed JSON, not an object,
    invalid UTF-8, or nested deeper than the decoder's recursion limit."""


_ANY_DECODER: Final = msgspec.json.Decoder()


def read_json(data: bytes) -> Any:
    """``data`` decoded as generic JSON (dicts, lists, scalars). Raises :class:`UnreadableJSON`."""
    try:
        return _ANY_DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise UnreadableJSON(type(exc).__name__) from None


def decode_outer(payload: bytes) -> Outer:
    """The top level of ``payload``. Raises :class:`UnreadableJSON` for anything unreadable —
    never ``RecursionError`` or ``UnicodeDecodeError``, which msgspec raises for hostile bodies
    (a thousand nested arrays; a ``\xff`` inside a string) besides its own ``DecodeError``."""
    try:
        return OUTER_DECODER.decode(payload)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise UnreadableJSON(type(exc).__name__) from None


class HeaderV2(msgspec.Struct, kw_only=True):
    """Schema 2.0 ``header`` (docs/protocol.md §2): what a well-formed one must hold."""

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
    """What is wrong with a push's top level: ``detail`` (msgspec's wording) at ``path`` (``$.header``)."""

    detail: str
    path: str


class InboundEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event the platform pushed to us, authenticated and in plaintext.

    ``schema``: the top level's shape, ``"2.0"`` (a ``schema`` field; any value other than
    ``"2.0"`` is a defect) or ``"1.0"`` (``type: "event_callback"`` or a ``uuid``), None when it
    is neither. ``delivery_id``: ``header.event_id`` / ``uuid``, the dedup key (None when absent
    or empty). ``lark_type``, ``app_id``, ``tenant_key``: as in the module table, None when not a
    string. ``create_time``: as sent, unparsed (2.0: 13-digit ms or 16-digit µs; 1.0: unix seconds
    with a fraction). ``event``: the raw ``event`` JSON (empty when absent). ``payload``: the whole
    plaintext JSON object as received (decrypted when it came encrypted). ``defect``: None for a
    well-formed top level.
    """

    schema: Literal["1.0", "2.0"] | None
    delivery_id: str | None
    lark_type: str | None
    app_id: str | None
    tenant_key: str | None
    create_time: str | None
    event: msgspec.Raw
    payload: bytes
    defect: Defect | None = None

    def dedup_key(self) -> str:
        """The ledger's key for this event: its delivery id, or — for an event without one (a
        malformed top level, an unreadable payload: always a dead letter) — ``sha256:<hex>`` of
        its payload, so that the platform's retries of it still make one dead letter."""
        if self.delivery_id is not None:
            return self.delivery_id
        return "sha256:" + hashlib.sha256(self.payload).hexdigest()


def unreadable(payload: bytes, detail: str) -> InboundEvent:
    """The inbound event of an authentic push whose payload cannot be read: a signed ``encrypt``
    value that does not decrypt, or a decrypted plaintext that is not a JSON object. The
    signature proves the platform sent it, and no retry can make it readable: it becomes a dead
    letter (``payload``: the bytes that could not be read; ``detail`` says why)."""
    return InboundEvent(
        schema=None,
        delivery_id=None,
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
    """The :class:`InboundEvent` of an authentic plaintext ``payload`` (a JSON object's bytes).

    ``outer``: the payload's top level when the caller already decoded it (the verify stage
    does), else it is decoded here. Raises :class:`UnreadableJSON` only when ``outer`` is not
    given and ``payload`` is not a readable JSON object; every other problem is a ``defect``.
    """
    if outer is None:
        outer = decode_outer(payload)
    if outer.schema is not None:
        return _read_v2(payload, outer)
    if outer.type == EVENT_CALLBACK or outer.uuid is not None:
        return _read_v1(payload, outer)
    return InboundEvent(
        schema=None,
        delivery_id=None,
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
        delivery_id=_nonempty(header.get("event_id")),
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
        delivery_id=_nonempty(outer.uuid),
        lark_type=_str(peek.type),
        app_id=_str(peek.app_id),
        tenant_key=_str(peek.tenant_key),
        create_time=_str(outer.ts),
        event=outer.event,
        payload=payload,
        defect=defect,
    )
