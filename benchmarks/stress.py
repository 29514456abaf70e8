"""``python -m benchmarks.stress``: a bounded hostile-traffic stress run against a real bridge process.

Starts the local Kafka broker (``bridge_devtools.broker.LocalBroker``) and ``python -m bridge serve``
(encrypt key, ``BRIDGE_LOG_LEVEL=WARNING``, its stdout+stderr captured to a file), pinned like
``benchmarks.run`` when the machine has two cores (the bridge on core 0; this runner, its client
traffic and the broker on core 1), then runs six phases, each bounded in count and time:

1. baseline: the bridge's RSS (``VmRSS``), /metrics series, open fds, p50/p99 of sequential valid
   events — after a warm-up (60,000 records produced to the broker as ``benchmarks.run`` does, then
   3,000 valid events at 500/s through the bridge) and a wait for the rest of the machine to go quiet;
2. mixed flood: N requests open-loop at R/s (aiohttp client, a fresh task per request at its due
   time, capped in-flight count) mixing valid events, duplicates and hostile input
   (:data:`CATEGORIES`); statuses per category; any 500 is a finding;
3. slow clients: raw sockets trickling headers one byte per second, or sending headers with a
   ~1 MiB Content-Length and stalling mid-body; normal events' latency, RSS and fds while they are
   open; which connections the bridge closes and when; RSS after;
4. broker frozen: SIGSTOP of the broker JVM while valid events arrive; every answer within 3 s;
   SIGCONT, recovery, and the platform's retry of those events;
5. broker-side check: every record of the bridge's topics matched to the event ids answered 200
   (CloudEvents ``larkeventid``; a dead letter of an authentic event without a readable event id by
   ``sha256:`` of the plaintext sent, its ``id`` and ``lark_event_id`` header), fan-out counts, no
   duplicate records;
6. end: /metrics series, RSS, fds, log volume, SIGTERM and exit code, broker stopped.

Traffic goes only to 127.0.0.1. Prints a table and, for a full run (not ``--quick``, not
``--no-write``), writes it into BENCHMARKS.md between the ``stress`` markers (appended at the end of
the file the first time). Requests answered 500 are saved to the work dir (printed at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import os
import platform as pyplatform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgspec

from benchmarks import tools
from benchmarks.run import BRIDGE_TOPICS, BROKER_JVM_OPTS
from benchmarks.traffic import KINDS, ROOMS, TrafficBuilder, event_id
from bridge.verify import HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign
from bridge_devtools.platform import Platform, compact

TOKEN: Final = "stress-verification-token"
KEY: Final = "stress-encrypt-key"
PATH: Final = "/webhook/event"
MAX_BODY: Final = 1_048_576  # BRIDGE_HTTP_MAX_BODY_BYTES (default)
SERVICE_CORE: Final = 0
LOAD_CORE: Final = 1
DEAD_LETTER_TOPIC: Final = "lark.bridge.dead_letter"
LARK_EVENT_ID_HEADER: Final = "lark_event_id"  # a record's Kafka header: its event id (dead letter: its key)
BENCHMARKS_MD: Final = tools.REPO / "BENCHMARKS.md"
TITLE: Final = "## Hostile-input stress (python -m benchmarks.stress)"
BEGIN: Final = "<!-- stress:begin (written by python -m benchmarks.stress; edits here are overwritten) -->"
END: Final = "<!-- stress:end -->"
#: Targets (from the issue) checked by the slow-client and frozen-broker phases.
LATENCY_DELTA_TARGET_MS: Final = 50.0
RSS_DELTA_TARGET: Final = 64 * 1000 * 1000
FROZEN_ANSWER_TARGET_S: Final = 3.0
SLOW_CLOSE_TARGET_S: Final = 30.0
#: What hostile strings carry: every C0 control, DEL, NEL, the line/paragraph separators, a BOM,
#: a quote, a backslash, an ANSI escape and a closing script tag.
CTRL: Final = "".join(chr(c) for c in range(32)) + '\x7f\x85\u2028\u2029\ufeff"\\\x1b[31m</script>'
#: Bytes the authenticated plaintext mutations draw from (80 %; else any byte): JSON punctuation and
#: literals keep a share of the mutants parseable, so they reach decode and the dead letter.
JSON_ALPHABET: Final = b'{}[]:,"\\0123456789-.eE+truefalsn xyz\x00\x1f\x7f\xc3\xff'
#: Values a field gets in ``mutated_tree``.
HOSTILE_VALUES: Final[tuple[Any, ...]] = (
    None,
    True,
    -1,
    0,
    2**63,
    10**40,
    -(2**64),
    1.5e308,
    "",
    "x" * 10_000,
    CTRL,
    [],
    {},
    [1, [2, [3]]],
    {"a": {"b": {"c": {}}}},
    "1e999",
    "-0",
    "99999999999999999999999",
    "NaN",
)
_OK: Final = frozenset({200})
_REJECT: Final = frozenset({400, 401})
_AUTH: Final = frozenset({200, 401})


@dataclass(frozen=True)
class Category:
    name: str
    weight: int  # share of the flood, percent
    what: str


CATEGORIES: Final = (
    Category("valid", 40, "valid event: one of the 3 sample kinds (uniform), fresh event id, encrypted + signed"),
    Category(
        "duplicate", 10, "exact re-send of an earlier valid request (70 %: ≥ 50 requests old; 30 %: of the last 3)"
    ),
    Category("mutated_body", 10, "valid encrypted request, 1-8 random bit flips / byte inserts / deletes of the body"),
    Category(
        "mutated_plaintext", 10, "plaintext byte-mutated (1-3 ops, JSON-ish bytes), then encrypted + signed (authentic)"
    ),
    Category(
        "mutated_tree",
        8,
        "1-3 payload fields deleted / wrapped / set to hostile values (huge ints, 10 KB strings, controls, 60 or "
        "1,001 rooms), then encrypted + signed",
    ),
    Category(
        "nested",
        4,
        "5,000-deep nesting: unsigned array body; signed body whose `encrypt` is a 5,000-deep object; signed + "
        "encrypted events whose `event` nests 5,000 or 200 deep",
    ),
    Category(
        "invalid_utf8",
        4,
        "invalid UTF-8 inside `encrypt` (unsigned); a signed outer body with invalid UTF-8; signed + encrypted "
        "plaintext with invalid UTF-8 bytes or lone-surrogate escapes in tenant_key and the room id",
    ),
    Category("gzip", 3, "valid event compressed, Content-Encoding gzip / deflate / br / GZIP"),
    Category("oversize", 1, "body of 1 MiB + 1 KiB (limit 1 MiB), with Content-Length or chunked"),
    Category(
        "unknown_type_50kb",
        2,
        "signed + encrypted, ≈50 KB event type with a newline and an ANSI escape, control characters in tenant_key",
    ),
    Category("ctrl_tenant", 5, "valid kind, control characters (C0, DEL, U+2028, BOM, ANSI) in tenant_key and app_id"),
    Category("huge_id", 3, "valid kind, a 20 KB event id with control characters"),
)
CATEGORY_NAMES: Final = tuple(c.name for c in CATEGORIES)


# ------------------------------------------------------------------------------------------------
# Requests
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Req:
    """What goes on the wire: ``body`` (sent chunked, without Content-Length, when ``chunked``)."""

    body: bytes
    headers: dict[str, str]
    chunked: bool = False
    key: str | None = None  # encrypted by us: ``plaintext_key`` of the plaintext


@dataclass(slots=True)
class Sent:
    """One request and its answer. ``did``: the event id the bridge will read (None: none or not
    known); ``key``: of an authentic request, ``plaintext_key`` of its plaintext — the id of its dead
    letter when the bridge reads no event id from it (unreadable, or a malformed top level);
    ``fanout``: records expected on the event topics when answered 200 (0 = one dead letter; None =
    either); ``bad_token``: its plaintext carries a verification token other than ours (a 401
    ``token_mismatch`` is right); times are the event loop's clock."""

    cat: str
    variant: str
    expected: frozenset[int]
    did: str | None = None
    fanout: int | None = None
    note: str = ""
    req_id: str = ""
    status: int = 0  # HTTP status; -1 = client-side error (``error``); 0 = not sent
    error: str = ""
    due: float = 0.0
    fired: float = 0.0
    wrote: float = 0.0  # the request's headers were written (it had a connection)
    done: float = 0.0
    authentic: bool = False  # correctly signed and encrypted: the bridge should take it (records, dead letter)
    key: str | None = None
    bad_token: bool = False

    @property
    def service_ms(self) -> float:
        return (self.done - self.fired) * 1000

    @property
    def due_ms(self) -> float:
        return (self.done - self.due) * 1000

    @property
    def wire_ms(self) -> float:
        """From the write of the headers (a connection held) to the whole answer."""
        return (self.done - self.wrote) * 1000 if self.wrote else float("nan")


def mutate(data: bytes, rng: random.Random, n: int, alphabet: bytes | None) -> tuple[bytes, str]:
    """``data`` with ``n`` random ops (bit flip or byte replace, insert, delete); returns (bytes, ops)."""
    buf = bytearray(data)
    ops = []

    def byte() -> int:
        return rng.choice(alphabet) if alphabet is not None and rng.random() < 0.8 else rng.randrange(256)

    for _ in range(n):
        op = rng.choice(("flip", "insert", "delete")) if buf else "insert"
        if op == "insert":
            pos = rng.randrange(len(buf) + 1)
            buf.insert(pos, byte())
        elif op == "flip":
            pos = rng.randrange(len(buf))
            buf[pos] = byte() if alphabet is not None else buf[pos] ^ (1 << rng.randrange(8))
        else:
            pos = rng.randrange(len(buf))
            del buf[pos]
        ops.append(f"{op}@{pos}")
    return bytes(buf), ",".join(ops)


def plaintext_key(plain: bytes) -> str:
    """The bridge's dedup key of an authentic event without an event id (bridge/inbound.py
    ``InboundEvent.dedup_key``): ``sha256:`` and the hex SHA-256 of the decrypted plaintext — its
    dead letter's ``id`` and ``lark_event_id`` header."""
    return "sha256:" + hashlib.sha256(plain).hexdigest()


def read_plaintext(plain: bytes) -> Any:
    """``plain`` as JSON, read more leniently than the bridge's top level (invalid UTF-8 and raw
    control characters pass: the bridge leaves ``event`` unread), so that what the bridge reads is
    read alike here (event id, token); None when not JSON even so. What only this reads, the
    bridge dead-letters under ``plaintext_key``."""
    try:
        return json.loads(plain.decode("utf-8", "surrogateescape"), strict=False)
    except ValueError:
        return None


