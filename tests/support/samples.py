"""Sample bodies as the platform sends them to the test app: a documented sample
(:mod:`bridge.samples`) with the verification token where its schema keeps it and, when asked,
an event id of its own.

Where they sit (docs/protocol.md §2, §6): schema 2.0 ``header.token`` / ``header.event_id``,
schema 1.0 top-level ``token`` / ``uuid``.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from bridge.samples import sample
from tests.support.credentials import TOKEN

ROOM_CREATED: Final = "vc.room.created_v1"
RESERVE_CONFIG_UPDATED: Final = "vc.reserve_config.updated_v1"
THIRD_PARTY_CREATED: Final = "third_party_meeting_room_event_created"


def fresh_id() -> str:
    """An event id no other test uses."""
    return uuid.uuid4().hex


def with_token(body: dict[str, Any], token: str | None = TOKEN, *, event_id: str | None = None) -> dict[str, Any]:
    """Put ``token`` where ``body``'s schema keeps it (``None`` removes it) and, when given,
    ``event_id`` as its event id. Changes ``body`` in place and returns it."""
    target = body.get("header", body)
    if token is None:
        target.pop("token", None)
    else:
        target["token"] = token
    if event_id is not None:
        target["event_id" if target is not body else "uuid"] = event_id
    return body


def sample_event(kind: str = ROOM_CREATED, *, token: str | None = TOKEN, event_id: str | None = None) -> dict[str, Any]:
    """A fresh copy of the documented sample of ``kind`` carrying ``token`` (``None``: no token)
    and ``event_id`` (``None``: the sample's own; :func:`fresh_id` for a new one)."""
    return with_token(sample(kind), token, event_id=event_id)
