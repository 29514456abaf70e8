"""Decode stage: an :class:`~bridge.inbound.InboundEvent` → a typed :class:`DecodedEvent`, or a
:class:`~bridge.errors.DeadLetterCause` (which becomes a dead letter).

Two-stage msgspec decode (msgspec docs "Raw", "reuse decoders"): the ingress already read the top
level into the inbound event (with ``event`` left raw); here the raw event is decoded by its Lark
type with a decoder built once per type.

Type normalization (docs/protocol.md §9): the event decoders run with ``strict=False``, so the
numeric strings Lark sends for times (``"1652356050"``, ``"27900"``, ``"1553853600000"``) become
the integers the envelope promises; a non-numeric string there is an ``invalid_event``. The JSON
path of a failure comes from :mod:`bridge.validation` (a walk of the model), never from msgspec's
error text.

Pure functions; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import msgspec

from bridge import envelope as ev
from bridge.errors import DeadLetterCause
from bridge.inbound import InboundEvent, UnreadableJSON, read_json
from bridge.validation import Invalid, locate

#: What replaces the value of a token field carried in ``_unmodelled`` or a dead letter.
REDACTED: Final = "[REDACTED]"
#: Deepest nesting of JSON objects and arrays the bridge carries (in ``_unmodelled`` and in dead
#: letters). The platform's payloads nest six levels at most (docs/protocol.md §9); a payload
#: nested deeper is an ``invalid_event``, and its dead letter does not carry it.
MAX_DEPTH: Final = 64


class TooDeep(ValueError):
    """A JSON value nested deeper than :data:`MAX_DEPTH`; the message says so."""


class DecodedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One authenticated, typed Lark event.

    Attributes:
        lark_type: The Lark event type.
        event_id: ``header.event_id`` (2.0) or ``uuid`` (1.0), the dedup key.
        app_id: The app the event is for (2.0 ``header.app_id``, 1.0 ``event.app_id``).
        tenant_key: The tenant it is from (2.0 ``header.tenant_key``, 1.0 ``event.tenant_key``).
        time_ms: The event time, unix milliseconds.
        data: The typed event object (:data:`bridge.envelope.EventData`) with ``_unmodelled``
            filled in.
    """

    lark_type: str
    event_id: str
    app_id: str
    tenant_key: str
    time_ms: int
    data: ev.EventData


_EVENT_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    t: msgspec.json.Decoder(cls, strict=False) for t, cls in ev.DATA_TYPES.items()
}


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


