"""The platform's documented sample bodies (docs/protocol.md §9), as package data.

Used by the demo, the benchmark, the schema examples and the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLES_DIR = Path(__file__).parent
SAMPLE_TYPES = (
    "vc.room.created_v1",
    "vc.reserve_config.updated_v1",
    "third_party_meeting_room_event_created",
    "vc.room.updated_v1",
    "vc.room.deleted_v1",
    "vc.room_level.created_v1",
    "vc.room_level.updated_v1",
    "vc.room_level.deleted_v1",
)


def sample_bytes(lark_type: str) -> bytes:
    """The documented sample body of ``lark_type`` (one of :data:`SAMPLE_TYPES`), as stored."""
    return (SAMPLES_DIR / f"{lark_type}.json").read_bytes()


def sample(lark_type: str) -> dict[str, Any]:
    """The documented sample body of ``lark_type`` as a fresh dict."""
    result: dict[str, Any] = json.loads(sample_bytes(lark_type))
    return result
