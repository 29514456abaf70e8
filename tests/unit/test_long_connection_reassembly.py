"""Split-message reassembly (docs/long_connection.md §5, bounds §9.1) as a pure state machine:
parts in, complete messages / refusals / nothing out, time from a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.ingress.reassembly import (
    MAX_PARTIAL_MESSAGES,
    MAX_PARTS,
    PARTIAL_TTL_S,
    Complete,
    Reassembler,
    Refused,
)

LIMIT = 100


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def part(seq: int, total: int, message_id: str = "m1", **extra: str) -> dict[str, str]:
    return {"type": "event", "message_id": message_id, "sum": str(total), "seq": str(seq), **extra}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def evicted() -> list[int]:
    return []


@pytest.fixture
def r(clock: Clock, evicted: list[int]) -> Reassembler:
    return Reassembler(LIMIT, clock, on_evict=lambda: evicted.append(1))


def test_a_whole_message_completes_at_once_with_its_arrival(r: Reassembler) -> None:
    assert r.add(part(0, 1), b"{}", received_ms=1_700_000_000_123) == Complete(b"{}", 1000.0, 1_700_000_000_123)
    assert len(r) == 0


def test_missing_sum_and_seq_default_to_one_whole_part(r: Reassembler) -> None:
    assert r.add({"type": "event"}, b"{}", received_ms=5) == Complete(b"{}", 1000.0, 5)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"sum": "0", "seq": "0"}, "sum below 1"),
        ({"sum": str(MAX_PARTS + 1), "seq": "0"}, "sum above MAX_PARTS"),
        ({"sum": "-1", "seq": "0"}, "negative sum"),
        ({"sum": "2", "seq": "2"}, "seq not below sum"),
        ({"sum": "2", "seq": "-1"}, "negative seq"),
        ({"sum": "1", "seq": "1"}, "seq 1 of a whole message"),
        ({"sum": "two", "seq": "0"}, "sum not an integer"),
        ({"sum": "2", "seq": "0.5"}, "seq not an integer"),
        ({"sum": "", "seq": "0"}, "empty sum"),
        ({"sum": "2", "seq": "0", "message_id": ""}, "split message without message_id"),
        ({"sum": "2", "seq": "0"}, "split message with no message_id header at all"),
    ],
)
def test_bad_split_headers_are_refused_at_once(r: Reassembler, headers: dict[str, str], why: str) -> None:
    assert r.add(headers, b"{}", received_ms=7) == Refused("bad_split", 1000.0, 7), why
    assert len(r) == 0


def test_max_parts_is_allowed(r: Reassembler) -> None:
    for seq in range(MAX_PARTS - 1):
        assert r.add(part(seq, MAX_PARTS), b"x", received_ms=seq) is None
    done = r.add(part(MAX_PARTS - 1, MAX_PARTS), b"y", received_ms=99)
    assert done == Complete(b"x" * (MAX_PARTS - 1) + b"y", 1000.0, 0)


def test_parts_out_of_order_join_in_seq_order_with_the_first_arrival(r: Reassembler, clock: Clock) -> None:
    assert r.add(part(2, 3), b"C", received_ms=10) is None
    clock.now += 1
    assert r.add(part(0, 3), b"A", received_ms=20) is None
    clock.now += 1
    assert r.add(part(1, 3), b"B", received_ms=30) == Complete(b"ABC", 1000.0, 10)
    assert len(r) == 0


def test_a_repeated_part_changes_nothing_and_the_first_copy_wins(r: Reassembler) -> None:
    assert r.add(part(0, 2), b"A", received_ms=1) is None
    assert r.add(part(0, 2), b"Z", received_ms=2) is None
    assert len(r) == 1
    assert r.add(part(1, 2), b"B", received_ms=3) == Complete(b"AB", 1000.0, 1)


def test_messages_are_kept_apart_by_message_id(r: Reassembler) -> None:
    assert r.add(part(0, 2, "a"), b"a0", received_ms=1) is None
    assert r.add(part(0, 2, "b"), b"b0", received_ms=2) is None
    assert r.add(part(1, 2, "b"), b"b1", received_ms=3) == Complete(b"b0b1", 1000.0, 2)
    assert r.add(part(1, 2, "a"), b"a1", received_ms=4) == Complete(b"a0a1", 1000.0, 1)


def test_the_same_message_id_with_another_sum_starts_over(r: Reassembler) -> None:
    assert r.add(part(0, 3), b"old", received_ms=1) is None
    assert r.add(part(0, 2), b"A", received_ms=2) is None
    assert len(r) == 1
    assert r.add(part(1, 2), b"B", received_ms=3) == Complete(b"AB", 1000.0, 2)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([(0, 2, LIMIT + 1)], Refused("too_large", 1000.0, 0)),  # one part already over
        ([(0, 3, 60), (1, 3, 41)], Refused("too_large", 1000.0, 0)),  # over midway, before the last part
        ([(0, 2, 60), (1, 2, 40)], Complete(b"a" * 100, 1000.0, 0)),  # exactly the limit
    ],
)
def test_the_payload_limit_counts_every_part_received(r: Reassembler, parts: list[Any], expected: Any) -> None:
    result: Any = None
    for i, (seq, total, size) in enumerate(parts):
        result = r.add(part(seq, total), b"a" * size, received_ms=i)
    assert result == expected
    assert len(r) == 0  # refused or complete: forgotten either way


def test_a_whole_message_over_the_limit_is_refused(r: Reassembler) -> None:
    assert r.add(part(0, 1), b"a" * (LIMIT + 1), received_ms=3) == Refused("too_large", 1000.0, 3)


def test_a_message_refused_too_large_midway_starts_over_on_its_next_part(r: Reassembler) -> None:
    assert r.add(part(0, 3), b"a" * (LIMIT + 1), received_ms=1) == Refused("too_large", 1000.0, 1)
    assert r.add(part(1, 3), b"b", received_ms=2) is None  # a new partial message, not the refused one
    assert len(r) == 1


def test_the_oldest_incomplete_message_is_forgotten_beyond_the_bound(r: Reassembler, evicted: list[int]) -> None:
    for i in range(MAX_PARTIAL_MESSAGES):
        assert r.add(part(0, 2, f"m{i}"), b"x", received_ms=i) is None
    assert len(r) == MAX_PARTIAL_MESSAGES and evicted == []
    assert r.add(part(0, 2, "new"), b"x", received_ms=99) is None
    assert len(r) == MAX_PARTIAL_MESSAGES and evicted == [1]
    # m0 (the oldest) is gone: its second part starts a new message, which evicts m1
    assert r.add(part(1, 2, "m0"), b"y", received_ms=100) is None
    assert evicted == [1, 1]
    assert r.add(part(1, 2, "m2"), b"y", received_ms=101) == Complete(b"xy", 1000.0, 2)  # m2 survived


def test_the_bound_is_configurable(clock: Clock, evicted: list[int]) -> None:
    r = Reassembler(LIMIT, clock, max_partials=1, on_evict=lambda: evicted.append(1))
    assert r.add(part(0, 2, "a"), b"x", received_ms=1) is None
    assert r.add(part(0, 2, "b"), b"x", received_ms=2) is None
    assert len(r) == 1 and evicted == [1]


def test_expiry_counts_from_the_latest_part(r: Reassembler, clock: Clock) -> None:
    assert r.add(part(0, 3, "a"), b"x", received_ms=1) is None
    clock.now += 3
    assert r.add(part(1, 3, "a"), b"x", received_ms=2) is None  # a's latest part: now 1003
    assert r.add(part(0, 2, "b"), b"x", received_ms=3) is None  # b: 1003
    clock.now += 1
    assert r.add(part(0, 2, "c"), b"x", received_ms=4) is None  # c: 1004
    assert r.expire(1003 + PARTIAL_TTL_S) == 0  # exactly the TTL: kept
    assert r.expire(1003 + PARTIAL_TTL_S + 0.001) == 2  # a and b
    assert len(r) == 1
    clock.now = 1004 + PARTIAL_TTL_S + 0.001
    assert r.expire() == 1  # the injected clock's now by default
    assert len(r) == 0


def test_an_expired_message_is_forgotten_its_late_part_starts_over(r: Reassembler, clock: Clock) -> None:
    assert r.add(part(0, 2), b"A", received_ms=1) is None
    assert r.expire(clock.now + PARTIAL_TTL_S + 1) == 1
    clock.now += PARTIAL_TTL_S + 1
    assert r.add(part(1, 2), b"B", received_ms=2) is None  # no ack: the message is incomplete again


def test_the_ttl_is_configurable(clock: Clock) -> None:
    r = Reassembler(LIMIT, clock, ttl_s=0.5)
    assert r.add(part(0, 2), b"A", received_ms=1) is None
    assert r.expire(clock.now + 0.4) == 0
    assert r.expire(clock.now + 0.6) == 1