def redact_tokens(value: Any, depth: int = 0) -> Any:
    """Copy a decoded JSON value with every key containing ``token`` (any case) redacted.

    Args:
        value: Decoded JSON: dicts, lists, scalars.
        depth: How deep ``value`` already sits (levels of objects and arrays). Default 0.

    Returns:
        The copy, each such key's value replaced by :data:`REDACTED`.

    Raises:
        TooDeep: ``value`` nests past :data:`MAX_DEPTH` (so that no hostile payload can exhaust
            the interpreter's recursion limit).
    """
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        return {k: REDACTED if _is_token_key(k) else redact_tokens(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        return [redact_tokens(v, depth + 1) for v in value]
    return value


def unmodelled_fields(payload: Any, tree: _Tree) -> dict[str, Any]:
    """Collect the fields of a payload that its model does not know.

    Token fields are dropped, not carried (the verification token never enters an envelope).
    Hot path: known keys are found with one C-level set difference per object, and only
    children that have structure of their own are descended into.

    Args:
        payload: The whole decoded payload (dicts, lists, scalars).
        tree: The model's field tree (built once per event type from the envelope models).

    Returns:
        ``{JSON pointer (RFC 6901): value}`` of each field ``tree`` lacks, keys sorted within
        each object; empty when there is none.

    Raises:
        TooDeep: A carried value nests deeper than :data:`MAX_DEPTH` in all.
    """
    out: dict[str, Any] = {}

    def walk(value: Any, node: _Tree, path: str, depth: int) -> None:
        if type(node) is dict:
            if type(value) is not dict:
                return
            for k in sorted(value.keys() - node.keys()):
                if not _is_token_key(k):
                    out[path + "/" + _pointer_escape(k)] = redact_tokens(value[k], depth + 1)
            for k, child in node.items():
                if child is not None and k in value:
                    walk(value[k], child, path + "/" + _pointer_escape(k), depth + 1)
        elif type(node) is tuple and type(value) is list:
            child = node[1]
            if child is not None:
                for i, item in enumerate(value):
                    walk(item, child, f"{path}/{i}", depth + 1)

    walk(payload, tree, "", 0)
    return out


# ---- time ----------------------------------------------------------------------------------------

_MIN_MS: Final = 946_684_800_000  # 2000-01-01
_MAX_MS: Final = 4_102_444_800_000  # 2100-01-01


def parse_create_time(value: str) -> int:
    """Parse schema 2.0 ``header.create_time`` into unix ms.

    Source: docs/protocol.md §2.

    Args:
        value: The header's string: 13 digits are ms, 16 digits µs.

    Returns:
        The time, unix milliseconds.

    Raises:
        ValueError: For anything else, or a time outside 2000–2100.
    """
    if not (value.isascii() and value.isdigit()) or len(value) not in (13, 16):
        raise ValueError(f"create_time {value!r} is neither 13-digit ms nor 16-digit µs")
    ms = int(value) if len(value) == 13 else int(value) // 1000
    return _in_range(ms)


def parse_ts_seconds(value: Any) -> int:
    """Parse schema 1.0 top-level ``ts`` into unix ms.

    Source: docs/protocol.md §2.

    Args:
        value: Unix seconds as a string, with an optional decimal fraction
            (``"1502199207.7171419"``).

    Returns:
        The time, unix milliseconds (the fraction truncated to ms).

    Raises:
        ValueError: ``value`` is not such a string, or the time is outside 2000–2100.
    """
    if not isinstance(value, str) or not re.fullmatch(r"\d{9,11}(\.\d+)?", value):
        raise ValueError(f"ts {value!r} is not unix seconds")
    whole, _, frac = value.partition(".")
    return _in_range(int(whole) * 1000 + int((frac + "000")[:3]))


def _in_range(ms: int) -> int:
    if not _MIN_MS <= ms < _MAX_MS:
        raise ValueError(f"time {ms} ms is outside 2000-2100")
    return ms


# ---- decode --------------------------------------------------------------------------------------


def _time_at(parse: Callable[[Any], int], value: Any, path: str) -> int:
    """``parse(value)`` (unix ms), or the ``invalid_event`` failure at ``path``."""
    try:
        return parse(value)
    except ValueError as exc:
        raise DeadLetterCause("invalid_event", str(exc), path) from None


def _decode_data(inbound: InboundEvent, lark_type: str) -> Any:
    """The typed ``event`` of ``lark_type``, or the ``invalid_event`` failure at its path."""
    try:
        return _EVENT_DECODERS[lark_type].decode(inbound.event)
    except msgspec.ValidationError as exc:
        try:
            event = read_json(inbound.event)
        except UnreadableJSON as unreadable:  # e.g. invalid UTF-8 in a key the typed decode skipped
            raise DeadLetterCause("invalid_event", f"not readable JSON ({unreadable})", "$.event") from None
        where = locate(event, ev.DATA_TYPES[lark_type], path="$.event", strict=False)
        raise DeadLetterCause.invalid(where or Invalid(str(exc), "$.event")) from None
    except (RecursionError, UnicodeDecodeError) as exc:  # hostile but authenticated: invalid_event
        raise DeadLetterCause("invalid_event", f"not readable JSON ({type(exc).__name__})", "$.event") from None


def decode(inbound: InboundEvent) -> DecodedEvent:
    """Decode a non-handshake inbound event into a :class:`DecodedEvent`.

    Rules: docs/protocol.md §2 (shapes), §9 (the event types).

    Args:
        inbound: The event, as read by :func:`bridge.inbound.read_inbound`.

    Returns:
        The typed event, its unmodelled fields carried in ``data``.

    Raises:
        DeadLetterCause: For anything that cannot become an envelope, checked in this order: a
            defect of the top level (``invalid_event``); a Lark type the bridge does not forward
            (``unknown_event_type``, also for a 1.0 type under 2.0 or the reverse); a field of
            ``event`` that does not fit its model, no app or tenant, an unparsable time, a
            payload nested deeper than :data:`MAX_DEPTH` (``invalid_event``).
    """
    if inbound.defect is not None:
        raise DeadLetterCause("invalid_event", inbound.defect.detail, inbound.defect.path)
    lark_type = inbound.lark_type
    if inbound.schema == "2.0":
        if lark_type is None or lark_type not in ev.DATA_TYPES or lark_type in ev.THIRD_PARTY_TYPES:
            raise DeadLetterCause(
                "unknown_event_type",
                f"event type {lark_type!r} is not one the bridge forwards",
                "$.header.event_type",
            )
        data = _decode_data(inbound, lark_type)
        time_ms = _time_at(parse_create_time, inbound.create_time, "$.header.create_time")
        return _decoded(inbound, lark_type, _TREES_V2[lark_type], data, time_ms)

    if lark_type is None or lark_type not in ev.THIRD_PARTY_TYPES:
        raise DeadLetterCause(
            "unknown_event_type", f"event type {lark_type!r} is not one the bridge forwards", "$.event.type"
        )
    data = _decode_data(inbound, lark_type)
    for field in ("app_id", "tenant_key"):
        if not getattr(data, field):
            raise DeadLetterCause("invalid_event", f"Object missing required field `{field}`", f"$.event.{field}")
    if data.event_time is not None:
        time_ms = _time_at(_in_range, data.event_time, "$.event.event_time")
    else:
        time_ms = _time_at(parse_ts_seconds, inbound.create_time, "$.ts")
    return _decoded(inbound, lark_type, _TREE_V1, data, time_ms)


def _decoded(inbound: InboundEvent, lark_type: str, tree: _Tree, data: Any, time_ms: int) -> DecodedEvent:
    """The :class:`DecodedEvent`, with the payload's unmodelled fields carried in ``data``."""
    try:
        data.unmodelled = unmodelled_fields(read_json(inbound.payload), tree) or None
    except UnreadableJSON as exc:
        raise DeadLetterCause("invalid_event", f"not readable JSON ({exc})", "$") from None
    except TooDeep as exc:
        raise DeadLetterCause("invalid_event", str(exc), "$") from None
    assert inbound.event_id is not None  # a well-formed top level has one
    return DecodedEvent(
        lark_type=lark_type,
        event_id=inbound.event_id,
        app_id=inbound.app_id or "",
        tenant_key=inbound.tenant_key or "",
        time_ms=time_ms,
        data=data,
    )