def token_of(payload: Any) -> Any:
    """The verification token the bridge checks in a plaintext payload (bridge/inbound.py
    ``Outer.verification_token``): schema 2.0 ``header.token``, else the top-level ``token``; None
    when absent."""
    if not isinstance(payload, dict):
        return None
    if payload.get("schema") is not None:
        header = payload.get("header")
        return header.get("token") if isinstance(header, dict) else None
    return payload.get("token")


def wrong_token(payload: Any) -> bool:
    """A present verification token that is not ours: answered 401 ``token_mismatch`` (deliberately)."""
    token = token_of(payload)
    return token is not None and token != TOKEN


def event_id_of(payload: Any) -> str | None:
    """The event id the bridge reads from a plaintext payload (bridge/inbound.py rules)."""
    if not isinstance(payload, dict):
        return None
    if payload.get("schema") is not None:
        header = payload.get("header")
        value = header.get("event_id") if isinstance(header, dict) else None
    elif payload.get("type") == "event_callback" or payload.get("uuid") is not None:
        value = payload.get("uuid")
    else:
        return None
    return value if isinstance(value, str) and value else None


def _walk(value: Any, path: str, depth: int, slots: list[tuple[Any, Any, str]]) -> None:
    """Every (container, key, JSON path) under ``value`` (at most ~500, 12 levels)."""
    if depth > 12 or len(slots) > 500:
        return
    if isinstance(value, dict):
        for k in list(value):
            slots.append((value, k, f"{path}.{k}"))
            _walk(value[k], f"{path}.{k}", depth + 1, slots)
    elif isinstance(value, list):
        for j in range(len(value)):
            slots.append((value, j, f"{path}[{j}]"))
            _walk(value[j], f"{path}[{j}]", depth + 1, slots)


def tree_mutate(doc: dict[str, Any], rng: random.Random, n: int) -> str:
    """Apply ``n`` structural mutations to ``doc`` in place; returns what was done. The event id
    is never set to another non-empty string (ids stay unique), only removed or retyped."""
    notes = []
    for _ in range(n):
        slots: list[tuple[Any, Any, str]] = []
        _walk(doc, "$", 0, slots)
        if not slots:
            break
        container, key, path = rng.choice(slots)
        op = rng.choice(("delete", "replace", "replace", "wrap", "many_rooms"))
        event = doc.get("event")
        if op == "many_rooms":
            if isinstance(event, dict) and "meeting_rooms" in event:
                k = rng.choice((60, 1001))
                rooms = [*ROOMS, "omm_extra_room"][:k]
                event["meeting_rooms"] = [{"open_id": r} for r in rooms]
                notes.append(f"meeting_rooms×{k}")
                continue
            op = "replace"
        is_id = path in ("$.header.event_id", "$.uuid")
        if op == "delete":
            if isinstance(container, list):
                container.pop(key)
            else:
                del container[key]
        elif op == "wrap":
            container[key] = [container[key]]
        else:
            value = rng.choice(HOSTILE_VALUES)
            if is_id and isinstance(value, str) and value:
                value = None
            container[key] = value
            op = f"replace({type(value).__name__}{len(value) if isinstance(value, str | list | dict) else ''})"
        notes.append(f"{op} {path}")
    return "; ".join(notes)


def nest(depth: int, rng: random.Random) -> bytes:
    """A JSON value nested ``depth`` levels (objects or arrays)."""
    if rng.random() < 0.5:
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"1" + b"]" * depth


def signed_headers(body: bytes) -> dict[str, str]:
    """The platform's three signature headers over ``body`` (any bytes) with the right key."""
    ts = str(int(time.time()))
    nonce = str(secrets.randbelow(10**10))
    return {
        "Content-Type": "application/json; charset=utf-8",
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(ts, nonce, KEY, body),
    }


