"""Normalize stage: a :class:`~bridge.decode.DecodedEvent` → Kafka records carrying envelope v1,
or an inbound event that failed to decode → its one dead-letter record.

Pure functions. One record per event, except the third-party room events, which fan out to one
record per room so that each room's history stays ordered in its own partition (docs/envelope.md,
"Topics and keys").
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import msgspec
from msgspec.structs import replace

from bridge import envelope as ev
from bridge.decode import DecodedEvent, TooDeep, redact_tokens
from bridge.errors import DeadLetterCause
from bridge.inbound import InboundEvent, UnreadableJSON, read_json

if TYPE_CHECKING:
    from bridge.settings import Settings

_CONTENT_TYPE_HEADER: Final = ("content-type", ev.CONTENT_TYPE.encode("ascii"))


def _headers(event_id: str | None) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers of a structured record: content type, and the event id when known."""
    if event_id is None:
        return (_CONTENT_TYPE_HEADER,)
    return (_CONTENT_TYPE_HEADER, (ev.EVENT_ID_HEADER, event_id.encode("utf-8")))


def _encoded(
    envelope: ev.CloudEvent[Any] | ev.DeadLetterEnvelope, binary: bool, event_id: str | None
) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    """A record's value and headers in its topic's content mode: structured, the envelope and
    :func:`_headers`; binary (:func:`bridge.envelope.to_binary`), ``data`` and the attribute
    headers, then the bridge's own headers as in structured mode."""
    if not binary:
        return _encoder.encode(envelope), _headers(event_id)
    attributes, value = ev.to_binary(envelope)
    own = () if event_id is None else ((ev.EVENT_ID_HEADER, event_id.encode("utf-8")),)
    return value, (*attributes, *own)


