"""Decode stage: an authenticated payload → a typed :class:`DecodedEvent`, or a :class:`DecodeFailure`.

Two-stage msgspec decode (style.md; msgspec docs "Raw", "reuse decoders"): the verify stage already
decoded the top level (:class:`bridge.verify.Outer`, with ``event`` left raw); here the header is
checked and the raw event is decoded by its type with a decoder built once per type.

Type normalization (issue #3, PROTOCOL.md §9): the event decoders run with ``strict=False``, so the
numeric strings Lark sends for times (``"1652356050"``, ``"27900"``, ``"1553853600000"``) become
the integers the envelope promises; a non-numeric string there is an ``invalid_event``.

Pure functions; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import msgspec

from bridge import envelope as ev
from bridge.verify import Authenticated

REDACTED: Final = "[REDACTED]"
_PATH_RE: Final = re.compile(r" - at `(\$[^`]*)`$")


class DecodeFailure(Exception):
    """An authenticated event that cannot become an envelope; it goes to the dead-letter topic.

    ``reason``: ``unknown_event_type`` or ``invalid_event``; ``error``: message with the JSON path;
    ``path``: the JSON path (``$.event.room.room_id``) or None; ``lark_type``/``delivery_id``/
    ``app_id``/``tenant_key``: what the payload told before it failed, else None.
    """

    def __init__(
        self,
        reason: ev.DeadLetterReason,
        error: str,
        *,
        path: str | None = None,
        lark_type: str | None = None,
        delivery_id: str | None = None,
        app_id: str | None = None,
        tenant_key: str | None = None,
    ) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.path = path
        self.lark_type = lark_type
        self.delivery_id = delivery_id
        self.app_id = app_id
        self.tenant_key = tenant_key


class DecodedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One authenticated, typed Lark event.

    ``lark_type``: the Lark event type; ``delivery_id``: ``header.event_id`` (2.0) or ``uuid``
    (1.0), the dedup key; ``time_ms``: event time, unix milliseconds; ``data``: the typed event
    object with ``_unmodelled`` filled in.
    """

    lark_type: str
    delivery_id: str
    app_id: str
    tenant_key: str
    time_ms: int
    data: ev.EventData


class HeaderV2(msgspec.Struct, kw_only=True):
    """Schema 2.0 ``header`` (PROTOCOL.md §2)."""

    event_id: ev.NonEmptyStr
    event_type: ev.NonEmptyStr
    create_time: str
    app_id: str
    tenant_key: str
    token: str | None = None


class _V1Peek(msgspec.Struct):
    type: Any = None


_EVENT_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    t: msgspec.json.Decoder(cls, strict=False) for t, cls in ev.DATA_TYPES.items()
}
_peek_v1: Final = msgspec.json.Decoder(_V1Peek)
_generic: Final = msgspec.json.Decoder()


# ---- field trees for carrying unmodelled fields -------------------------------------------------

_Tree = dict[str, Any] | tuple[str, Any] | None  # struct fields | ("list", item tree) | leaf


def _tree_of(t: Any) -> _Tree:
    from msgspec import inspect as mi

    def walk(info: Any) -> _Tree:
        if isinstance(info, mi.StructType):
            return {f.encode_name: walk(f.type) for f in info.fields if f.encode_name != "_unmodelled"}
        if isinstance(info, mi.ListType):
            return ("list", walk(info.item_type))
        if isinstance(info, mi.UnionType):
            for member in info.types:
                if not isinstance(member, mi.NoneType):
                    return walk(member)
        if isinstance(info, mi.Metadata):
            return walk(info.type)
        return None

    return walk(mi.type_info(t))


_HEADER_TREE: Final = dict.fromkeys(("event_id", "event_type", "create_time", "token", "app_id", "tenant_key"))
_TREES_V2: Final = {
    t: {"schema": None, "header": _HEADER_TREE, "event": _tree_of(cls)}
    for t, cls in ev.DATA_TYPES.items()
    if t not in ev.THIRD_PARTY_TYPES
}
_TREE_V1: Final = {
    "ts": None,
    "uuid": None,
    "token": None,
    "type": None,
    "event": _tree_of(ev.ThirdPartyMeetingRoomEventData),
}


def _pointer_escape(key: str) -> str:
    if "~" in key or "/" in key:
        return key.replace("~", "~0").replace("/", "~1")
    return key


def _is_token_key(key: str) -> bool:
    return "token" in key.lower()