class Factory:
    """Builds the requests of each category (fresh event ids from run tag, category, counter)."""

    def __init__(self, run: str, seed: int, nest_depth: int) -> None:
        self.run = run
        self.rng = random.Random(seed)
        self.platform = Platform(encrypt_key=KEY)
        self.tb = TrafficBuilder("http://127.0.0.1/", TOKEN, KEY, run, seed=seed + 1)
        self.n = 0
        self.nest_depth = nest_depth
        self.pool: list[tuple[Req, Sent]] = []  # valid requests built so far (the duplicates' source)
        self.oversize = b'{"encrypt":"' + b"A" * (MAX_BODY + 1024 - 14) + b'"}'

    def payload(self, code: int, kind: str | None = None) -> tuple[dict[str, Any], int, str, str]:
        """A valid payload: (payload, records it fans out to, event id, kind)."""
        kind = kind or self.rng.choice(KINDS)
        self.n += 1
        did = event_id(self.run, code, self.n)
        body, fan = self.tb.payload(kind, did, int(time.time() * 1000))
        return body, fan, did, kind

    def signed(self, payload: Any = None, raw: bytes | None = None) -> Req:
        plain = raw if raw is not None else compact(payload)
        r = self.platform.request(None, raw_plaintext=plain)
        return Req(r.body, dict(r.headers), key=plaintext_key(plain))

    def build(self, cat: str) -> tuple[Req, Sent]:
        req, s = getattr(self, "_" + cat)()
        if s.authentic:
            s.key = req.key
        return req, s

    def _valid(self) -> tuple[Req, Sent]:
        p, fan, did, kind = self.payload(1)
        req, s = self.signed(p), Sent("valid", kind, _OK, did, fan)
        self.pool.append((req, s))
        if len(self.pool) > 6000:
            del self.pool[:1000]
        return req, s

    def _duplicate(self) -> tuple[Req, Sent]:
        if len(self.pool) < 60:
            return self._valid()
        if self.rng.random() < 0.3:
            req, orig = self.rng.choice(self.pool[-3:])
            variant = "recent"
        else:
            req, orig = self.rng.choice(self.pool[:-50])
            variant = "old"
        return Req(req.body, dict(req.headers)), Sent("duplicate", variant, _OK, orig.did, orig.fanout)

    def _mutated_body(self) -> tuple[Req, Sent]:
        p, fan, did, kind = self.payload(2)
        base = self.signed(p)
        body, ops = base.body, ""
        while body == base.body:
            body, ops = mutate(base.body, self.rng, self.rng.randint(1, 8), None)
        note = f"{kind}, body {len(body)} B, {ops}"
        return Req(body, base.headers), Sent("mutated_body", "bytes", _REJECT, did, fan, note)

    def _mutated_plaintext(self) -> tuple[Req, Sent]:
        p, _, _, kind = self.payload(3)
        plain = compact(p)
        mutated, ops = mutate(plain, self.rng, self.rng.randint(1, 3), JSON_ALPHABET)
        doc = read_plaintext(mutated)  # None: not JSON, so a dead letter (never a 401)
        bad = wrong_token(doc)
        note = f"{kind}, plaintext {len(mutated)} B, {ops}" + (", token changed" if bad else "")
        return self.signed(raw=mutated), Sent(
            "mutated_plaintext",
            kind,
            _AUTH if bad else _OK,
            event_id_of(doc),
            None,
            note,
            authentic=True,
            bad_token=bad,
        )

    def _mutated_tree(self) -> tuple[Req, Sent]:
        p, _, _, kind = self.payload(4)
        ops = tree_mutate(p, self.rng, self.rng.randint(1, 3))
        bad = wrong_token(p)
        return self.signed(p), Sent(
            "mutated_tree",
            kind,
            _AUTH if bad else _OK,
            event_id_of(p),
            None,
            f"{kind}: {ops}"[:300],
            authentic=True,
            bad_token=bad,
        )

    def _nested(self) -> tuple[Req, Sent]:
        d = self.nest_depth
        variant = self.rng.choice(("unsigned_array", "signed_outer", "signed_event", "signed_event_200"))
        if variant == "unsigned_array":
            body = b"[" * d + b"]" * d
            return Req(body, {"Content-Type": "application/json"}), Sent("nested", variant, _REJECT, note=f"depth {d}")
        if variant == "signed_outer":
            body = b'{"encrypt":' + nest(d, self.rng) + b"}"
            return Req(body, signed_headers(body)), Sent("nested", variant, _REJECT, note=f"depth {d}")
        depth = 200 if variant == "signed_event_200" else d
        p, _, did, kind = self.payload(5, kind=self.rng.choice(("vc.room.created_v1", "vc.reserve_config.updated_v1")))
        plain = b'{"schema":"2.0","header":' + compact(p["header"]) + b',"event":' + nest(depth, self.rng) + b"}"
        return self.signed(raw=plain), Sent(
            "nested", variant, _OK, did, 0, f"{kind}, event depth {depth}", authentic=True
        )

    def _invalid_utf8(self) -> tuple[Req, Sent]:
        variant = self.rng.choice(("unsigned_in_encrypt", "signed_outer", "signed_plaintext", "signed_lone_surrogate"))
        if variant == "unsigned_in_encrypt":
            p, fan, did, _ = self.payload(6)
            base = self.signed(p)
            pos = 12 + self.rng.randrange(len(base.body) - 20)
            body = base.body[:pos] + b"\xff\xfe\xc0\xaf" + base.body[pos:]
            return Req(body, base.headers), Sent("invalid_utf8", variant, _REJECT, did, fan, f"at byte {pos}")
        if variant == "signed_outer":
            body = b'{"encrypt":"\xff\xfe\xed\xa0\x80' + secrets.token_hex(8).encode() + b'"}'
            return Req(body, signed_headers(body)), Sent("invalid_utf8", variant, _REJECT)
        p, _, did, kind = self.payload(6)
        if variant == "signed_plaintext":
            marker = "@@TENANT@@"
            if "header" in p:
                p["header"]["tenant_key"] = marker
            else:
                p["event"]["tenant_key"] = marker
            plain = compact(p).replace(marker.encode(), b"t\xc0\xaf\xff\xed\xa0\x80x")
            return self.signed(raw=plain), Sent("invalid_utf8", variant, _OK, did, 0, kind, authentic=True)
        # lone surrogates (valid JSON escapes, not Unicode): tenant_key and the Kafka key's source
        if "header" in p:
            p["header"]["tenant_key"] = "\ud800tenant"
            if "room" in p["event"]:
                p["event"]["room"]["room_id"] += "\udfff"
            else:
                p["event"]["scope_id"] += "\udfff"
        else:
            p["event"]["tenant_key"] = "\ud800tenant"
            p["event"]["meeting_rooms"][0]["open_id"] += "\udfff"
        plain = json.dumps(p, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        return self.signed(raw=plain), Sent("invalid_utf8", variant, _OK, did, 0, kind, authentic=True)

    def _gzip(self) -> tuple[Req, Sent]:
        p, fan, did, kind = self.payload(7)
        base = self.signed(p)
        enc = self.rng.choice(("gzip", "deflate", "br", "GZIP"))
        body = zlib.compress(base.body) if enc == "deflate" else gzip.compress(base.body)
        headers = {**base.headers, "Content-Encoding": enc}
        return Req(body, headers), Sent("gzip", enc, frozenset({415}), did, fan, kind)

    def _oversize(self) -> tuple[Req, Sent]:
        chunked = self.rng.random() < 0.5
        variant = "chunked" if chunked else "content_length"
        req = Req(self.oversize, {"Content-Type": "application/json"}, chunked=chunked)
        return req, Sent("oversize", variant, frozenset({413}), note=f"{len(self.oversize)} B")

    def _unknown_type_50kb(self) -> tuple[Req, Sent]:
        huge = "x.\n\x1b[2J" + secrets.token_hex(25_000) + ".v1"
        if self.rng.random() < 0.5:
            p, _, did, _ = self.payload(8, kind="vc.room.created_v1")
            p["header"]["event_type"] = huge
            p["header"]["tenant_key"] = CTRL
            variant = "v2"
        else:
            p, _, did, _ = self.payload(8, kind="third_party_meeting_room_event_created")
            p["event"]["type"] = huge
            p["event"]["tenant_key"] = CTRL
            variant = "v1"
        return self.signed(p), Sent(
            "unknown_type_50kb", variant, _OK, did, 0, f"type {len(huge)} chars", authentic=True
        )

    def _ctrl_tenant(self) -> tuple[Req, Sent]:
        p, fan, did, kind = self.payload(9)
        where = p["header"] if "header" in p else p["event"]
        where["tenant_key"] = CTRL + secrets.token_hex(2)
        where["app_id"] = "cli_" + CTRL
        return self.signed(p), Sent("ctrl_tenant", kind, _OK, did, fan, authentic=True)

    def _huge_id(self) -> tuple[Req, Sent]:
        p, fan, did, kind = self.payload(10)
        did = did + CTRL + "x" * 20_000
        if "header" in p:
            p["header"]["event_id"] = did
        else:
            p["uuid"] = did
        return self.signed(p), Sent("huge_id", kind, _OK, did, fan, f"id {len(did)} chars", authentic=True)


async def _chunks(body: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


# ------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores together (/proc/stat; busy = user, nice, system, irq,
    softirq: the hypervisor's steal counts as neither busy nor idle here)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6]
    return busy, busy + vals[3] + vals[4]


def fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def statuses(sent: list[Sent]) -> str:
    c = Counter(s.status if s.status > 0 else (s.error or "not sent") for s in sent)
    return " ".join(f"{k}×{v:,}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def hist_quantiles(m0: dict[str, float], m1: dict[str, float], name: str, qs: tuple[float, ...]) -> dict[float, str]:
    """Upper bucket bounds holding quantiles ``qs`` (0-1) of histogram ``name`` between two scrapes."""
    buckets: dict[float, float] = defaultdict(float)
    for k, v in m1.items():
        if k.startswith(name + "_bucket{") and 'le="' in k:
            le = k.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] += v - m0.get(k, 0.0)
    if not buckets:
        return {}
    total = buckets[max(buckets)]
    out = {}
    for q in qs:
        bound = next((le for le in sorted(buckets) if buckets[le] >= q * total), float("inf"))
        out[q] = "> 5 s" if bound == float("inf") else f"≤ {bound * 1000:g} ms"
    return out


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {series: value} (non-comment lines)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


class Env(msgspec.Struct):
    id: str
    larkeventid: str | None = None


@dataclass
class SlowConn:
    kind: str  # trickle | stall
    opened: float
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    head: bytes = b""  # the request head (trickle: sent one byte per second)
    sent: int = 0
    closed_after: float | None = None  # seconds from open to the server's close (EOF / reset)
    first: bytes = b""  # the first bytes the server answered
    blocked: bool = False  # the server stopped reading before the partial body was written

    @property
    def status(self) -> str:
        if self.first.startswith(b"HTTP/"):
            return self.first.split(b" ", 2)[1].decode("ascii", "replace")
        return "none" if not self.first else "garbage"


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


class Stress:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_tag = secrets.token_hex(4)
        self.factory = Factory(self.run_tag, args.seed, args.nest_depth)
        self.rng = random.Random(args.seed + 2)
        self.work = Path(tempfile.mkdtemp(prefix="bridge-stress-"))
        self.sent: list[Sent] = []
        self.findings: list[str] = []
        self.notes: list[str] = []
        self.r: dict[str, Any] = {}  # results
        self.broker: Any = None
        self.svc: tools.Service | None = None
        self.url = ""
        self.base = ""
        self.saved_500 = 0
        self.rss_peak: dict[str, int] = defaultdict(int)
        self.phase = "start"
        self.frozen = False
        self.t_flood = 0.0
        self.details: list[str] = []  # per-id evidence of the broker check's findings

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.svc is not None
        return self.svc.pid

    def rss(self) -> int | None:
        return tools.proc_status(self.pid, "VmRSS")

    def alive(self) -> bool:
        return self.svc is not None and self.svc.proc is not None and self.svc.proc.poll() is None

    def finding(self, text: str) -> None:
        self.findings.append(text)
        print(f"\n  !!! FINDING: {text}\n", flush=True)

    async def sampler(self, stop: asyncio.Event) -> None:
        """The bridge's VmRSS every 0.25 s; the peak of each phase."""
        while not stop.is_set():
            rss = self.rss()
            if rss is not None:
                self.rss_peak[self.phase] = max(self.rss_peak[self.phase], rss)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        async with session.get(self.base + "/metrics") as resp:
            return parse_metrics(await resp.text())

    def session(self, limit: int = 100) -> aiohttp.ClientSession:
        trace = aiohttp.TraceConfig()

        async def headers_sent(_session: aiohttp.ClientSession, ctx: Any, _params: Any) -> None:
            if isinstance(ctx.trace_request_ctx, Sent):
                ctx.trace_request_ctx.wrote = asyncio.get_running_loop().time()

        trace.on_request_headers_sent.append(headers_sent)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit),
            timeout=aiohttp.ClientTimeout(total=self.args.client_timeout_s),
            auto_decompress=False,
            trace_configs=[trace],
        )

    async def fire(self, session: aiohttp.ClientSession, req: Req, s: Sent, due: float) -> None:
        loop = asyncio.get_running_loop()
        s.due = due
        s.fired = loop.time()
        headers = {**req.headers, "X-Request-Id": s.req_id}
        data: Any = _chunks(req.body) if req.chunked else req.body
        try:
            async with session.post(self.url, data=data, headers=headers, trace_request_ctx=s) as resp:
                await resp.read()
                s.status = resp.status
        except TimeoutError:
            s.status, s.error = -1, "client timeout"
        except aiohttp.ClientError as exc:
            s.status, s.error = -1, type(exc).__name__
        s.done = loop.time()
        if s.status == 500:
            self.save_500(req, s)

    def save_500(self, req: Req, s: Sent) -> None:
        if self.saved_500 >= 20:
            return
        self.saved_500 += 1
        d = self.work / "findings"
        d.mkdir(exist_ok=True)
        (d / f"{s.req_id}.body").write_bytes(req.body)
        meta = {"category": s.cat, "variant": s.variant, "note": s.note, "headers": req.headers, "chunked": req.chunked}
        (d / f"{s.req_id}.json").write_text(json.dumps(meta, indent=1))

    async def sequential(self, label: str, n: int) -> list[Sent]:
        """``n`` valid events one after the other on one keep-alive connection."""
        loop = asyncio.get_running_loop()
        out = []
        async with self.session(limit=1) as session:
            for j in range(n):
                req, s = self.factory.build("valid")
                s.cat, s.req_id = label, f"{label}-{j}"
                await self.fire(session, req, s, loop.time())
                out.append(s)
        self.sent.extend(out)
        return out

    # -- phases ----------------------------------------------------------------------------------

    async def phases(self) -> None:
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.sampler(stop))
        try:
            async with self.session() as session:
                await self.baseline(session)
                if self.alive() and "flood" not in self.args.skip:
                    await self.flood(session)
                if self.alive() and "slow" not in self.args.skip:
                    await self.slow_clients()
                if self.alive() and "frozen" not in self.args.skip:
                    await self.frozen_broker()
                await asyncio.sleep(2)  # publishes of the last requests settle
                self.phase = "check"
                await self.broker_check()
                self.phase = "end"
                if self.alive():
                    m = await self.metrics(session)
                    self.r["end"] = {"series": len(m), "rss": self.rss(), "fds": fds(self.pid), "metrics": m}
                    self.r["hwm"] = tools.proc_status(self.pid, "VmHWM")
                else:
                    self.finding("the bridge process died during the run (see its log)")
        finally:
            stop.set()
            await sampler

    async def baseline(self, session: aiohttp.ClientSession) -> None:
        self.phase = "baseline"
        n = self.args.probe_events
        await self.warm_up()
        await self.wait_quiet("the baseline")
        print(f"\n== 1. baseline: {n} sequential valid events", flush=True)
        m = await self.metrics(session)
        rss, nfd = self.rss(), fds(self.pid)
        probes = await self.sequential("baseline", n)
        lat = [s.service_ms for s in probes if s.status == 200]
        self.r["baseline"] = {
            "rss": rss,
            "series": len(m),
            "fds": nfd,
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")),
            "statuses": statuses(probes),
            "n": n,
            "metrics": m,
        }
        b = self.r["baseline"]
        print(
            f"  RSS {mb(rss)}, {len(m)} metric series, {nfd} fds; p50 {b['p50']:.1f} ms, p99 {b['p99']:.1f} ms "
            f"({b['statuses']})",
            flush=True,
        )

    async def _mark(self, session: aiohttp.ClientSession, label: str, marks: list[dict[str, Any]]) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            m = await self.metrics(session)
            marks.append({"at": label, "rss": self.rss(), "series": len(m), "fds": fds(self.pid)})

    def cpu(self) -> dict[str, float]:
        """CPU seconds (utime + stime, all threads) of the bridge, the broker and this runner."""
        out = {"runner": tools.cpu_seconds(os.getpid())}
        with contextlib.suppress(OSError):
            out["bridge"] = tools.cpu_seconds(self.pid)
        if self.broker is not None and self.broker.pid:
            with contextlib.suppress(OSError):
                out["broker"] = tools.cpu_seconds(self.broker.pid)
        return out

    def others(
        self, cpu0: dict[str, float], stat0: tuple[int, int], cpu1: dict[str, float], stat1: tuple[int, int]
    ) -> float:
        """Cores used by everything but this run between two samples: the machine's busy time from
        /proc/stat (short-lived processes included) minus this run's processes."""
        d_total = stat1[1] - stat0[1]
        if d_total <= 0:
            return 0.0
        busy = (stat1[0] - stat0[0]) / d_total * (os.cpu_count() or 1)
        wall = d_total / (os.cpu_count() or 1) / tools.CLK_TCK
        ours = sum(cpu1[k] - cpu0[k] for k in cpu1 if k in cpu0) / wall if wall else 0.0
        return max(0.0, busy - ours)

    async def wait_quiet(self, label: str) -> None:
        """Wait (≤ 120 s) until the rest of the machine uses < 0.15 cores for 2 s: it may be shared."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        quiet = 0
        while loop.time() - t0 < 120 and quiet < 2:
            c0, s0 = self.cpu(), machine_ticks()
            await asyncio.sleep(1)
            quiet = quiet + 1 if self.others(c0, s0, self.cpu(), machine_ticks()) < 0.15 else 0
        waited = loop.time() - t0
        if waited > 2.5:
            self.notes.append(f"waited {waited:.0f} s for other processes on this machine to go quiet before {label}")
            print(f"  (waited {waited:.0f} s for other processes on this machine to go quiet)", flush=True)

    async def open_loop(
        self,
        plan: list[tuple[Req, Sent] | None],
        rate: int,
        *,
        progress: bool = False,
        marks: list[dict[str, Any]] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> dict[str, Any]:
        """Fire the pre-built ``plan`` open-loop: request ``i`` at ``t0 + i / rate``, each in its own task
        (at most ``--max-in-flight``; beyond it a request is counted as not sent). Bounded by twice its
        nominal duration + 60 s, and by the client timeout for the answers. Returns the sending stats."""
        a = self.args
        n = len(plan)
        loop = asyncio.get_running_loop()
        inflight: set[asyncio.Task[None]] = set()
        side: set[asyncio.Task[None]] = set()
        mark_at = {n // 4: "25 %", n // 2: "50 %", 3 * n // 4: "75 %"} if marks is not None else {}
        sents: list[Sent] = []
        peak = skipped = 0
        every = max(1, n // 10)
        cpu0 = self.cpu()
        stat0 = machine_ticks()
        t0 = loop.time() + 0.2
        hard_deadline = t0 + n / rate * 2 + 60
        async with self.session(limit=a.max_conns) as fs:
            for i in range(n):
                item = plan[i]
                assert item is not None
                plan[i] = None  # the request's bytes go once it is sent
                req, s = item
                due = t0 + i / rate
                now = loop.time()
                if now > hard_deadline:
                    self.notes.append(f"open loop stopped at {i:,} of {n:,}: past its time bound")
                    break
                if due - now > 0.0005:
                    await asyncio.sleep(due - now)
                sents.append(s)
                if progress and i % every == 0 and i:
                    n500 = sum(1 for x in sents if x.status == 500)
                    print(
                        f"  {i:>7,} due, {len(inflight):>4} in flight, late by {(loop.time() - due) * 1000:6.1f} ms, "
                        f"RSS {mb(self.rss())}, 500s so far: {n500}",
                        flush=True,
                    )
                if len(inflight) >= a.max_in_flight:
                    s.due, s.error = due, "not sent (client at its in-flight cap)"
                    skipped += 1
                    continue
                task = asyncio.create_task(self.fire(fs, req, s, due))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                peak = max(peak, len(inflight))
                if i in mark_at and session is not None and marks is not None:
                    t = asyncio.create_task(self._mark(session, mark_at[i], marks))
                    side.add(t)
                    t.add_done_callback(side.discard)
            t_last = loop.time()
            if inflight:
                await asyncio.wait(set(inflight), timeout=a.client_timeout_s + 5)
        if side:
            await asyncio.wait(set(side), timeout=10)
        t_end = loop.time()
        cpu1 = self.cpu()
        cpu = {k: (cpu1[k] - cpu0[k]) / (t_end - t0) for k in cpu1 if k in cpu0}
        cpu["others"] = self.others(cpu0, stat0, cpu1, machine_ticks())
        self.sent.extend(sents)
        fired = [s for s in sents if s.fired]
        span = (max(s.fired for s in fired) - min(s.fired for s in fired)) if len(fired) > 1 else 0.0
        late = [(s.fired - s.due) * 1000 for s in fired]
        return {
            "sents": sents,
            "n": len(sents),
            "sent": len(fired),
            "skipped": skipped,
            "span": span,
            "rate": (len(fired) - 1) / span if span else float("nan"),
            "late_p99": pct(late, 99),
            "late_max": max(late, default=float("nan")),
            "peak_inflight": peak,
            "wall": t_last - t0,
            "cpu": cpu,
        }

    async def warm_up(self) -> None:
        """Valid events open-loop (the bridge's and the broker's hot paths, the broker's JIT), then idle."""
        a = self.args
        n, rate = a.warmup_events, a.warmup_rate
        print(f"\n== 0. warm-up: {n:,} valid events at {rate}/s open loop", flush=True)
        plan: list[tuple[Req, Sent] | None] = []
        for j in range(n):
            req, s = self.factory.build("valid")
            s.cat, s.req_id = "warmup", f"warmup-{j}"
            plan.append((req, s))
        st = await self.open_loop(plan, rate)
        print(
            f"  {statuses(st['sents'])}; p99 {pct([s.service_ms for s in st['sents'] if s.done], 99):.1f} ms; "
            f"CPU (cores) {fmt_cpu(st['cpu'])}",
            flush=True,
        )
        if self.broker is not None and self.broker.pid:
            await asyncio.to_thread(tools.wait_idle, self.broker.pid, threshold=0.1, timeout_s=20)
        await asyncio.to_thread(tools.wait_idle, self.pid, threshold=0.05, timeout_s=10)

    async def flood(self, session: aiohttp.ClientSession) -> None:
        self.phase = "flood"
        a = self.args
        n, rate = a.requests, a.rate
        print(f"\n== 2. mixed flood: {n:,} requests at {rate:,}/s open loop (cap {a.max_in_flight:,} in flight)")
        chosen = [c for c in CATEGORIES if c.name in a.categories]
        cats = self.rng.choices([c.name for c in chosen], weights=[c.weight for c in chosen], k=n)
        t_build = time.perf_counter()
        plan: list[tuple[Req, Sent] | None] = []
        for i, cat in enumerate(cats):
            req, s = self.factory.build(cat)
            s.req_id = f"flood-{i}"
            plan.append((req, s))
        build_s = time.perf_counter() - t_build
        print(
            f"  {n:,} requests built in {build_s:.1f} s "
            f"({sum({id(x[0].body): len(x[0].body) for x in plan if x}.values()) / 1e6:,.0f} MB)",
            flush=True,
        )
        marks: list[dict[str, Any]] = []
        await self.wait_quiet("the flood")
        m_before = await self.metrics(session)
        self.t_flood = asyncio.get_running_loop().time() + 0.2
        st = await self.open_loop(plan, rate, progress=True, marks=marks, session=session)
        flood: list[Sent] = st.pop("sents")
        await asyncio.sleep(1)
        m = await self.metrics(session)
        marks.append({"at": "100 %", "rss": self.rss(), "series": len(m), "fds": fds(self.pid)})
        bridge_side = hist_quantiles(m_before, m, "bridge_request_duration_seconds", (0.5, 0.99))
        self.r["flood"] = {**st, "marks": marks, "metrics": m, "build_s": build_s, "bridge_side": bridge_side}
        f = self.r["flood"]
        print(
            f"  done: {f['sent']:,} sent in {f['span']:.1f} s = {f['rate']:,.0f}/s achieved; send lateness p99 "
            f"{f['late_p99']:.1f} ms, max {f['late_max']:.0f} ms; peak {f['peak_inflight']} in flight; "
            f"{f['skipped']} not sent; CPU (cores) {fmt_cpu(f['cpu'])}",
            flush=True,
        )
        for c in CATEGORY_NAMES:
            group = [s for s in flood if s.cat == c]
            print(f"  {c:<18} {len(group):>6,}  {statuses(group)}", flush=True)
        for s in flood:
            if s.status == 500:
                self.finding(f"500 in the flood: category {s.cat}/{s.variant} ({s.note}) request id {s.req_id}")
        if f["cpu"].get("others", 0.0) > 0.2:
            self.notes.append(
                f"the machine was not quiet during the flood: other processes used {f['cpu']['others']:.2f} cores "
                "(the flood's latencies and 503s are disturbed by them)"
            )
        n503 = sum(1 for s in flood if s.status == 503)
        ok = [s for s in flood if s.cat == "valid" and s.status > 0]
        sent_ms = [x.service_ms for x in ok]
        wire_ms = [x.wire_ms for x in ok if x.wrote]
        if f["rate"] < 0.95 * rate or f["skipped"] or n503:
            held = f["rate"] >= 0.95 * rate and not f["skipped"]
            self.finding(
                f"flood: {'the rate was held, but at the edge' if held else 'the bridge did not keep up'} "
                f"({rate:,}/s of this mix): {f['rate']:,.0f}/s sent, "
                f"{f['skipped']:,} not sent (client at {a.max_in_flight:,} in flight), {n503:,} answered 503; bridge "
                f"CPU {f['cpu'].get('bridge', 0):.2f} cores; valid events p50/p99 {pct(sent_ms, 50):.0f}"
                f"/{pct(sent_ms, 99):.0f} ms from the client's send, "
                f"{pct(wire_ms, 50):.0f}/{pct(wire_ms, 99):.0f} ms "
                f"from the write of the headers, bridge-side (handler) p50 {bridge_side.get(0.5, '?')}, "
                f"p99 {bridge_side.get(0.99, '?')}"
            )
        rejected: Counter[str] = Counter()
        for s in flood:
            if s.authentic and s.status == 401:
                rejected[f"{s.cat}/{s.variant}" + (" (verification token mutated)" if s.bad_token else "")] += 1
        untouched = {k: v for k, v in rejected.items() if "token mutated" not in k}
        if untouched:
            self.finding(
                f"flood: {sum(untouched.values()):,} correctly signed + encrypted requests were answered 401 "
                f"(not a record or a dead letter): "
                + ", ".join(f"{k} {v:,}" for k, v in sorted(untouched.items(), key=lambda kv: -kv[1]))
            )

    async def _open_slow(self, kind: str, i: int) -> SlowConn | None:
        a = self.args
        port = int(self.base.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            return None
        c = SlowConn(kind, loop.time(), reader, writer)
        common = f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Request-Id: slow-{kind}-{i}\r\n"
        if kind == "trickle":
            body_len = 200
            c.head = (common + f"Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n").encode()
            writer.write(c.head[:1])
            c.sent = 1
            return c
        head = (common + f"Content-Type: application/json\r\nContent-Length: {a.stall_content_length}\r\n\r\n").encode()
        part = b'{"encrypt":"' + b"A" * max(0, a.stall_body_bytes - 12)
        writer.write(head + part)
        try:
            await asyncio.wait_for(writer.drain(), 5)
        except TimeoutError:
            c.blocked = True
        except (ConnectionError, OSError):
            pass
        c.sent = len(head) + len(part)
        return c

    async def _watch(self, c: SlowConn, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    return
                chunk = await asyncio.wait_for(c.reader.read(65536), left)
                if not chunk:
                    c.closed_after = loop.time() - c.opened
                    return
                if len(c.first) < 64:
                    c.first += chunk[: 64 - len(c.first)]
        except TimeoutError:
            return
        except (ConnectionError, OSError):
            c.closed_after = loop.time() - c.opened

    async def _trickle(self, conns: list[SlowConn], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            await asyncio.sleep(1)
            for c in conns:
                if c.closed_after is None and c.sent < len(c.head) and not c.writer.is_closing():
                    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                        c.writer.write(c.head[c.sent : c.sent + 1])
                        c.sent += 1
            if all(c.closed_after is not None for c in conns):
                return

    async def slow_clients(self) -> None:
        self.phase = "slow"
        a = self.args
        half = a.slow_conns // 2
        print(
            f"\n== 3. slow clients: {half} trickling headers 1 byte/s + {a.slow_conns - half} stalling after "
            f"{a.stall_body_bytes:,} of a {a.stall_content_length:,}-byte body; watch {a.slow_watch_s:.0f} s",
            flush=True,
        )
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1)
        rss_before, fds_before = self.rss(), fds(self.pid)
        t0 = loop.time()
        kinds = ["trickle"] * half + ["stall"] * (a.slow_conns - half)
        conns: list[SlowConn] = []
        failed = 0
        for start in range(0, len(kinds), 50):
            got = await asyncio.gather(
                *(self._open_slow(k, start + j) for j, k in enumerate(kinds[start : start + 50]))
            )
            conns.extend(c for c in got if c is not None)
            failed += sum(1 for c in got if c is None)
        t_open = loop.time() - t0
        deadline = t0 + a.slow_watch_s
        watchers = [asyncio.create_task(self._watch(c, c.opened + a.slow_watch_s)) for c in conns]
        trickler = asyncio.create_task(self._trickle([c for c in conns if c.kind == "trickle"], deadline))

        def still_open() -> int:
            return sum(1 for c in conns if c.closed_after is None)

        open_at_start = still_open()
        fds_during = fds(self.pid)
        t_probe = loop.time() - t0
        probes = await self.sequential("slow_probe", a.probe_events)
        t_probe_end = loop.time() - t0
        open_at_end = still_open()
        rss_during, fds_after_probe = self.rss(), fds(self.pid)
        print(
            f"  {len(conns)} connections opened in {t_open:.1f} s ({failed} failed); {open_at_start} open when the "
            f"{a.probe_events} normal events started (t={t_probe:.1f} s), {open_at_end} when they ended "
            f"(t={t_probe_end:.1f} s)",
            flush=True,
        )
        await asyncio.wait(watchers, timeout=a.slow_watch_s + 5)
        trickler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trickler
        for c in conns:
            c.writer.close()
        await asyncio.gather(*(asyncio.wait_for(c.writer.wait_closed(), 2) for c in conns), return_exceptions=True)
        await asyncio.sleep(2)
        rss_after, fds_after = self.rss(), fds(self.pid)
        lat = [s.service_ms for s in probes if s.status > 0]  # every answer: a fast 503 is a change too
        per_kind: dict[str, Any] = {}
        for kind in ("trickle", "stall"):
            group = [c for c in conns if c.kind == kind]
            closed = sorted(c.closed_after for c in group if c.closed_after is not None)
            per_kind[kind] = {
                "n": len(group),
                "closed": sum(1 for x in closed if x <= SLOW_CLOSE_TARGET_S),
                "closed_min": closed[0] if closed else float("nan"),
                "closed_med": closed[len(closed) // 2] if closed else float("nan"),
                "closed_max": closed[-1] if closed else float("nan"),
                "answers": dict(Counter(c.status for c in group)),
                "blocked": sum(1 for c in group if c.blocked),
                "bytes_sent_max": max((c.sent for c in group), default=0),
            }
        self.r["slow"] = {
            "n": len(conns),
            "failed": failed,
            "t_open": t_open,
            "open_at_start": open_at_start,
            "open_at_end": open_at_end,
            "t_probe": t_probe,
            "t_probe_end": t_probe_end,
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")),
            "statuses": statuses(probes),
            "non200": sum(1 for s in probes if s.status != 200),
            "rss_before": rss_before,
            "rss_during": rss_during,
            "rss_peak": self.rss_peak["slow"],
            "rss_after": rss_after,
            "fds_before": fds_before,
            "fds_during": fds_during,
            "fds_after_probe": fds_after_probe,
            "fds_after": fds_after,
            "kinds": per_kind,
        }
        s = self.r["slow"]
        base = self.r["baseline"]
        print(
            f"  normal events meanwhile (every answer): p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms (baseline "
            f"{base['p50']:.1f} / "
            f"{base['p99']:.1f}) — {s['statuses']}",
            flush=True,
        )
        print(
            f"  RSS before {mb(rss_before)}, during {mb(rss_during)}, peak {mb(s['rss_peak'])}, after {mb(rss_after)}; "
            f"fds {fds_before} → {fds_during} → {fds_after}",
            flush=True,
        )
        for kind, k in per_kind.items():
            print(
                f"  {kind:<8} {k['n']}: closed by the bridge within {SLOW_CLOSE_TARGET_S:.0f} s: {k['closed']} "
                f"(after {k['closed_min']:.1f} / {k['closed_med']:.1f} / {k['closed_max']:.1f} s min/median/max); "
                f"answers {k['answers']}; {k['blocked']} blocked while writing",
                flush=True,
            )
        d50, d99 = s["p50"] - base["p50"], s["p99"] - base["p99"]
        if s["non200"] or not d99 < LATENCY_DELTA_TARGET_MS:
            self.finding(
                f"slow clients: normal events answered {s['statuses']}, p99 {s['p99']:.1f} ms vs baseline "
                f"{base['p99']:.1f} ms (Δp50 {d50:+.1f}, Δp99 {d99:+.1f} ms; "
                f"target Δ < {LATENCY_DELTA_TARGET_MS:.0f} ms)"
            )
        for label, value in (("peak", s["rss_peak"]), ("after", rss_after)):
            if value is not None and rss_before is not None and value - rss_before >= RSS_DELTA_TARGET:
                self.finding(
                    f"slow clients: RSS {label} {mb(value)} vs {mb(rss_before)} before "
                    f"(Δ {mb(value - rss_before)}; target < 64 MB)"
                )
        for kind, k in per_kind.items():
            if k["closed"] < k["n"]:
                self.finding(
                    f"slow clients: {k['n'] - k['closed']} of {k['n']} {kind} connections not closed by the bridge "
                    f"within {SLOW_CLOSE_TARGET_S:.0f} s"
                )

    async def frozen_broker(self) -> None:
        self.phase = "frozen"
        a = self.args
        n, freeze_s = a.freeze_events, a.freeze_s
        spread = max(0.0, freeze_s - FROZEN_ANSWER_TARGET_S - 1.0)
        print(
            f"\n== 4. broker frozen (SIGSTOP) for {freeze_s:.0f} s; {n} valid events sent open-loop over its first "
            f"{spread + 0.5:.1f} s",
            flush=True,
        )
        loop = asyncio.get_running_loop()
        built = [self.factory.build("valid") for _ in range(n)]
        for j, (_, s) in enumerate(built):
            s.cat, s.req_id = "frozen", f"frozen-{j}"
        pid = self.broker.pid
        async with self.session(limit=n + 10) as session:
            os.kill(pid, signal.SIGSTOP)
            self.frozen = True
            t_stop = loop.time()
            try:
                tasks = []
                for j, (req, s) in enumerate(built):
                    due = t_stop + 0.5 + (spread * j / max(1, n - 1))
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    tasks.append(asyncio.create_task(self.fire(session, req, s, due)))
                await asyncio.wait(tasks, timeout=a.client_timeout_s + 5)
                await asyncio.sleep(max(0.0, t_stop + freeze_s - loop.time()))
            finally:
                os.kill(pid, signal.SIGCONT)
                self.frozen = False
            t_cont = loop.time()
            frozen = [s for _, s in built]
            self.sent.extend(frozen)
            # recovery: the broker answers, then the bridge publishes a new event
            port = int(self.broker.bootstrap_servers.rsplit(":", 1)[1])
            broker_ready = None
            for _ in range(120):
                if await asyncio.to_thread(tools_probe, port) is not None:
                    broker_ready = loop.time() - t_cont
                    break
                await asyncio.sleep(0.5)
            bridge_ready = None
            recover: list[Sent] = []
            for j in range(120):
                req, s = self.factory.build("valid")
                s.cat, s.req_id = "recover", f"recover-{j}"
                await self.fire(session, req, s, loop.time())
                recover.append(s)
                if s.status == 200:
                    bridge_ready = loop.time() - t_cont
                    break
                await asyncio.sleep(0.5)
            self.sent.extend(recover)
            # the platform retries what was not answered 200 (here: every one, same bytes)
            retries = []
            for j, (req, s0) in enumerate(built):
                s = Sent("frozen_retry", s0.variant, _OK, s0.did, s0.fanout, req_id=f"frozen-retry-{j}")
                retries.append(s)
                await self.fire(session, req, s, loop.time())
            self.sent.extend(retries)
        lat = [s.service_ms for s in frozen if s.done]
        late = [s for s in frozen if s.status not in (200, 503) or s.service_ms > FROZEN_ANSWER_TARGET_S * 1000]
        self.r["frozen"] = {
            "n": n,
            "freeze_s": t_cont - t_stop,
            "statuses": statuses(frozen),
            "max": max(lat, default=float("nan")),
            "p50": pct(lat, 50),
            "late": len(late),
            "broker_ready": broker_ready,
            "bridge_ready": bridge_ready,
            "recover_tries": len(recover),
            "retry_statuses": statuses(retries),
        }
        f = self.r["frozen"]
        print(
            f"  frozen {f['freeze_s']:.1f} s: {f['statuses']}; latency p50 {f['p50']:.0f} ms, max {f['max']:.0f} ms; "
            f"{len(late)} outside (200|503 within {FROZEN_ANSWER_TARGET_S:.0f} s)",
            flush=True,
        )
        print(
            f"  after SIGCONT: broker answering after {fmt_s(broker_ready)}, the bridge's first 200 after "
            f"{fmt_s(bridge_ready)} ({len(recover)} tries); the {n} retried: {f['retry_statuses']}",
            flush=True,
        )
        if late:
            worst = max(late, key=lambda s: s.service_ms)
            self.finding(
                f"broker frozen: {len(late)} of {n} answers not 200/503 within {FROZEN_ANSWER_TARGET_S:.0f} s "
                f"({f['statuses']}; worst {worst.service_ms:.0f} ms, {worst.status or worst.error})"
            )
        if bridge_ready is None:
            self.finding("broker frozen: the bridge did not publish again within 60 s of SIGCONT")
        if any(s.status != 200 for s in retries):
            self.finding(f"broker frozen: the retries after SIGCONT were answered {f['retry_statuses']}")

    async def broker_check(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        print("\n== 5. broker-side check: reading every record of the bridge's topics", flush=True)
        dec = msgspec.json.Decoder(Env)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.broker.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=16 << 20,
            fetch_max_bytes=64 << 20,
        )
        events: dict[str | None, list[str]] = defaultdict(list)  # larkeventid -> record ids (event topics)
        where: dict[str, str] = {}  # record id -> topic[partition]@offset
        # dead-letter key (its lark_event_id header, else its id: the event id, or sha256: of the
        # plaintext of an event without one) -> dead letters
        dead: dict[str, int] = defaultdict(int)
        dead_no_did = 0  # dead letters without an event id (larkeventid null)
        dead_odd: list[str] = []  # dead letters whose header, id and larkeventid disagree
        per_topic: Counter[str] = Counter()
        undecodable = 0
        t0 = time.monotonic()
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(t, p) for t in BRIDGE_TOPICS for p in (consumer.partitions_for_topic(t) or ())]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            remaining = {tp for tp in parts if end[tp] > 0}
            deadline = time.monotonic() + self.args.check_timeout_s
            while remaining and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000, max_records=20000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        per_topic[tp.topic] += 1
                        try:
                            env = dec.decode(m.value)
                        except msgspec.DecodeError:
                            undecodable += 1
                            continue
                        if tp.topic == DEAD_LETTER_TOPIC:
                            header = next((v for k, v in m.headers or () if k == LARK_EVENT_ID_HEADER), None)
                            key = header.decode("utf-8", "replace") if header is not None else env.id
                            dead[key] += 1
                            dead_no_did += env.larkeventid is None
                            if (
                                key != env.id
                                or env.larkeventid not in (None, key)
                                or (env.larkeventid is None and not key.startswith("sha256:"))
                            ):
                                dead_odd.append(
                                    f"id {env.id[:80]!r}, header {key[:80]!r}, larkeventid "
                                    f"{(env.larkeventid or '')[:80]!r}"
                                )
                        else:
                            events[env.larkeventid].append(env.id)
                            where[env.id] = f"{tp.topic}[{tp.partition}]@{m.offset}"
                    if msgs and msgs[-1].offset + 1 >= end[tp]:
                        remaining.discard(tp)
            unread = len(remaining)
        finally:
            await consumer.stop()
        read_s = time.monotonic() - t0
        # what we sent, by event id (else by the plaintext's sha256: key, the id of its dead letter)
        by_id: dict[str, list[Sent]] = defaultdict(list)
        for s in self.sent:
            if s.did is not None or s.key is not None:
                by_id[s.did or s.key or ""].append(s)
        # dead letters of each: by its event id, or by the sha256: key of a plaintext the bridge
        # read no event id from
        keys_of = {d: {d} | {s.key for s in group if s.key is not None} for d, group in by_id.items()}
        dead_of: dict[str, int] = {d: sum(dead.get(k, 0) for k in keys) for d, keys in keys_of.items()}
        ok_ids = {d for d, group in by_id.items() if any(s.status == 200 for s in group)}
        missing: list[str] = []
        fan_bad: list[str] = []
        dup_records: list[str] = []
        dup_dead: list[str] = []
        both: list[str] = []
        published_not_ok = 0
        for d, group in by_id.items():
            ev_ids, n_dead = events.get(d, []), dead_of[d]
            if len(ev_ids) != len(set(ev_ids)):
                dup_records.append(d)
            if n_dead > 1:
                dup_dead.append(d)
            if ev_ids and n_dead:
                both.append(d)
            if d not in ok_ids:
                published_not_ok += bool(ev_ids or n_dead)
                continue
            if not ev_ids and not n_dead:
                missing.append(d)
                continue
            fan = next((s.fanout for s in group if s.fanout is not None), None)
            if fan is not None and (len(ev_ids) != fan if fan else (n_dead != 1 or ev_ids)):
                fan_bad.append(d)
        # what each authenticated request answered 200 became, per category and variant
        became: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        wrong_token_taken: list[Sent] = []  # a readable event with a wrong token: 401 due, not a record
        for s in self.sent:
            if s.status != 200 or s.cat in ("valid", "duplicate", "warmup", "baseline", "slow_probe", "recover"):
                continue
            if s.cat in ("frozen", "frozen_retry"):
                continue
            if s.did is None and s.key is None:
                became[(s.cat, s.variant)]["no id (unkeyed dead letter?)"] += 1
            elif s.did is not None and events.get(s.did):
                became[(s.cat, s.variant)]["records"] += 1
            elif s.did is not None and dead.get(s.did):
                became[(s.cat, s.variant)]["dead letter"] += 1
            elif s.key is not None and dead.get(s.key):
                became[(s.cat, s.variant)]["dead letter (sha256 of the plaintext)"] += 1
            else:
                became[(s.cat, s.variant)]["nothing found"] += 1
            if s.bad_token and (s.did is not None and (events.get(s.did) or dead.get(s.did))):
                wrong_token_taken.append(s)
        all_record_ids = [i for ids in events.values() for i in ids]
        known = set().union(*keys_of.values())
        foreign = {d for d in set(events) | set(dead) if d not in known}
        n_events = sum(len(v) for v in events.values())
        n_dead = sum(dead.values())
        cats_of = Counter(by_id[d][0].cat for d in missing + fan_bad + dup_records + dup_dead if d in by_id)
        self.r["check"] = {
            "records": sum(per_topic.values()),
            "per_topic": dict(per_topic),
            "event_records": n_events,
            "dead_letters": n_dead,
            "dead_unkeyed": dead_no_did,
            "dead_sha": sum(v for k, v in dead.items() if k.startswith("sha256:")),
            "dead_odd": len(dead_odd),
            "ok_ids": len(ok_ids),
            "missing": len(missing),
            "fan_bad": len(fan_bad),
            "dup_records": len(dup_records),
            "dup_record_ids_global": len(all_record_ids) - len(set(all_record_ids)),
            "dup_dead": len(dup_dead),
            "both": len(both),
            "published_not_ok": published_not_ok,
            "foreign": len(foreign - {None}),
            "undecodable": undecodable,
            "unread_partitions": unread,
            "read_s": read_s,
            "bad_categories": dict(cats_of),
            "became": {f"{c}/{v}": dict(x) for (c, v), x in sorted(became.items())},
        }
        c = self.r["check"]
        print(
            f"  {c['records']:,} records in {read_s:.1f} s ({c['event_records']:,} event records, {n_dead:,} dead "
            f"letters, {c['dead_unkeyed']} of them without an event id, {c['dead_sha']} keyed by sha256 of the "
            f"plaintext); {len(ok_ids):,} event ids / plaintexts answered 200",
            flush=True,
        )
        print(
            f"  answered 200 without a record: {len(missing)}; wrong fan-out: {len(fan_bad)}; ids with duplicate "
            f"records: {len(dup_records)} (duplicate record ids overall: {c['dup_record_ids_global']}); ids with >1 "
            f"dead letter: {len(dup_dead)}; with both records and a dead letter: {len(both)}",
            flush=True,
        )
        print(
            f"  published but never answered 200: {published_not_ok}; records of ids we did not send (mutated "
            f"ids): {c['foreign']}; undecodable values: {undecodable}; partitions not read to the end: {unread}",
            flush=True,
        )
        for label, ids in (
            ("answered 200 but no record in Kafka", missing),
            ("wrong number of records (fan-out)", fan_bad),
            ("an event id with duplicate records", dup_records),
            ("an event id with more than one dead letter", dup_dead),
            ("an event id with both event records and a dead letter", both),
        ):
            if ids:
                ex = by_id[ids[0]][0]
                self.finding(
                    f"broker check: {len(ids)} × {label} (categories {dict(Counter(by_id[d][0].cat for d in ids))}; "
                    f"e.g. {ex.cat}/{ex.variant} id {ids[0][:40]!r}: {len(events.get(ids[0], []))} records, "
                    f"{dead_of[ids[0]]} dead letters, expected fan-out {ex.fanout})"
                )
                self.explain(label, ids[:10], by_id, events, dead_of, where)
        if dead_odd:
            self.finding(
                f"broker check: {len(dead_odd)} dead letters whose lark_event_id header, id and larkeventid "
                f"disagree (e.g. {dead_odd[0]})"
            )
        if wrong_token_taken:
            ex = wrong_token_taken[0]
            self.finding(
                f"broker check: {len(wrong_token_taken)} events with a wrong verification token were published "
                f"(records or a dead letter by event id, not 401 token_mismatch; e.g. {ex.cat}/{ex.variant} "
                f"{ex.req_id}: {ex.note})"
            )
        if unread or undecodable:
            self.finding(f"broker check incomplete: {unread} partitions unread, {undecodable} undecodable values")

    def explain(
        self,
        label: str,
        ids: list[str],
        by_id: dict[str, list[Sent]],
        events: dict[str | None, list[str]],
        dead: dict[str, int],
        where: dict[str, str],
    ) -> None:
        """Print (and keep for the report) every request of each id, its records, and what the bridge
        logged for those requests (matched by X-Request-Id)."""
        logged: dict[str, list[str]] = defaultdict(list)
        if self.svc is not None and self.svc.log_path is not None:
            for line in self.svc.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    obj = json.loads(line)
                    if isinstance(obj, dict) and "request_id" in obj:
                        logged[str(obj["request_id"])].append(f"{obj.get('event')} ({obj.get('reason', '-')})")
        print(f"  {label}:", flush=True)
        for d in ids:
            reqs = "; ".join(
                f"{s.req_id} {s.cat} → {s.status if s.status > 0 else s.error} after {s.service_ms:.0f} ms "
                f"(sent {s.fired - self.t_flood:+.1f} s into the flood)"
                + (f", bridge log: {logged[s.req_id]}" if logged.get(s.req_id) else "")
                for s in sorted(by_id[d], key=lambda x: x.fired)
            )
            recs = ", ".join(f"{r} at {where.get(r, '?')}" for r in events.get(d, []))
            text = (
                f"id {d[:40]}: expected fan-out {by_id[d][0].fanout}; records: [{recs}]; dead letters "
                f"{dead.get(d, 0)}; requests: {reqs}"
            )
            print(f"    {text}", flush=True)
            self.details.append(f"{label} — {text}")

    # -- process lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        from bridge_devtools.broker import LocalBroker, free_port

        self.broker = LocalBroker(jvm_opts=BROKER_JVM_OPTS)
        print(f"starting Kafka {self.broker.version} ...", flush=True)
        self.broker.start(timeout_s=180)
        self.warm_broker(self.args.warm_broker_records)
        port = free_port()
        env = {
            "BRIDGE_LARK_VERIFICATION_TOKEN": TOKEN,
            "BRIDGE_LARK_ENCRYPT_KEY": KEY,
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "BRIDGE_HTTP_HOST": "127.0.0.1",
            "BRIDGE_HTTP_PORT": str(port),
            "BRIDGE_LOG_LEVEL": "WARNING",
        }
        env.update(kv.split("=", 1) for kv in self.args.bridge_env)
        self.svc = tools.Service(
            "bridge", "python -m bridge serve", [sys.executable, "-m", "bridge", "serve"], port, env, core=SERVICE_CORE
        )
        self.svc.start(self.work)
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + PATH
        print(
            f"bridge pid {self.svc.pid} on {self.url} (cores {tools.cpus_allowed(self.svc.pid)}); broker pid "
            f"{self.broker.pid} {self.broker.bootstrap_servers}; runner cores {sorted(os.sched_getaffinity(0))}; "
            f"work dir {self.work}",
            flush=True,
        )

    def warm_broker(self, records: int) -> None:
        """Produce ``records`` ~1 KB records to a topic of its own (idempotent, acks=all, like the bridge;
        as ``benchmarks.run`` does) so that the broker's JIT has compiled its produce path first."""
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        if records <= 0:
            return

        async def produce() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap_servers)
            await admin.start()
            try:
                await admin.create_topics([NewTopic("stress.warmup", num_partitions=12, replication_factor=1)])
            finally:
                await admin.close()
            await asyncio.sleep(1)  # leaders of the new partitions
            producer = AIOKafkaProducer(
                bootstrap_servers=self.broker.bootstrap_servers, enable_idempotence=True, acks="all", linger_ms=0
            )
            await producer.start()
            try:
                value = b"x" * 1000
                for start in range(0, records, 500):
                    futs = [
                        await producer.send("stress.warmup", value, key=b"%d" % (i % 1000))
                        for i in range(start, min(records, start + 500))
                    ]
                    await asyncio.gather(*futs)
            finally:
                await producer.stop()

        t0 = time.monotonic()
        asyncio.run(asyncio.wait_for(produce(), 300))
        tools.wait_idle(self.broker.pid, threshold=0.1, timeout_s=30)
        print(f"broker warmed up with {records:,} records in {time.monotonic() - t0:.1f} s", flush=True)

    def stop(self) -> None:
        """SIGTERM the bridge (exit code, time), log stats; stop the broker."""
        if self.frozen and self.broker is not None and self.broker.pid:
            os.kill(self.broker.pid, signal.SIGCONT)
        if self.svc is not None and self.svc.proc is not None:
            print("\n== 6. end: SIGTERM to the bridge", flush=True)
            t0 = time.monotonic()
            code = self.svc.stop(timeout_s=40)
            self.r["exit"] = {"code": code, "seconds": time.monotonic() - t0}
            print(f"  exit code {code} after {self.r['exit']['seconds']:.1f} s", flush=True)
            self.log_stats()
        if self.broker is not None:
            self.broker.stop()
            self.broker.cleanup()

    def log_stats(self) -> None:
        assert self.svc is not None
        assert self.svc.log_path is not None
        data = self.svc.log_path.read_bytes()
        lines = data.splitlines()
        levels: Counter[str] = Counter()
        events: Counter[str] = Counter()
        by_req: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                levels["(not json)"] += 1
                continue
            if not isinstance(obj, dict):
                continue
            levels[str(obj.get("level"))] += 1
            events[str(obj.get("event"))[:80]] += 1
            if "request_id" in obj:
                by_req[str(obj["request_id"])].append(obj)
        self.r["log"] = {
            "bytes": len(data),
            "lines": len(lines),
            "max_line": max((len(x) for x in lines), default=0),
            "levels": dict(levels),
            "events": dict(events.most_common(12)),
        }
        lg = self.r["log"]
        print(
            f"  bridge log: {lg['bytes']:,} bytes, {lg['lines']:,} lines, longest {lg['max_line']:,} bytes; levels "
            f"{lg['levels']}",
            flush=True,
        )
        for ev_name, count in lg["events"].items():
            print(f"    {count:>6,} × {ev_name}", flush=True)
        # what the bridge logged for each request answered 500
        for s in self.sent:
            if s.status == 500:
                for obj in by_req.get(s.req_id, [])[:1]:
                    exc = str(obj.get("exception", "")).strip().splitlines()
                    self.findings.append(
                        f"bridge log for {s.req_id} ({s.cat}/{s.variant}): event {obj.get('event')!r}, "
                        f"exception {exc[-1] if exc else '-'}" + (f" at {exc[-3].strip()}" if len(exc) >= 3 else "")
                    )
                    break


def tools_probe(port: int) -> Any:
    from bridge_devtools.broker import probe

    return probe("127.0.0.1", port, timeout_s=1.0)


def fmt_cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())


def fmt_s(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f} s"


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def metric_sum(m: dict[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix) :]: v for k, v in m.items() if k.startswith(prefix) and v}


