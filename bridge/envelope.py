"""Envelope v1: the Kafka record values the bridge promises to its consumers.

This module is the contract. It imports only msgspec and the standard library so that a consumer
can vendor it and decode records with the same types (``msgspec.json.decode(value,
type=RoomCreatedEnvelope)``). JSON Schemas in ``schemas/`` are generated from these types by
``python -m bridge schemas write`` and checked by ``python -m bridge schemas check``.

Record value: a CloudEvents 1.0 event in structured JSON mode (UTF-8), Kafka header
``content-type: application/cloudevents+json; charset=utf-8``; the Kafka key is ``partitionkey``
(UTF-8). See docs/envelope.md ("Envelope v1", "Schemas and versioning") for the attribute
table and the versioning policy. A topic in *binary* content mode (``BRIDGE_CLOUDEVENTS_MODE``)
carries the same event as the CloudEvents Kafka protocol binding maps it: the value is ``data``
alone and every other attribute is a header (:func:`to_binary`; :func:`structured_from_binary`
turns such a record back into the structured JSON these models decode).

``data`` keeps Lark's field names and nesting, with types normalized: numeric strings become
integers (units in each field's description), ids stay strings. Fields the bridge does not model
yet are never dropped: they are carried in ``data._unmodelled`` as ``{JSON pointer into the Lark
payload: value}`` (RFC 6901), so a field the platform adds tomorrow reaches consumers at once,
and modelling it later (in a new schema version) cannot change the type of an existing field.
Token fields are never carried.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta

#: The envelope's ``envelopeversion`` attribute.
ENVELOPE_VERSION: Final = 1
#: The Kafka ``content-type`` header of a structured-mode record (CloudEvents 1.0 Kafka binding, §3.3.1).
CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
#: The envelope's ``datacontenttype`` attribute: ``data`` is JSON.
DATA_CONTENT_TYPE: Final = "application/json"
#: The Kafka header naming the value's media type: the event format in structured mode
#: (:data:`CONTENT_TYPE`), ``datacontenttype`` in binary mode (CloudEvents Kafka binding §3.2.1).
CONTENT_TYPE_HEADER: Final = "content-type"
#: Prefix of the Kafka header of each CloudEvents attribute in binary content mode
#: (CloudEvents Kafka binding §3.2.3.1): ``id`` → ``ce_id``.
BINARY_HEADER_PREFIX: Final = "ce_"
#: The attributes of type Integer in the CloudEvents type system (the others are strings): in
#: binary mode their headers carry the canonical string form, decimal digits.
INTEGER_ATTRIBUTES: Final = frozenset({"envelopeversion"})
#: The prefix of every ``dataschema`` value (:func:`dataschema_id`, :func:`dead_letter_schema_id`).
SCHEMA_ID_BASE: Final = "urn:lark-bridge:schema"

#: The Lark event types the bridge forwards (docs/protocol.md §9), verbatim.
ROOM_CREATED: Final = "vc.room.created_v1"
ROOM_UPDATED: Final = "vc.room.updated_v1"
ROOM_DELETED: Final = "vc.room.deleted_v1"
ROOM_LEVEL_CREATED: Final = "vc.room_level.created_v1"
ROOM_LEVEL_UPDATED: Final = "vc.room_level.updated_v1"
ROOM_LEVEL_DELETED: Final = "vc.room_level.deleted_v1"
RESERVE_CONFIG_UPDATED: Final = "vc.reserve_config.updated_v1"
THIRD_PARTY_CREATED: Final = "third_party_meeting_room_event_created"
THIRD_PARTY_UPDATED: Final = "third_party_meeting_room_event_updated"
THIRD_PARTY_DELETED: Final = "third_party_meeting_room_event_deleted"
#: The three third-party types (schema 1.0, docs/protocol.md §9.1); they share one topic.
THIRD_PARTY_TYPES: Final = (THIRD_PARTY_CREATED, THIRD_PARTY_UPDATED, THIRD_PARTY_DELETED)
#: The three room types (docs/protocol.md §9.2, §9.4, §9.5), keyed by ``room.room_id``.
ROOM_TYPES: Final = (ROOM_CREATED, ROOM_UPDATED, ROOM_DELETED)
#: The three room-level types (docs/protocol.md §9.6–§9.8), keyed by the room level's id.
ROOM_LEVEL_TYPES: Final = (ROOM_LEVEL_CREATED, ROOM_LEVEL_UPDATED, ROOM_LEVEL_DELETED)
#: Every Lark type the bridge forwards.
LARK_TYPES: Final = (*ROOM_TYPES, *ROOM_LEVEL_TYPES, RESERVE_CONFIG_UPDATED, *THIRD_PARTY_TYPES)
#: The CloudEvents ``type`` of a dead-letter record.
DEAD_LETTER_TYPE: Final = "lark.bridge.dead_letter"
#: Kafka header of every record the bridge writes whose event id is known: the platform's
#: event id (UTF-8), so that the bridge's dedup ledger is rebuilt from its topics without
#: parsing values (and consumers can group fan-out siblings the same way).
EVENT_ID_HEADER: Final = "lark_event_id"
#: Kafka header of each record of an event that fans out to more than one record:
#: ``<index>/<count>`` (ASCII; index from 0, in publish order). An event counts as delivered once
#: all its ``count`` records are in the topics; after a partial failure only the missing ones are
#: published again (docs/delivery.md).
RECORD_PART_HEADER: Final = "lark_record_part"
#: Kafka header of a record published by ``python -m bridge dead-letters replay``: the dead letter
#: it was made from, ``<dead-letter topic>/<partition>/<offset>``.
REPLAYED_HEADER: Final = "lark_replayed_from"


def part_header(index: int, count: int) -> tuple[str, bytes]:
    """Build the :data:`RECORD_PART_HEADER` header of one record of a fan-out.

    Args:
        index: The record's index, from 0, in publish order.
        count: How many records the event has.

    Returns:
        ``(RECORD_PART_HEADER, b"<index>/<count>")``, the value ASCII.
    """
    return (RECORD_PART_HEADER, f"{index}/{count}".encode("ascii"))


def parse_part(value: bytes) -> tuple[int, int] | None:
    """Parse a :data:`RECORD_PART_HEADER` value.

    Args:
        value: The header's value, bytes.

    Returns:
        ``(index, count)``, or None if it is not ``<index>/<count>`` (decimal, at most 9 digits
        each) with ``0 <= index < count``.
    """
    index, sep, count = value.partition(b"/")
    if not sep or not index.isdigit() or not count.isdigit() or len(index) > 9 or len(count) > 9:
        return None
    i, n = int(index), int(count)
    return (i, n) if 0 <= i < n else None


def dataschema_id(lark_type: str, version: int = ENVELOPE_VERSION) -> str:
    """Build the envelope's ``dataschema`` attribute, which names the schema of a type's records.

    Args:
        lark_type: The Lark event type.
        version: The envelope version. Default :data:`ENVELOPE_VERSION`.

    Returns:
        ``urn:lark-bridge:schema:envelope:v<version>:<lark type>``: the constant ``dataschema``
        in ``schemas/envelope/v<version>/<lark type>.schema.json``.
    """
    return f"{SCHEMA_ID_BASE}:envelope:v{version}:{lark_type}"


def dead_letter_schema_id(version: int = 1) -> str:
    """Build the dead-letter records' ``dataschema`` attribute, which names their schema.

    Args:
        version: The dead-letter record version. Default 1.

    Returns:
        ``urn:lark-bridge:schema:dead_letter:v<version>``.
    """
    return f"{SCHEMA_ID_BASE}:dead_letter:v{version}"


_encoder: Final = msgspec.json.Encoder()

# The docstrings of the models below, and the descriptions in their ``Meta``, are the published
# schemas' descriptions (msgspec puts them there; schemas/PUBLISHED.sha256 pins the files): they
# stay as they are, prose rather than Args/Attributes sections, until a new schema version.

NonEmptyStr = Annotated[str, Meta(min_length=1)]
UnixSeconds = Annotated[int, Meta(ge=0, description="Unix time in seconds; 0 means permanent.")]
UnixMillis = Annotated[int, Meta(ge=0, description="Unix time in milliseconds.")]
SecondsOfDay = Annotated[int, Meta(ge=0, le=86400, description="Seconds since 00:00 local time.")]
Unmodelled = Annotated[
    dict[str, Any],
    Meta(
        description="Fields of the Lark payload this envelope version does not model, keyed by "
        "RFC 6901 JSON pointer from the payload root (e.g. '/event/room/new_field'). Absent when "
        "there are none. Token fields are never carried."
    ),
]


class _Data(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Base of event data: absent optional fields are omitted, not null."""

    unmodelled: Unmodelled | None = msgspec.field(default=None, name="_unmodelled")


