"""The topic map unit tests share: one topic per kind, ``t.<kind>`` (the third-party kinds share
``t.3p``), dead letters to ``t.dlq``."""

from __future__ import annotations

from typing import Final

from bridge.normalize import Topics

#: ``Topics.from_names`` keyword arguments of :data:`TOPICS`.
NAMES: Final = {
    "room_created": "t.room",
    "room_updated": "t.room_updated",
    "room_deleted": "t.room_deleted",
    "room_level_created": "t.level_created",
    "room_level_updated": "t.level_updated",
    "room_level_deleted": "t.level_deleted",
    "reserve_config_updated": "t.cfg",
    "third_party": "t.3p",
    "dead_letter": "t.dlq",
}
#: Every kind structured.
TOPICS: Final = Topics.from_names(**NAMES)