def report(st: Stress, elapsed: float, command: str) -> str:
    r = st.r
    b = r.get("baseline", {})
    fl = r.get("flood", {})
    sl = r.get("slow", {})
    fr = r.get("frozen", {})
    ch = r.get("check", {})
    end = r.get("end", {})
    lg = r.get("log", {})
    ex = r.get("exit", {})
    n500 = sum(1 for s in st.sent if s.status == 500)
    rows: list[list[str]] = []
    if b:
        rows += [
            ["1 baseline", "RSS · /metrics series · open fds", f"{mb(b['rss'])} · {b['series']} · {b['fds']}", ""],
            [
                "1 baseline",
                f"p50 / p99 of {b['n']} sequential valid events",
                f"{b['p50']:.1f} / {b['p99']:.1f} ms ({b['statuses']})",
                "",
            ],
        ]
    if fl:
        marks = " → ".join(f"{x['at']}: {mb(x['rss'])}" for x in fl["marks"])
        series = " → ".join(f"{x['at']}: {x['series']}" for x in fl["marks"])
        rows += [
            [
                "2 flood",
                "requests · achieved rate (open loop, aiohttp)",
                f"{fl['sent']:,} of {fl['n']:,} · {fl['rate']:,.0f}/s (send lateness p99 {fl['late_p99']:.1f} ms, "
                f"peak {fl['peak_inflight']} in flight)",
                f"≈ {st.args.rate:,}/s",
            ],
            ["2 flood", "answers 500", f"**{n500}**" if n500 else "0", "0"],
            ["2 flood", "CPU during the flood, cores", fmt_cpu(fl["cpu"]), ""],
            [
                "2 flood",
                "bridge-side handling time p50 / p99 (its histogram)",
                f"{fl['bridge_side'].get(0.5, '?')} / {fl['bridge_side'].get(0.99, '?')}",
                "",
            ],
            ["2 flood", "RSS at 25/50/75/100 % (a scrape that timed out is left out)", marks, "bounded"],
            ["2 flood", "/metrics series at 25/50/75/100 %", series, "bounded"],
        ]
    if sl:
        base_p99 = b.get("p99", float("nan"))
        rows += [
            [
                "3 slow clients",
                "connections (open when the normal events started → ended)",
                f"{sl['n']} ({sl['open_at_start']} → {sl['open_at_end']}; {sl['failed']} failed to open)",
                "",
            ],
            [
                "3 slow clients",
                f"p50 / p99 of {st.args.probe_events} normal events meanwhile, every answer (Δ p99 vs baseline)",
                f"{sl['p50']:.1f} / {sl['p99']:.1f} ms (Δ {sl['p99'] - base_p99:+.1f} ms; {sl['statuses']})",
                f"Δ < {LATENCY_DELTA_TARGET_MS:.0f} ms",
            ],
            [
                "3 slow clients",
                "RSS before · during · peak · after (Δ peak)",
                f"{mb(sl['rss_before'])} · {mb(sl['rss_during'])} · {mb(sl['rss_peak'])} · {mb(sl['rss_after'])} "
                f"(Δ {mb((sl['rss_peak'] or 0) - (sl['rss_before'] or 0))})",
                "Δ < 64 MB",
            ],
            [
                "3 slow clients",
                "open fds before · during · after",
                f"{sl['fds_before']} · {sl['fds_during']} · {sl['fds_after']}",
                "",
            ],
        ]
        for kind, k in sl["kinds"].items():
            rows.append(
                [
                    "3 slow clients",
                    f"{kind}: closed by the bridge within {SLOW_CLOSE_TARGET_S:.0f} s (min / median / max)",
                    f"{k['closed']} of {k['n']} ({k['closed_min']:.1f} / {k['closed_med']:.1f} / "
                    f"{k['closed_max']:.1f} s); answers {k['answers']}",
                    "all",
                ]
            )
    if fr:
        rows += [
            [
                "4 broker frozen",
                f"{fr['n']} events during a {fr['freeze_s']:.1f} s SIGSTOP: answers · max latency",
                f"{fr['statuses']} · {fr['max']:.0f} ms",
                f"200/503 ≤ {FROZEN_ANSWER_TARGET_S:.0f} s",
            ],
            [
                "4 broker frozen",
                "after SIGCONT: broker answers · bridge publishes · retries",
                f"{fmt_s(fr['broker_ready'])} · {fmt_s(fr['bridge_ready'])} · {fr['retry_statuses']}",
                "",
            ],
        ]
    if ch:
        rows += [
            [
                "5 broker check",
                "records (event · dead letters) · ids answered 200",
                f"{ch['records']:,} ({ch['event_records']:,} · {ch['dead_letters']:,}) · {ch['ok_ids']:,}",
                "",
            ],
            [
                "5 broker check",
                "200 without record · wrong fan-out · dup records · >1 dead letter",
                f"{ch['missing']} · {ch['fan_bad']} · {ch['dup_records']} · {ch['dup_dead']}",
                "0 · 0 · 0 · 0",
            ],
            [
                "5 broker check",
                "published but not answered 200 (publish acked after the request's timeout)",
                f"{ch['published_not_ok']}",
                "",
            ],
        ]
    if end:
        rows += [
            [
                "6 end",
                "/metrics series: baseline → end",
                f"{b.get('series')} → {end['series']}",
                "bounded",
            ],
            ["6 end", "RSS · peak (VmHWM) · open fds", f"{mb(end['rss'])} · {mb(r.get('hwm'))} · {end['fds']}", ""],
        ]
    if lg:
        rows.append(
            [
                "6 end",
                "bridge log (stdout+stderr): bytes · lines · longest line",
                f"{lg['bytes']:,} · {lg['lines']:,} · {lg['max_line']:,} B",
                "",
            ]
        )
    if ex:
        rows.append(["6 end", "SIGTERM: exit code · time to exit", f"{ex['code']} · {ex['seconds']:.1f} s", "0"])
    main = md_table(["Phase", "Measure", "Result", "Target"], rows)
    cat_rows = []
    flood = [s for s in st.sent if s.req_id.startswith("flood-")]
    for c in CATEGORIES:
        group = [s for s in flood if s.cat == c.name]
        if not group:
            continue
        lat = [s.service_ms for s in group if s.status > 0]
        wire = [s.wire_ms for s in group if s.status > 0 and s.wrote]
        unexpected = sum(1 for s in group if s.status not in s.expected)
        n5 = sum(1 for s in group if s.status == 500)
        cat_rows.append(
            [
                f"`{c.name}`",
                f"{len(group):,}",
                statuses(group),
                f"{pct(lat, 50):.1f} / {pct(lat, 99):.1f}",
                f"{pct(wire, 50):.1f} / {pct(wire, 99):.1f}",
                "/".join(str(x) for x in sorted(set().union(*(s.expected for s in group)))),
                f"{unexpected:,}",
                f"**{n5}**" if n5 else "0",
            ]
        )
    cats = md_table(
        ["Category", "Sent", "Answers", "p50 / p99 ms", "from headers written", "Expected", "Unexpected", "500s"],
        cat_rows,
    )
    var_rows = []
    for cn in ("nested", "invalid_utf8", "gzip", "oversize", "unknown_type_50kb", "duplicate"):
        by_var: dict[str, list[Sent]] = defaultdict(list)
        for s in flood:
            if s.cat == cn:
                by_var[s.variant].append(s)
        var_rows += [[f"`{cn}/{v}`", f"{len(g):,}", statuses(g)] for v, g in sorted(by_var.items())]
    variants = md_table(["Category / variant", "Sent", "Answers"], var_rows)
    became_rows = [
        [f"`{k}`", ", ".join(f"{what} {n:,}" for what, n in sorted(v.items(), key=lambda kv: -kv[1]))]
        for k, v in ch.get("became", {}).items()
    ]
    became = md_table(["Category / variant (answered 200)", "In Kafka"], became_rows) if became_rows else ""
    fm = fl.get("metrics", {})
    bm = b.get("metrics", {})

    def delta(prefix: str) -> str:
        now, before = metric_sum(fm, prefix), metric_sum(bm, prefix)
        d = {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}
        return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"

    counters = [
        f"* `bridge_requests_total` during the flood: {delta('bridge_requests_total')}",
        f"* `bridge_auth_failures_total`: {delta('bridge_auth_failures_total')}",
        f"* `bridge_dead_letters_total`: {delta('bridge_dead_letters_total')}",
        f"* `bridge_duplicates_suppressed_total`: {delta('bridge_duplicates_suppressed_total')}",
    ]
    find = "\n".join(f"* {x}" for x in st.findings) if st.findings else "* none"
    if st.details:
        find += "\n\nEvidence (broker check):\n\n" + "\n".join(f"* {x}" for x in st.details)
    notes = "\n".join(f"* {x}" for x in st.notes)
    what = "\n".join(f"* `{c.name}` ({c.weight} %): {c.what}" for c in CATEGORIES)
    mach = tools_machine()
    return f"""{TITLE}

Run {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}: `{command}` — {elapsed / 60:.1f} min; {mach}; bridge
{st.r.get("revision", "?")}. The bridge (`python -m bridge serve`, encrypt key, `BRIDGE_LOG_LEVEL=WARNING`,
default limits) on core {SERVICE_CORE}; the local Kafka broker, this runner and its aiohttp client on core
{LOAD_CORE}. Latencies are client-side, from the write of the request to the whole answer (the flood's
from-due-time lateness is in the table).

{main}

Flood answers per category ({st.args.requests:,} requests, open loop at {st.args.rate:,}/s):

{cats}

{variants}

{chr(10).join(counters)}

What the non-`valid` requests answered 200 became (found by event id in the broker check, or — a dead
letter of an event without a readable event id — by `sha256:` of the plaintext sent; "no id" ones are
neither, counted above):

{became}

Categories:

{what}

Findings (any 500, any target missed, anything that failed a check):

{find}
{notes}
"""


