"""Dead-letter replay, the pure parts: a dead letter read back, today's records of its payload,
the selection filters and the CLI's argument parsing and table."""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from typing import Any

import pytest

from bridge import envelope as ev
from bridge.cli_dead_letters import UsageError, parse_offsets, parse_time_ms, selection_of, table
from bridge.dead_letters import REPLAYED_HEADER, DeadLetter, Selection, _dead_letter, records_of
from bridge.decode import decode
from bridge.errors import DeadLetterCause
from bridge.inbound import read_inbound
from bridge.normalize import Topics, dead_letter, normalize
from bridge_devtools.platform import compact
from tests.support.credentials import TOKEN
from tests.support.samples import fresh_id, sample_event

TOPICS = Topics.from_names(
    room_created="room",
    room_updated="room_updated",
    room_deleted="room_deleted",
    room_level_created="level_created",
    room_level_updated="level_updated",
    room_level_deleted="level_deleted",
    reserve_config_updated="cfg",
    third_party="3p",
    dead_letter="dlq",
)


@dataclass
class Message:
    """What aiokafka's consumer hands out, as far as a dead letter needs it."""

    value: bytes
    partition: int = 2
    offset: int = 41
    timestamp: int = 1_700_000_000_000
    headers: tuple[tuple[str, bytes], ...] = ()


def read_back(payload: dict[str, Any], failure: DeadLetterCause, *, carry_payload: bool = True) -> DeadLetter:
    """The dead letter the live bridge would write for ``payload``, as the replay reads it."""
    record = dead_letter(
        read_inbound(compact(payload)),
        failure,
        received_ms=1_700_000_000_000,
        topics=TOPICS,
        carry_payload=carry_payload,
    )
    dl = _dead_letter("dlq", Message(record.value, headers=record.headers))
    assert dl is not None
    return dl


@pytest.mark.parametrize("kind", [ev.ROOM_CREATED, ev.RESERVE_CONFIG_UPDATED, ev.THIRD_PARTY_CREATED])
def test_a_replayed_payload_gives_the_live_bridges_records_plus_where_they_came_from(kind: str) -> None:
    payload = sample_event(kind, event_id=fresh_id())
    live = normalize(decode(read_inbound(compact(payload))), TOPICS)
    dl = read_back(payload, DeadLetterCause("unknown_event_type", "not modelled then", "$.header.event_type"))
    assert dl.event_id == live[0].event_id and dl.where == "dlq/2/41"
    assert TOKEN not in str(dl.payload)  # the dead letter carries the payload with its token redacted
    replayed = records_of(dl, TOPICS, 1 << 20)
    assert [(r.topic, r.key, r.value) for r in replayed] == [(r.topic, r.key, r.value) for r in live]
    assert [r.headers for r in replayed] == [(*r.headers, (REPLAYED_HEADER, b"dlq/2/41")) for r in live]


def test_what_still_fails_says_why_and_a_payload_not_carried_cannot_be_replayed() -> None:
    unknown = sample_event(ev.ROOM_CREATED, event_id=fresh_id())
    unknown["header"]["event_type"] = "im.message.receive_v1"
    dl = read_back(unknown, DeadLetterCause("unknown_event_type", "x", "$.header.event_type"))
    with pytest.raises(DeadLetterCause) as failure:
        records_of(dl, TOPICS, 1 << 20)
    assert failure.value.reason == "unknown_event_type"
    big = read_back(sample_event(ev.ROOM_CREATED), DeadLetterCause("record_too_large", "x", "$"), carry_payload=False)
    assert big.payload == {}
    with pytest.raises(DeadLetterCause, match="payload not carried"):
        records_of(big, TOPICS, 1 << 20)
    fine = read_back(sample_event(ev.ROOM_CREATED), DeadLetterCause("invalid_event", "x", "$"))
    with pytest.raises(DeadLetterCause) as too_large:
        records_of(fine, TOPICS, 100)
    assert too_large.value.reason == "record_too_large"


def test_records_that_are_not_dead_letters_are_skipped() -> None:
    assert _dead_letter("dlq", Message(b"not json")) is None
    assert _dead_letter("dlq", Message(b'{"specversion":"1.0"}')) is None


def test_selection_filters_by_reason_type_and_time() -> None:
    dl = read_back(sample_event(ev.ROOM_CREATED), DeadLetterCause("invalid_event", "x", "$"))
    assert Selection().admits(dl)
    assert Selection(reasons=frozenset({"invalid_event"}), types=frozenset({ev.ROOM_CREATED})).admits(dl)
    assert not Selection(reasons=frozenset({"unknown_event_type"})).admits(dl)
    assert not Selection(types=frozenset({ev.RESERVE_CONFIG_UPDATED})).admits(dl)
    assert Selection(since_ms=dl.timestamp_ms, until_ms=dl.timestamp_ms + 1).admits(dl)
    assert not Selection(until_ms=dl.timestamp_ms).admits(dl)  # exclusive


def test_cli_arguments() -> None:
    assert parse_offsets(["0:10-20", "3:5"]) == {0: (10, 20), 3: (5, None)}
    for bad in ("x:1", "1", "1:5-5", "-1:0", "1:a-b"):
        with pytest.raises(UsageError, match="--offsets"):
            parse_offsets([bad])
    assert parse_time_ms("2023-11-14T22:13:20Z", "--since") == 1_700_000_000_000
    assert parse_time_ms("2023-11-15T06:13:20+08:00", "--since") == 1_700_000_000_000
    assert parse_time_ms("2023-11-14T22:13:20", "--until") == 1_700_000_000_000  # no offset: UTC
    with pytest.raises(UsageError, match="--until"):
        parse_time_ms("yesterday", "--until")
    args = argparse.Namespace(reason=["invalid_event"], types=[], since="2023-11-14T22:13:20Z", until=None, offsets=[])
    assert selection_of(args) == Selection(reasons=frozenset({"invalid_event"}), since_ms=1_700_000_000_000)


def test_the_table_keeps_hostile_cells_on_one_short_line() -> None:
    out = io.StringIO()
    table([["a\nb\x1b[31m", "x" * 500]], ("first", "second"), out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\x1b" not in out.getvalue() and max(len(line) for line in lines) < 120
