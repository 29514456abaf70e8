"""Platform-exact benchmark traffic: the three documented event kinds over 1,000 rooms.

Every request is built by :class:`bridge_devtools.platform.Platform` (compact JSON, AES-256-CBC
encrypted, signed with a fresh ``X-Lark-Request-Timestamp``) from the documented samples in
``bridge.samples``, with

* the verification token set (``header.token`` / ``token``);
* a unique event id (``header.event_id`` for 2.0, ``uuid`` for 1.0) that encodes the run, the
  step and the index (:func:`parse_event_id`), so the broker-side check can map every record
  back to the load step that sent it;
* room ids drawn from 1,000 rooms (``event.room.room_id``, ``event.scope_id``,
  ``event.meeting_rooms[].open_id``; a third-party event lists 1-3 distinct rooms, so it fans out
  to 1-3 records).

Mix (:data:`MIX`): room bookings (third-party meeting-room events) dominate real traffic; room
creations and reservation-config changes are rarer.

Output formats: raw HTTP/1.1 requests for ``benchmarks/loadgen`` (:meth:`TrafficBuilder.step_raw`)
and vegeta's JSON targets (:meth:`TrafficBuilder.step`, used for the cross-check).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import struct
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from bridge.samples import sample
from bridge_devtools.platform import Platform, PlatformRequest

ROOMS: Final = tuple("omm_" + hashlib.md5(f"room-{i}".encode()).hexdigest() for i in range(1000))
#: (kind, weight): 60 % bookings (fan out to 1-3 records), 25 % reserve-config updates, 15 % room creations.
MIX: Final = (
    ("third_party_meeting_room_event_created", 60),
    ("vc.reserve_config.updated_v1", 25),
    ("vc.room.created_v1", 15),
)
KINDS: Final = tuple(k for k, _ in MIX)
_WEIGHTS: Final = tuple(w for _, w in MIX)


def event_id(run: str, step: int, index: int) -> str:
    """A 32-hex-digit event id: 8 run, 4 step, 8 index, 12 random (like the platform's)."""
    return f"{run}{step:04x}{index:08x}{random.getrandbits(48):012x}"


def parse_event_id(value: str) -> tuple[str, int, int] | None:
    """``(run, step, index)`` of an id made by :func:`event_id`, else None."""
    if len(value) != 32:
        return None
    try:
        return value[:8], int(value[8:12], 16), int(value[12:20], 16)
    except ValueError:
        return None


@dataclass(slots=True)
class StepTraffic:
    """What one load step sends: the vegeta target lines and what Kafka should hold after."""

    lines: list[bytes]
    records: list[int]  # per target: records the bridge publishes for it (third-party fan-out)
    kinds: list[str]  # per target: its event kind


class TrafficBuilder:
    """Builds unique, signed, encrypted requests for ``url`` (token/key of the services)."""

    def __init__(self, url: str, token: str, encrypt_key: str, run: str, *, seed: int = 7) -> None:
        self._url = url
        self._token = token
        self._platform = Platform(encrypt_key=encrypt_key)
        self._run = run
        self._rng = random.Random(seed)
        self._templates = {k: sample(k) for k in KINDS}

    def payload(self, kind: str, event_id: str, now_ms: int) -> tuple[dict[str, Any], int]:
        """One event of ``kind`` with event id ``event_id``; returns (payload, records)."""
        body = copy.deepcopy(self._templates[kind])
        rng = self._rng
        if kind == "third_party_meeting_room_event_created":
            body["token"] = self._token
            body["uuid"] = event_id
            body["ts"] = f"{now_ms / 1000:.7f}"
            ev = body["event"]
            ev["event_id"] = event_id
            ev["event_time"] = str(now_ms)
            ev["uid"] = f"sched-{rng.getrandbits(64):016x}"
            start = (now_ms // 1_800_000 + rng.randint(1, 96)) * 1_800_000
            ev["start"]["time_stamp"] = str(start)
            ev["end"]["time_stamp"] = str(start + rng.choice((1, 2, 4)) * 1_800_000)
            rooms = rng.sample(ROOMS, rng.randint(1, 3))
            ev["meeting_rooms"] = [{"open_id": r} for r in rooms]
            return body, len(rooms)
        body["header"]["token"] = self._token
        body["header"]["event_id"] = event_id
        body["header"]["create_time"] = str(now_ms)
        room = rng.choice(ROOMS)
        if kind == "vc.room.created_v1":
            body["event"]["room"]["room_id"] = room
            body["event"]["room"]["custom_room_id"] = room[-6:]
        else:
            body["event"]["scope_id"] = room
            body["event"]["scope_type"] = 2
        return body, 1

    def requests(self, step: int, count: int) -> tuple[list[PlatformRequest], list[int], list[str]]:
        """``count`` requests for load step ``step`` (timestamps taken now: fresh signatures);
        returns (requests, records each fans out to, kind of each)."""
        reqs: list[PlatformRequest] = []
        records: list[int] = []
        now_ms = int(time.time() * 1000)
        chosen = self._rng.choices(KINDS, weights=_WEIGHTS, k=count)
        for i, kind in enumerate(chosen):
            payload, n = self.payload(kind, event_id(self._run, step, i), now_ms)
            records.append(n)
            reqs.append(self._platform.request(payload))
        return reqs, records, chosen

    def step(self, step: int, count: int) -> StepTraffic:
        """vegeta JSON targets (one line each, body base64) for ``count`` requests."""
        reqs, records, kinds = self.requests(step, count)
        lines = [
            json.dumps(
                {
                    "method": "POST",
                    "url": self._url,
                    "body": base64.b64encode(r.body).decode("ascii"),
                    "header": {k: [v] for k, v in r.headers.items()},
                },
                separators=(",", ":"),
            ).encode("ascii")
            for r in reqs
        ]
        return StepTraffic(lines, records, kinds)

    def step_raw(self, step: int, count: int) -> tuple[bytes, list[int]]:
        """``benchmarks/loadgen`` input for ``count`` requests: each a 4-byte big-endian length and
        the raw HTTP/1.1 request; returns (file content, records each request fans out to)."""
        reqs, records, _ = self.requests(step, count)
        split = urlsplit(self._url)
        head = f"POST {split.path} HTTP/1.1\r\nHost: {split.netloc}\r\nUser-Agent: bench-loadgen\r\n".encode("ascii")
        out = bytearray()
        for r in reqs:
            raw = head + "".join(f"{k}: {v}\r\n" for k, v in r.headers.items()).encode("ascii")
            raw += b"Content-Length: %d\r\n\r\n" % len(r.body) + r.body
            out += struct.pack(">I", len(raw)) + raw
        return bytes(out), records