#: A third-party event's records carry its whole ``meeting_rooms`` list while it lists at most
#: this many rooms; beyond it each record carries only its own ``meeting_room``, so a record's
#: size does not grow with the number of rooms (the siblings share ``larkeventid``).
MAX_LISTED_ROOMS: Final = 50
#: Most records one third-party event fans out to (distinct rooms); more is an ``invalid_event``.
MAX_FANOUT_ROOMS: Final = 1000
_encoder: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to publish.

    Attributes:
        topic: The topic it goes to.
        key: The record key, UTF-8 bytes; None for an unkeyed record (a dead letter without a
            event id).
        value: The envelope, JSON bytes (CloudEvents 1.0 structured mode; docs/envelope.md), or
            on a topic in binary mode (:attr:`Topics.binary`) its ``data`` alone.
        headers: The Kafka headers, ``(name, value bytes)`` pairs: ``content-type`` (binary
            mode: the ``datacontenttype``, then a ``ce_<attribute>`` header per attribute), and
            :data:`bridge.envelope.EVENT_ID_HEADER` when the event id is known (plus
            :data:`bridge.envelope.RECORD_PART_HEADER` when the event has several records).
        lark_type: The Lark type, for logs and metrics (``"unknown"`` on a dead letter of an
            event without one).
        event_id: The event id, for logs and metrics (a dead letter's is the event's dedup
            key); None when unknown.
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    lark_type: str
    event_id: str | None


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic map: topic names by Lark type, and the dead-letter topic (``BRIDGE_TOPIC_*``).

    Build it with :meth:`from_settings` (the one place the settings become a map) or, in tests,
    :meth:`from_names`. Topics and keys: docs/envelope.md.

    Attributes:
        by_type: ``{Lark type: topic name}``; the three third-party kinds map to one topic.
        dead_letter: The dead-letter topic's name.
        binary: The topics whose records are in CloudEvents binary content mode
            (``BRIDGE_CLOUDEVENTS_MODE`` and its overrides); the others are structured. Default:
            none.
    """

    by_type: Mapping[str, str]
    dead_letter: str
    binary: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        """Build the map the ``BRIDGE_TOPIC_*`` settings configure.

        Args:
            settings: The bridge's settings.

        Returns:
            The topic map, with each topic's content mode.
        """
        modes = settings.cloudevents_modes()
        return cls.from_names(
            binary=[topic for topic, mode in modes.items() if mode == "binary"],
            room_created=settings.topic_room_created,
            room_updated=settings.topic_room_updated,
            room_deleted=settings.topic_room_deleted,
            room_level_created=settings.topic_room_level_created,
            room_level_updated=settings.topic_room_level_updated,
            room_level_deleted=settings.topic_room_level_deleted,
            reserve_config_updated=settings.topic_reserve_config_updated,
            third_party=settings.topic_third_party_meeting_room_event,
            dead_letter=settings.topic_dead_letter,
        )

    @classmethod
    def from_names(
        cls,
        *,
        room_created: str,
        room_updated: str,
        room_deleted: str,
        room_level_created: str,
        room_level_updated: str,
        room_level_deleted: str,
        reserve_config_updated: str,
        third_party: str,
        dead_letter: str,
        binary: Iterable[str] = (),
    ) -> Topics:
        """Build the map from the nine configured names.

        Args:
            room_created: The topic of ``vc.room.created_v1`` events.
            room_updated: The topic of ``vc.room.updated_v1`` events.
            room_deleted: The topic of ``vc.room.deleted_v1`` events.
            room_level_created: The topic of ``vc.room_level.created_v1`` events.
            room_level_updated: The topic of ``vc.room_level.updated_v1`` events.
            room_level_deleted: The topic of ``vc.room_level.deleted_v1`` events.
            reserve_config_updated: The topic of ``vc.reserve_config.updated_v1`` events.
            third_party: The one topic all three third-party kinds share.
            dead_letter: The dead-letter topic.
            binary: The topics in CloudEvents binary content mode. Default: none (all
                structured).

        Returns:
            The topic map.
        """
        by_type = {
            ev.ROOM_CREATED: room_created,
            ev.ROOM_UPDATED: room_updated,
            ev.ROOM_DELETED: room_deleted,
            ev.ROOM_LEVEL_CREATED: room_level_created,
            ev.ROOM_LEVEL_UPDATED: room_level_updated,
            ev.ROOM_LEVEL_DELETED: room_level_deleted,
            ev.RESERVE_CONFIG_UPDATED: reserve_config_updated,
        }
        by_type.update(dict.fromkeys(ev.THIRD_PARTY_TYPES, third_party))
        return cls(by_type=by_type, dead_letter=dead_letter, binary=frozenset(binary))

    @classmethod
    def single(cls, events: str, *, dead_letter: str) -> Topics:
        """A map that sends every event kind to ``events`` and dead letters to ``dead_letter`` (all
        structured): for checks that look at records, not at where they go (the samples' check of
        :mod:`bridge.schemas`, tests)."""
        return cls(by_type=dict.fromkeys(ev.LARK_TYPES, events), dead_letter=dead_letter)

    def all(self) -> tuple[str, ...]:
        """List every distinct topic name.

        Returns:
            The names, sorted, the dead-letter topic included.
        """
        return tuple(sorted({*self.by_type.values(), self.dead_letter}))

    def one_kind_per_topic(self) -> bool:
        """Tell whether each topic carries one kind of record: what one schema per topic needs.

        Returns:
            True when no topic carries two kinds of event (the three third-party changes are one
            kind), nor events and dead letters.
        """
        kinds: dict[str, set[str]] = {}
        for lark_type, topic in self.by_type.items():
            kinds.setdefault(topic, set()).add("third_party" if lark_type in ev.THIRD_PARTY_TYPES else lark_type)
        return self.dead_letter not in kinds and all(len(k) == 1 for k in kinds.values())


def rfc3339_ms(ms: int) -> str:
    """Format unix milliseconds as an RFC 3339 timestamp.

    Args:
        ms: The time, unix milliseconds.

    Returns:
        ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC).
    """
    secs, frac = divmod(ms, 1000)
    return f"{_rfc3339_second(secs)}.{frac:03d}Z"


@functools.lru_cache(maxsize=64)
def _rfc3339_second(secs: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of unix second ``secs``: events of the same second share it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))


@functools.lru_cache(maxsize=1024)
def _source(app_id: str, tenant_key: str) -> str:
    """CloudEvents ``source`` (a URI-reference): ``/lark/apps/{app_id}/tenants/{tenant_key}``, each
    id percent-encoded (RFC 3986 unreserved characters kept), so that Lark's ids (``cli_…``, hex)
    appear verbatim and a hostile one (``/``, spaces, control characters) cannot reshape the URI.
    The 1,024 most recent pairs are kept (a bridge serves a few apps and tenants)."""
    return f"/lark/apps/{quote(app_id, safe='')}/tenants/{quote(tenant_key, safe='')}"


def normalize(event: DecodedEvent, topics: Topics) -> list[Record]:
    """Build the envelope v1 records of one event, in the order they must be published.

    When there is more than one, record ``i`` of ``n`` carries the Kafka header
    ``lark_record_part: i/n`` (:data:`bridge.envelope.RECORD_PART_HEADER`); the order is a
    function of the event alone, so a redelivery gives the same records at the same indices.

    Keys: ``room.room_id`` (room created, updated, deleted), ``room_level.room_level_id`` (room
    level created, updated), ``room_level_id`` (room level deleted), ``scope_id`` (reserve
    config), each
    ``meeting_rooms[i].open_id`` (third-party; a room listed twice gives one record; the list
    itself is carried only up to :data:`MAX_LISTED_ROOMS` rooms), or ``uid`` when no room is
    listed. Source: docs/envelope.md ("Topics and keys", "Envelope v1"; CloudEvents 1.0).

    Args:
        event: The decoded event.
        topics: The topic map.

    Returns:
        The records: one, or one per distinct room of a third-party event.

    Raises:
        DeadLetterCause: ``invalid_event`` for a third-party event listing more than
            :data:`MAX_FANOUT_ROOMS` distinct rooms.
    """
    data = event.data
    topic = topics.by_type[event.lark_type]
    common: dict[str, Any] = {
        "specversion": "1.0",
        "source": _source(event.app_id, event.tenant_key),
        "type": event.lark_type,
        "time": rfc3339_ms(event.time_ms),
        "datacontenttype": ev.DATA_CONTENT_TYPE,
        "dataschema": ev.dataschema_id(event.lark_type),
        "larkeventid": event.event_id,
        "tenantkey": event.tenant_key,
        "appid": event.app_id,
        "envelopeversion": ev.ENVELOPE_VERSION,
    }
    if isinstance(data, ev.RoomCreatedData | ev.RoomUpdatedData | ev.RoomDeletedData):
        keyed: list[tuple[str, str, Any]] = [(event.event_id, data.room.room_id, data)]
    elif isinstance(data, ev.RoomLevelCreatedData | ev.RoomLevelUpdatedData):
        keyed = [(event.event_id, data.room_level.room_level_id, data)]
    elif isinstance(data, ev.RoomLevelDeletedData):
        keyed = [(event.event_id, data.room_level_id, data)]
    elif isinstance(data, ev.ReserveConfigUpdatedData):
        keyed = [(event.event_id, data.scope_id, data)]
    elif data.meeting_rooms:
        rooms = list(dict.fromkeys(room.open_id for room in data.meeting_rooms))  # distinct, in order
        if len(rooms) > MAX_FANOUT_ROOMS:
            raise DeadLetterCause(
                "invalid_event",
                f"lists {len(rooms)} distinct meeting rooms; the bridge fans out to at most {MAX_FANOUT_ROOMS}",
                "$.event.meeting_rooms",
            )
        listed = data if len(data.meeting_rooms) <= MAX_LISTED_ROOMS else replace(data, meeting_rooms=None)
        keyed = [
            (f"{event.event_id}:{room}", room, replace(listed, meeting_room=ev.MeetingRoom(open_id=room)))
            for room in rooms
        ]
    else:
        keyed = [(event.event_id, data.uid, data)]
    envelope_type = ev.ENVELOPE_TYPES[event.lark_type]
    binary = topic in topics.binary
    count = len(keyed)
    records = []
    for index, (record_id, key, record_data) in enumerate(keyed):
        envelope = envelope_type(id=record_id, subject=key, partitionkey=key, data=record_data, **common)
        value, headers = _encoded(envelope, binary, event.event_id)
        records.append(
            Record(
                topic=topic,
                key=key.encode("utf-8"),
                value=value,
                headers=headers if count == 1 else (*headers, ev.part_header(index, count)),
                lark_type=event.lark_type,
                event_id=event.event_id,
            )
        )
    return records


def dead_letter(
    inbound: InboundEvent, failure: DeadLetterCause, *, received_ms: int, topics: Topics, carry_payload: bool = True
) -> Record:
    """Build the dead-letter record of an authenticated event that failed to decode.

    Its payload is carried with every token field redacted; a payload that cannot be read back
    (invalid UTF-8 in a field the top level skipped, nesting past ``decode.MAX_DEPTH``), or one
    the caller says not to carry, is not carried at all — ``error`` then gives its size and
    SHA-256. Type, event id, app and tenant come from the inbound event where it has them.
    Raises nothing. Dead letters: docs/operations.md; the envelope: docs/envelope.md.

    Args:
        inbound: The authenticated event.
        failure: Why it becomes a dead letter (reason, error, path).
        received_ms: When it was received, unix ms (the envelope's ``time`` and ``received_at``).
        topics: The topic map (its ``dead_letter`` topic).
        carry_payload: ``False`` when the payload would not fit in a record. Default ``True``.

    Returns:
        One record, keyed by the event id when known, else unkeyed. Its ``id`` and its
        ``lark_event_id`` header are the event's dedup key (the event id, or
        ``sha256:<hex>`` of the payload: :meth:`InboundEvent.dedup_key`).
    """
    payload = inbound.payload
    event_id = inbound.event_id
    error = failure.error
    body: dict[str, Any] = {}
    why = "too large for a record"
    if carry_payload:
        try:
            body = redact_tokens(read_json(payload))
        except (UnreadableJSON, TooDeep) as exc:  # carried neither whole nor in part (tokens)
            why = str(exc)
        else:
            why = ""
    if why:
        error += f"; payload not carried ({why}): {len(payload)} bytes, sha256 {hashlib.sha256(payload).hexdigest()}"
    record_id = inbound.dedup_key()
    source = _source(inbound.app_id, inbound.tenant_key) if inbound.app_id and inbound.tenant_key else "/lark-bridge"
    envelope = ev.DeadLetterEnvelope(
        specversion="1.0",
        id=record_id,
        source=source,
        type=ev.DEAD_LETTER_TYPE,
        time=rfc3339_ms(received_ms),
        datacontenttype=ev.DATA_CONTENT_TYPE,
        dataschema=ev.dead_letter_schema_id(),
        envelopeversion=ev.ENVELOPE_VERSION,
        subject=event_id,
        partitionkey=event_id,
        larkeventid=event_id,
        tenantkey=inbound.tenant_key,
        appid=inbound.app_id,
        data=ev.DeadLetterData(
            reason=failure.reason,
            error=error,
            path=failure.path,
            lark_type=inbound.lark_type,
            lark_event_id=event_id,
            received_at=rfc3339_ms(received_ms),
            payload=body,
        ),
    )
    value, headers = _encoded(envelope, topics.dead_letter in topics.binary, record_id)
    return Record(
        topic=topics.dead_letter,
        key=event_id.encode("utf-8") if event_id else None,
        value=value,
        headers=headers,
        lark_type=inbound.lark_type or "unknown",
        event_id=record_id,
    )