def tools_machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"nproc {os.cpu_count()} ({cpu}), Python {pyplatform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"Linux {pyplatform.release()}"
    )


def revision() -> str:
    """HEAD and a hash of bridge/*.py as measured (read-only git; no index refresh)."""
    h = hashlib.sha256()
    for p in sorted((tools.REPO / "bridge").rglob("*.py")):
        h.update(p.relative_to(tools.REPO).as_posix().encode() + b"\0" + p.read_bytes())
    try:
        rev = subprocess.run(
            ["git", "--no-optional-locks", "rev-parse", "--short", "HEAD"],
            cwd=tools.REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "?"
    return f"commit {rev}, bridge/*.py sha256 {h.hexdigest()[:12]}"


def write_md(section: str) -> None:
    text = BENCHMARKS_MD.read_text()
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    BENCHMARKS_MD.write_text(text)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

#: (flag, full-run default, --quick default)
SCALED: Final = {
    "requests": (100_000, 5_000),
    "probe_events": (200, 50),
    "warmup_events": (3000, 500),
    "warm_broker_records": (60_000, 10_000),
    "slow_conns": (500, 26),
    "freeze_events": (50, 10),
    "freeze_s": (8.0, 5.0),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.stress", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="a ~20x smaller smoke run (1-2 min); does not write BENCHMARKS.md"
    )
    p.add_argument("--requests", type=int, help="flood requests (default 100,000; --quick 5,000)")
    p.add_argument("--rate", type=int, default=1000, help="flood rate, requests/s (default 1,000)")
    p.add_argument("--max-in-flight", type=int, default=3000, help="flood: most requests in flight (default 3,000)")
    p.add_argument("--max-conns", type=int, default=1000, help="flood: most client connections (default 1,000)")
    p.add_argument("--probe-events", type=int, help="sequential valid events measured (default 200; --quick 50)")
    p.add_argument("--warmup-events", type=int, help="warm-up events before the baseline (3,000; --quick 500)")
    p.add_argument(
        "--warm-broker-records", type=int, help="records produced to warm the broker up (60,000; --quick 10,000)"
    )
    p.add_argument("--warmup-rate", type=int, default=500, help="warm-up rate, events/s (default 500)")
    p.add_argument(
        "--slow-conns", type=int, help="slow-client connections, half of each kind (default 500; --quick 26)"
    )
    p.add_argument(
        "--stall-content-length",
        type=int,
        default=MAX_BODY,
        help="stalled bodies' Content-Length (default 1 MiB, the largest body accepted)",
    )
    p.add_argument("--stall-body-bytes", type=int, default=512 * 1024, help="bytes of the body sent before stalling")
    p.add_argument("--slow-watch-s", type=float, default=30.0, help="how long slow connections are watched (30 s)")
    p.add_argument("--freeze-events", type=int, help="events sent while the broker is frozen (default 50; --quick 10)")
    p.add_argument("--freeze-s", type=float, help="seconds the broker is frozen (default 8; --quick 5)")
    p.add_argument("--nest-depth", type=int, default=5000, help="nesting depth of the nested bodies (default 5,000)")
    p.add_argument("--client-timeout-s", type=float, default=10.0, help="client timeout per request (default 10 s)")
    p.add_argument("--check-timeout-s", type=float, default=300.0, help="longest read of the topics (default 300 s)")
    p.add_argument("--max-runtime-s", type=float, default=1800.0, help="the whole run's bound (default 30 min)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--categories",
        default=",".join(CATEGORY_NAMES),
        help="comma-separated flood categories (default: all, weighted as in the docstring's table)",
    )
    p.add_argument("--skip", default="", help="comma-separated phases to leave out: flood, slow, frozen (experiments)")
    p.add_argument(
        "--bridge-env", action="append", default=[], metavar="BRIDGE_X=V", help="an extra setting of the bridge"
    )
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None, help="write BENCHMARKS.md")
    p.add_argument("--keep", action="store_true", help="keep the work dir (bridge log, 500 bodies) even when clean")
    args = p.parse_args(argv)
    for name, (full, quick) in SCALED.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.categories = [c for c in args.categories.split(",") if c]
    args.skip = {x for x in args.skip.split(",") if x}
    if args.skip - {"flood", "slow", "frozen"}:
        p.error("--skip takes flood, slow and/or frozen")
    if unknown := set(args.categories) - set(CATEGORY_NAMES):
        p.error(f"unknown categories: {', '.join(sorted(unknown))}")
    if args.write is None:
        args.write = not args.quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    cores = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) >= 2 and {SERVICE_CORE, LOAD_CORE} <= cores:
        os.sched_setaffinity(0, {LOAD_CORE})  # the runner, and the broker it starts
    with contextlib.suppress(ValueError, OSError):
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    command = ("python -m benchmarks.stress " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    st = Stress(args)
    st.r["revision"] = revision()
    t0 = time.monotonic()
    try:
        st.start()
        asyncio.run(asyncio.wait_for(st.phases(), args.max_runtime_s))
    except TimeoutError:
        st.finding(f"the run exceeded --max-runtime-s {args.max_runtime_s:.0f} s and was cut short")
    finally:
        st.stop()
    elapsed = time.monotonic() - t0
    ex = st.r.get("exit", {})
    if ex.get("code") not in (0, None):
        st.finding(f"the bridge exited with code {ex.get('code')} after SIGTERM")
    if st.r.get("end") and st.r.get("baseline"):
        grow = st.r["end"]["series"] - st.r["baseline"]["series"]
        marks = st.r.get("flood", {}).get("marks", [])
        if len(marks) >= 2 and marks[-1]["series"] > marks[1]["series"] + 20:
            st.finding(
                f"/metrics series still growing through the flood: {' → '.join(str(m['series']) for m in marks)}"
            )
        st.notes.append(f"/metrics series grew by {grow} from the baseline to the end")
    with contextlib.suppress(OSError), open(st.work / "sent.jsonl", "w") as f:
        for s in st.sent:
            row = {k: getattr(s, k) for k in ("req_id", "cat", "variant", "status", "error", "fanout", "note")}
            row.update(
                did=(s.did or "")[:64], key=s.key, fired=round(s.fired - st.t_flood, 4), ms=round(s.service_ms, 2)
            )
            f.write(json.dumps(row) + "\n")
    text = report(st, elapsed, command)
    print("\n" + text, flush=True)
    print(f"work dir: {st.work}" + (" (500 bodies in findings/)" if st.saved_500 else ""), flush=True)
    if args.write:
        write_md(text)
        print(f"wrote {BENCHMARKS_MD.relative_to(tools.REPO)}", flush=True)
    if not args.keep and not st.saved_500 and not st.findings:
        shutil.rmtree(st.work, ignore_errors=True)
    print(f"run time {elapsed / 60:.1f} min; {len(st.findings)} finding(s)", flush=True)
    return 1 if st.findings else 0


if __name__ == "__main__":
    sys.exit(main())