class UserId(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A user's ids. ``user_id`` needs scope ``contact:user.employee_id:readonly``."""

    user_id: str | None = None
    open_id: str | None = None
    union_id: str | None = None


# ---- vc.room.created_v1 (DOC-ROOM, docs/protocol.md §9.2) ------------------------------------------


class RoomStatus(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Room status; ``disable_*_time`` arrive as numeric strings and become integers."""

    status: bool | None = None
    schedule_status: bool | None = None
    disable_start_time: UnixSeconds | None = None
    disable_end_time: UnixSeconds | None = None
    disable_reason: str | None = None
    contact_ids: list[UserId] | None = None
    disable_notice: bool | None = None
    resume_notice: bool | None = None


class Device(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A device in the room."""

    name: str | None = None


class Room(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A meeting room; ``room_id`` (``omm_…``) is the partition key."""

    room_id: NonEmptyStr
    name: str | None = None
    capacity: int | None = None
    description: str | None = None
    display_id: str | None = None
    custom_room_id: str | None = None
    room_level_id: str | None = None
    path: list[str] | None = None
    room_status: RoomStatus | None = None
    device: list[Device] | None = None


class RoomCreatedData(_Data, kw_only=True):
    """``data`` of ``vc.room.created_v1``: Lark's ``event`` object."""

    room: Room


# ---- vc.room.updated_v1, vc.room.deleted_v1 (DOC-ROOM-UPD, DOC-ROOM-DEL, docs/protocol.md §9.4, §9.5) --


class RoomUpdatedData(_Data, kw_only=True):
    """``data`` of ``vc.room.updated_v1``: Lark's ``event`` object (the room as it is now)."""

    room: Room


class DeletedRoom(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A deleted meeting room: only its id (``omm_…``), the partition key."""

    room_id: NonEmptyStr


class RoomDeletedData(_Data, kw_only=True):
    """``data`` of ``vc.room.deleted_v1``: Lark's ``event`` object."""

    room: DeletedRoom


# ---- vc.room_level.{created,updated,deleted}_v1 (DOC-LEVEL-*, docs/protocol.md §9.6-§9.8) -----------


class RoomLevel(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A room level (building, floor, …; ``omb_…``); ``room_level_id`` is the partition key."""

    room_level_id: NonEmptyStr
    name: str | None = None
    parent_id: Annotated[str, Meta(description="Id of the parent room level.")] | None = None
    path: Annotated[list[str], Meta(description="Room level ids from the root down.")] | None = None
    has_child: Annotated[bool, Meta(description="Whether it has child room levels.")] | None = None
    custom_group_id: Annotated[str, Meta(description="Customer-defined room level id.")] | None = None


class RoomLevelCreatedData(_Data, kw_only=True):
    """``data`` of ``vc.room_level.created_v1``: Lark's ``event`` object."""

    room_level: RoomLevel


class RoomLevelUpdatedData(_Data, kw_only=True):
    """``data`` of ``vc.room_level.updated_v1``: Lark's ``event`` object (the level as it is now)."""

    room_level: RoomLevel


class RoomLevelDeletedData(_Data, kw_only=True):
    """``data`` of ``vc.room_level.deleted_v1``: Lark's ``event`` object; ``room_level_id`` is the
    partition key."""

    room_level_id: Annotated[str, Meta(min_length=1, description="The deleted room level (omb_…).")]
    delete_child: Annotated[bool, Meta(description="Whether its child levels were deleted too.")] | None = None


# ---- vc.reserve_config.updated_v1 (DOC-RCFG, docs/protocol.md §9.3) --------------------------------


class SubscribeUser(msgspec.Struct, omit_defaults=True, kw_only=True):
    """An approver or an allowed user."""

    user_id: UserId | None = None


class ApproveConfig(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Approval settings (Lark's key is ``approve_config``)."""

    approval_switch: Annotated[int, Meta(description="0 off, 1 on.")] | None = None
    approval_condition: Annotated[int, Meta(description="0 all, 1 conditional.")] | None = None
    meeting_duration: Annotated[float, Meta(description="Hours.")] | None = None
    approvers: list[SubscribeUser] | None = None


class TimeConfig(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Booking time limits; ``opening_hour``/``start_time``/``end_time`` become integers."""

    if_cover_child_scope: bool | None = None
    time_switch: int | None = None
    days_in_advance: Annotated[int, Meta(description="Days, 1-730.")] | None = None
    opening_hour: SecondsOfDay | None = None
    start_time: SecondsOfDay | None = None
    end_time: SecondsOfDay | None = None
    max_duration: Annotated[int, Meta(description="Hours, 1-99.")] | None = None


class SubscribeDepartment(msgspec.Struct, omit_defaults=True, kw_only=True):
    """An allowed department; ``department_id`` (``od-…``) stays a string."""

    department_id: str | None = None
    department_name: str | None = None


class ReserveScopeConfig(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Who may book."""

    allow_all_users: Annotated[int, Meta(description="0 some, 1 all.")] | None = None
    allow_users: list[SubscribeUser] | None = None
    allow_depts: list[SubscribeDepartment] | None = None


class ReserveConfigUpdatedData(_Data, kw_only=True):
    """``data`` of ``vc.reserve_config.updated_v1``; ``scope_id`` is the partition key."""

    scope_id: Annotated[str, Meta(min_length=1, description="Room (omm_…) or room level (omb_…).")]
    scope_type: Annotated[int, Meta(description="1 room level, 2 room.")] | None = None
    approve_config: ApproveConfig | None = None
    time_config: TimeConfig | None = None
    reserve_scope_config: ReserveScopeConfig | None = None


# ---- third_party_meeting_room_event_* (DOC-3RD, docs/protocol.md §9.1) -----------------------------


class TimeStamp(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Start or end of the calendar event."""

    time_stamp: UnixMillis | None = None


class MeetingRoom(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A third-party meeting room (``omm_…``)."""

    open_id: NonEmptyStr


class Organizer(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The calendar event's organizer."""

    open_id: str | None = None
    user_id: str | None = None
    union_id: str | None = None


class ThirdPartyMeetingRoomEventData(_Data, kw_only=True):
    """``data`` of the three ``third_party_meeting_room_event_*`` types: Lark's ``event`` object.

    One record per room: ``meeting_room`` is the room this record is keyed by (absent when the
    event lists no rooms; then the key is ``uid``). ``event_id`` is the *calendar* event id
    (``{uid}_{original_time}``), not a delivery id.
    """

    app_id: str | None = None
    tenant_key: str | None = None
    type: str | None = None
    event_id: str | None = None
    event_time: UnixMillis | None = None
    uid: NonEmptyStr
    original_time: int | None = None
    start: TimeStamp | None = None
    end: TimeStamp | None = None
    meeting_rooms: list[MeetingRoom] | None = None
    organizer: Organizer | None = None
    meeting_room: MeetingRoom | None = None


EventData = (
    RoomCreatedData
    | RoomUpdatedData
    | RoomDeletedData
    | RoomLevelCreatedData
    | RoomLevelUpdatedData
    | RoomLevelDeletedData
    | ReserveConfigUpdatedData
    | ThirdPartyMeetingRoomEventData
)
D = TypeVar(
    "D",
    RoomCreatedData,
    RoomUpdatedData,
    RoomDeletedData,
    RoomLevelCreatedData,
    RoomLevelUpdatedData,
    RoomLevelDeletedData,
    ReserveConfigUpdatedData,
    ThirdPartyMeetingRoomEventData,
)

RFC3339 = Annotated[
    str,
    Meta(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
        extra_json_schema={"format": "date-time"},
        description="RFC 3339, UTC, milliseconds.",
    ),
]


class CloudEvent(msgspec.Struct, Generic[D], frozen=True, kw_only=True):
    """Envelope v1 of one Lark event record: CloudEvents 1.0, structured JSON mode.

    ``id`` is unique per record: Lark's delivery id, or ``{delivery id}:{room open_id}`` for the
    fan-out of third-party room events; ``larkeventid`` is always the delivery id.
    ``subject`` == ``partitionkey`` == the Kafka key.
    """

    specversion: Literal["1.0"]
    id: NonEmptyStr
    source: Annotated[str, Meta(description="/lark/apps/{app_id}/tenants/{tenant_key}")]
    type: Annotated[str, Meta(description="The Lark event type, verbatim.")]
    subject: NonEmptyStr
    time: RFC3339
    datacontenttype: Literal["application/json"]
    dataschema: str
    partitionkey: NonEmptyStr
    larkeventid: Annotated[str, Meta(min_length=1, description="Lark's delivery id.")]
    tenantkey: str
    appid: str
    envelopeversion: Literal[1]
    data: D


# The records are of these subclasses, whose ``type`` is the ``Literal`` of their Lark type(s), so
# a vendored model is as strict as the published schema. (CloudEvent's docstring is the schemas'
# description, which a published schema never changes: notes about the classes live here.)


class RoomCreatedEnvelope(CloudEvent[RoomCreatedData], frozen=True, kw_only=True):
    """Envelope v1 of ``vc.room.created_v1``; keyed by ``data.room.room_id``."""

    type: Literal["vc.room.created_v1"]


class RoomUpdatedEnvelope(CloudEvent[RoomUpdatedData], frozen=True, kw_only=True):
    """Envelope v1 of ``vc.room.updated_v1``; keyed by ``data.room.room_id``."""

    type: Literal["vc.room.updated_v1"]


class RoomDeletedEnvelope(CloudEvent[RoomDeletedData], frozen=True, kw_only=True):
    """Envelope v1 of ``vc.room.deleted_v1``; keyed by ``data.room.room_id``."""

    type: Literal["vc.room.deleted_v1"]


class RoomLevelCreatedEnvelope(CloudEvent[RoomLevelCreatedData], frozen=True, kw_only=True):
    """Envelope v1 of ``vc.room_level.created_v1``; keyed by ``data.room_level.room_level_id``."""

    type: Literal["vc.room_level.created_v1"]


class RoomLevelUpdatedEnvelope(CloudEvent[RoomLevelUpdatedData], frozen=True, kw_only=True):
    """Envelope v1 of ``vc.room_level.updated_v1``; keyed by ``data.room_level.room_level_id``."""

    type: Literal["vc.room_level.updated_v1"]


class RoomLevelDeletedEnvelope(CloudEvent[RoomLevelDeletedData], frozen=True, kw_only=True):
    """Envelope v1 of ``vc.room_level.deleted_v1``; keyed by ``data.room_level_id``."""

    type: Literal["vc.room_level.deleted_v1"]


class ReserveConfigUpdatedEnvelope(CloudEvent[ReserveConfigUpdatedData], frozen=True, kw_only=True):
    """Envelope v1 of ``vc.reserve_config.updated_v1``; keyed by ``data.scope_id``."""

    type: Literal["vc.reserve_config.updated_v1"]


class ThirdPartyMeetingRoomEventEnvelope(CloudEvent[ThirdPartyMeetingRoomEventData], frozen=True, kw_only=True):
    """Envelope v1 of ``third_party_meeting_room_event_{created,updated,deleted}``; one record per
    room, keyed by ``data.meeting_room.open_id`` (or ``data.uid`` when no room is listed)."""

    type: Literal[
        "third_party_meeting_room_event_created",
        "third_party_meeting_room_event_updated",
        "third_party_meeting_room_event_deleted",
    ]


DATA_TYPES: Final[dict[str, type[Any]]] = {
    ROOM_CREATED: RoomCreatedData,
    ROOM_UPDATED: RoomUpdatedData,
    ROOM_DELETED: RoomDeletedData,
    ROOM_LEVEL_CREATED: RoomLevelCreatedData,
    ROOM_LEVEL_UPDATED: RoomLevelUpdatedData,
    ROOM_LEVEL_DELETED: RoomLevelDeletedData,
    RESERVE_CONFIG_UPDATED: ReserveConfigUpdatedData,
    **dict.fromkeys(THIRD_PARTY_TYPES, ThirdPartyMeetingRoomEventData),
}
ENVELOPE_TYPES: Final[dict[str, type[Any]]] = {
    ROOM_CREATED: RoomCreatedEnvelope,
    ROOM_UPDATED: RoomUpdatedEnvelope,
    ROOM_DELETED: RoomDeletedEnvelope,
    ROOM_LEVEL_CREATED: RoomLevelCreatedEnvelope,
    ROOM_LEVEL_UPDATED: RoomLevelUpdatedEnvelope,
    ROOM_LEVEL_DELETED: RoomLevelDeletedEnvelope,
    RESERVE_CONFIG_UPDATED: ReserveConfigUpdatedEnvelope,
    **dict.fromkeys(THIRD_PARTY_TYPES, ThirdPartyMeetingRoomEventEnvelope),
}

# ---- dead letters ---------------------------------------------------------------------------

#: Why an event became a dead letter: a type the bridge does not forward, an event that does not
#: fit its model, or records over ``BRIDGE_KAFKA_MAX_RECORD_BYTES``.
DeadLetterReason = Literal["unknown_event_type", "invalid_event", "record_too_large"]


class DeadLetterData(msgspec.Struct, omit_defaults=True, kw_only=True, frozen=True):
    """Why an authenticated event could not be normalized, and the event itself.

    ``payload`` is the decrypted Lark payload with every token field's value replaced by
    ``"[REDACTED]"``.
    """

    reason: DeadLetterReason
    error: Annotated[str, Meta(description="What failed, with its JSON path.")]
    path: Annotated[str, Meta(description="JSON path of the failing field, e.g. $.event.room.room_id")] | None = None
    lark_type: str | None = None
    lark_event_id: Annotated[str, Meta(description="Lark's delivery id, when known.")] | None = None
    received_at: RFC3339
    payload: dict[str, Any]


class DeadLetterEnvelope(msgspec.Struct, omit_defaults=True, frozen=True, kw_only=True):
    """Dead-letter record v1: a CloudEvent of type ``lark.bridge.dead_letter``.

    ``id`` is the delivery id when known (else a digest of the payload); ``time`` is the receive
    time. Extensions are present when the payload yielded them.
    """

    specversion: Literal["1.0"]
    id: NonEmptyStr
    source: str
    type: Literal["lark.bridge.dead_letter"]
    time: RFC3339
    datacontenttype: Literal["application/json"]
    dataschema: str
    envelopeversion: Literal[1]
    data: DeadLetterData
    subject: str | None = None
    partitionkey: str | None = None
    larkeventid: str | None = None
    tenantkey: str | None = None
    appid: str | None = None


# ---- content modes (CloudEvents Kafka protocol binding) ------------------------------------


def to_binary(envelope: CloudEvent[Any] | DeadLetterEnvelope) -> tuple[tuple[tuple[str, bytes], ...], bytes]:
    """Map an envelope to CloudEvents binary content mode (the Kafka protocol binding, §3.2).

    Args:
        envelope: An envelope (:class:`CloudEvent` subclass or :class:`DeadLetterEnvelope`).

    Returns:
        ``(headers, value)``: ``value`` is ``data`` as JSON — the same bytes the structured
        record has under ``data``; ``headers`` has ``content-type`` (``datacontenttype``) first,
        then ``ce_<attribute>`` for every other attribute that is set, in the envelope's field
        order, each value UTF-8 (integers as decimal digits).

    Raises:
        TypeError: An attribute is neither a string nor an integer (no envelope has one).
    """
    headers: list[tuple[str, bytes]] = []
    for name in envelope.__struct_fields__:
        value = getattr(envelope, name)
        if name == "data" or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"attribute {name} is {type(value).__name__}, not a string or an integer")
        text = value.encode("utf-8") if isinstance(value, str) else str(value).encode("ascii")
        if name == "datacontenttype":
            headers.insert(0, (CONTENT_TYPE_HEADER, text))
        else:
            headers.append((BINARY_HEADER_PREFIX + name, text))
    return tuple(headers), _encoder.encode(envelope.data)


def is_structured(headers: Iterable[tuple[str, bytes]]) -> bool:
    """Tell a structured-mode record from a binary-mode one, as the Kafka binding says (§3).

    Args:
        headers: The record's Kafka headers.

    Returns:
        True when a ``content-type`` header starts with ``application/cloudevents`` (any case);
        False otherwise: binary mode.
    """
    return any(
        name.lower() == CONTENT_TYPE_HEADER and value[:23].lower() == b"application/cloudevents"
        for name, value in headers
    )


def structured_from_binary(headers: Iterable[tuple[str, bytes]], value: bytes) -> bytes:
    """Rebuild the structured JSON of a binary-mode record, to decode it with these models.

    Args:
        headers: The record's Kafka headers: ``ce_<attribute>`` (names in any case), and
            ``content-type`` for ``datacontenttype``; any other header is not an attribute.
        value: The record's value: ``data`` as JSON text (not checked here: decoding the result
            with a model checks it).

    Returns:
        A JSON object: each attribute (an :data:`INTEGER_ATTRIBUTES` one as a number), and
        ``data``, ``value`` itself.

    Raises:
        ValueError: A header value is not UTF-8, or an integer attribute is not decimal digits.
    """
    attributes: dict[str, Any] = {}
    for name, raw in headers:
        lower = name.lower()
        if lower == CONTENT_TYPE_HEADER:
            attributes["datacontenttype"] = raw.decode("utf-8")
        elif lower.startswith(BINARY_HEADER_PREFIX):
            attribute, text = lower[len(BINARY_HEADER_PREFIX) :], raw.decode("utf-8")
            if attribute in INTEGER_ATTRIBUTES:
                if not (text.isascii() and text.isdigit()):
                    raise ValueError(f"header {name} is not an integer")
                attributes[attribute] = int(text)
            else:
                attributes[attribute] = text
    attributes["data"] = msgspec.Raw(value)
    return _encoder.encode(attributes)