def redact_tokens(value: Any) -> Any:
    """A copy of a decoded JSON value with every key containing ``token`` (any case) redacted."""
    if isinstance(value, dict):
        return {k: REDACTED if _is_token_key(k) else redact_tokens(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tokens(v) for v in value]
    return value


def unmodelled_fields(payload: Any, tree: _Tree) -> dict[str, Any]:
    """``{JSON pointer: value}`` of the fields of ``payload`` (decoded JSON) that ``tree`` lacks.

    Token fields are dropped, not carried (the verification token never enters an envelope).
    Hot path: known keys are found with one C-level set difference per object, and only
    children that have structure of their own are descended into.
    """
    out: dict[str, Any] = {}

    def walk(value: Any, node: _Tree, path: str) -> None:
        if type(node) is dict:
            if type(value) is not dict:
                return
            for k in sorted(value.keys() - node.keys()):
                if not _is_token_key(k):
                    out[path + "/" + _pointer_escape(k)] = redact_tokens(value[k])
            for k, child in node.items():
                if child is not None and k in value:
                    walk(value[k], child, path + "/" + _pointer_escape(k))
        elif type(node) is tuple and type(value) is list:
            child = node[1]
            if child is not None:
                for i, item in enumerate(value):
                    walk(item, child, f"{path}/{i}")

    walk(payload, tree, "")
    return out


# ---- time ----------------------------------------------------------------------------------------

_MIN_MS: Final = 946_684_800_000  # 2000-01-01
_MAX_MS: Final = 4_102_444_800_000  # 2100-01-01


def parse_create_time(value: str) -> int:
    """Schema 2.0 ``header.create_time`` → unix ms: 13 digits are ms, 16 digits µs (PROTOCOL.md §2).

    Raises ValueError for anything else or a time outside 2000–2100.
    """
    if not (value.isascii() and value.isdigit()) or len(value) not in (13, 16):
        raise ValueError(f"create_time {value!r} is neither 13-digit ms nor 16-digit µs")
    ms = int(value) if len(value) == 13 else int(value) // 1000
    return _in_range(ms)


def parse_ts_seconds(value: Any) -> int:
    """Schema 1.0 top-level ``ts`` (``"1502199207.7171419"``, seconds) → unix ms. Raises ValueError."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{9,11}(\.\d+)?", value):
        raise ValueError(f"ts {value!r} is not unix seconds")
    whole, _, frac = value.partition(".")
    return _in_range(int(whole) * 1000 + int((frac + "000")[:3]))


def _in_range(ms: int) -> int:
    if not _MIN_MS <= ms < _MAX_MS:
        raise ValueError(f"time {ms} ms is outside 2000-2100")
    return ms


# ---- decode --------------------------------------------------------------------------------------


def _validation_failure(exc: msgspec.ValidationError, prefix: str, **known: Any) -> DecodeFailure:
    msg = str(exc)
    m = _PATH_RE.search(msg)
    path = prefix + m.group(1)[1:] if m else prefix
    text = _PATH_RE.sub("", msg)
    return DecodeFailure("invalid_event", f"{text} - at `{path}`", path=path, **known)


def _time_at(parse: Callable[[Any], int], value: Any, path: str, known: dict[str, Any]) -> int:
    """``parse(value)`` (unix ms), or the ``invalid_event`` failure at ``path``."""
    try:
        return parse(value)
    except ValueError as exc:
        raise DecodeFailure("invalid_event", f"{exc} - at `{path}`", path=path, **known) from None


def _decoded(auth: Authenticated, tree: _Tree, data: Any, time_ms: int, known: dict[str, Any]) -> DecodedEvent:
    """The :class:`DecodedEvent`, with the payload's unmodelled fields carried in ``data``."""
    data.unmodelled = unmodelled_fields(_generic.decode(auth.payload), tree) or None
    return DecodedEvent(
        lark_type=known["lark_type"],
        delivery_id=known["delivery_id"],
        app_id=known["app_id"],
        tenant_key=known["tenant_key"],
        time_ms=time_ms,
        data=data,
    )


def decode(auth: Authenticated) -> DecodedEvent:
    """Decode an authenticated non-handshake payload into a :class:`DecodedEvent`.

    Raises :class:`DecodeFailure` (``unknown_event_type`` or ``invalid_event``, with the JSON path)
    for anything that cannot become an envelope. Schema 2.0 is told by a non-null ``schema``, 1.0
    by ``type == "event_callback"`` (PROTOCOL.md §2, SDK-PY classification).
    """
    outer = auth.outer
    if outer.schema is not None:
        return _decode_v2(auth)
    if outer.type == "event_callback" or outer.uuid is not None:
        return _decode_v1(auth)
    raise DecodeFailure(
        "invalid_event",
        "neither a schema 2.0 event (schema) nor a schema 1.0 event_callback - at `$`",
        path="$",
        lark_type=outer.type if isinstance(outer.type, str) else None,
    )


def _decode_v2(auth: Authenticated) -> DecodedEvent:
    outer = auth.outer
    if outer.schema != "2.0":
        raise DecodeFailure("invalid_event", "unsupported schema - at `$.schema`", path="$.schema")
    try:
        header = msgspec.convert(outer.header, HeaderV2)
    except msgspec.ValidationError as exc:
        known: dict[str, Any] = {}
        if isinstance(outer.header, dict):
            for attr, key in (("lark_type", "event_type"), ("delivery_id", "event_id")):
                if isinstance(outer.header.get(key), str):
                    known[attr] = outer.header[key]
        raise _validation_failure(exc, "$.header", **known) from None
    known = {
        "lark_type": header.event_type,
        "delivery_id": header.event_id,
        "app_id": header.app_id,
        "tenant_key": header.tenant_key,
    }
    decoder = _EVENT_DECODERS.get(header.event_type)
    if decoder is None or header.event_type in ev.THIRD_PARTY_TYPES:
        raise DecodeFailure(
            "unknown_event_type",
            f"event type {header.event_type!r} is not one the bridge forwards - at `$.header.event_type`",
            path="$.header.event_type",
            **known,
        )
    if not outer.event:
        raise DecodeFailure("invalid_event", "Object missing required field `event` - at `$`", path="$", **known)
    try:
        data = decoder.decode(outer.event)
    except msgspec.ValidationError as exc:
        raise _validation_failure(exc, "$.event", **known) from None
    time_ms = _time_at(parse_create_time, header.create_time, "$.header.create_time", known)
    return _decoded(auth, _TREES_V2[header.event_type], data, time_ms, known)


def _decode_v1(auth: Authenticated) -> DecodedEvent:
    outer = auth.outer
    delivery_id = outer.uuid if isinstance(outer.uuid, str) and outer.uuid else None
    if not outer.event:
        raise DecodeFailure(
            "invalid_event", "Object missing required field `event` - at `$`", path="$", delivery_id=delivery_id
        )
    try:
        lark_type = _peek_v1.decode(outer.event).type
    except msgspec.DecodeError:
        raise DecodeFailure(
            "invalid_event", "Expected `object` - at `$.event`", path="$.event", delivery_id=delivery_id
        ) from None
    known: dict[str, Any] = {"lark_type": lark_type if isinstance(lark_type, str) else None, "delivery_id": delivery_id}
    if lark_type not in ev.THIRD_PARTY_TYPES:
        raise DecodeFailure(
            "unknown_event_type",
            f"event type {lark_type!r} is not one the bridge forwards - at `$.event.type`",
            path="$.event.type",
            **known,
        )
    if outer.type != "event_callback":
        raise DecodeFailure("invalid_event", "Expected `\"event_callback\"` - at `$.type`", path="$.type", **known)
    if delivery_id is None:
        raise DecodeFailure("invalid_event", "Expected a non-empty `str` - at `$.uuid`", path="$.uuid", **known)
    try:
        data: ev.ThirdPartyMeetingRoomEventData = _EVENT_DECODERS[lark_type].decode(outer.event)
    except msgspec.ValidationError as exc:
        raise _validation_failure(exc, "$.event", **known) from None
    known["app_id"], known["tenant_key"] = data.app_id, data.tenant_key
    if not data.app_id or not data.tenant_key:
        field = "app_id" if not data.app_id else "tenant_key"
        raise DecodeFailure(
            "invalid_event", f"Object missing required field `{field}` - at `$.event`", path=f"$.event.{field}", **known
        )
    if data.event_time is not None:
        time_ms = _time_at(_in_range, data.event_time, "$.event.event_time", known)
    else:
        time_ms = _time_at(parse_ts_seconds, outer.ts, "$.ts", known)
    return _decoded(auth, _TREE_V1, data, time_ms, known)
