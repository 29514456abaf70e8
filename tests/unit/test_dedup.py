"""Dedup window: TTL, bound, in-flight futures."""

from __future__ import annotations

import asyncio

import pytest

from bridge.dedup import LOCAL, LOG, MAX_PARTIAL, DeliveryLedger


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_marked_ids_are_remembered_for_the_ttl() -> None:
    clock = Clock()
    ledger = DeliveryLedger(ttl_s=640, max_entries=100, clock=clock)
    ledger.mark_delivered("a")
    clock.now += 10
    ledger.mark_delivered("b")
    assert ledger.delivered("a") and ledger.delivered("b") and not ledger.delivered("c")
    clock.now = 1640  # "a" is exactly ttl old: remembered (buckets of ttl/64 = 10 s)
    assert ledger.delivered("a") and ledger.delivered("b")
    clock.now = 1650  # "a" is ttl + one bucket old: gone; "b" is ttl old
    assert not ledger.delivered("a") and ledger.delivered("b")
    clock.now = 1660
    assert not ledger.delivered("b") and len(ledger) == 0


def test_bound_evicts_the_oldest_first() -> None:
    clock = Clock()
    ledger = DeliveryLedger(ttl_s=6400, max_entries=3, clock=clock)
    for i in range(5):
        ledger.mark_delivered(f"id-{i}")
        clock.now += 200  # each in its own bucket
    assert len(ledger) == 3
    assert [ledger.delivered(f"id-{i}") for i in range(5)] == [False, False, True, True, True]


def test_marking_twice_is_idempotent() -> None:
    ledger = DeliveryLedger(ttl_s=100, max_entries=10)
    ledger.mark_delivered("x")
    ledger.mark_delivered("x")
    assert len(ledger) == 1


async def test_in_flight_future_resolves_for_waiters() -> None:
    ledger = DeliveryLedger(ttl_s=100, max_entries=10)
    fut = ledger.begin("x")
    assert ledger.in_flight("x") is fut and not ledger.delivered("x")
    with pytest.raises(RuntimeError):
        ledger.begin("x")
    waiter = asyncio.ensure_future(asyncio.shield(fut))
    ledger.mark_delivered("x")  # what the publish does before it ends the in-flight entry
    ledger.finish("x", delivered=True)
    assert await waiter is True and ledger.delivered("x") and ledger.in_flight("x") is None


async def test_ending_a_delivery_marks_nothing_by_itself() -> None:
    ledger = DeliveryLedger(ttl_s=100, max_entries=10)
    for delivered in (False, True):
        fut = ledger.begin("x")
        ledger.finish("x", delivered=delivered)
        assert fut.result() is delivered and not ledger.delivered("x") and ledger.in_flight("x") is None


def test_at_capacity_the_oldest_id_goes_first_even_within_one_bucket() -> None:
    ledger = DeliveryLedger(3600, 3, clock=lambda: 0.0)  # every mark falls in the same bucket
    for event_id in ("a", "b", "c", "d"):
        ledger.mark_delivered(event_id)
    assert [ledger.delivered(x) for x in ("a", "b", "c", "d")] == [False, True, True, True]
    ledger.mark_delivered("e")
    assert ledger.delivered("e") and not ledger.delivered("b") and len(ledger) == 3


def test_marked_by_keeps_the_first_source() -> None:
    from bridge.dedup import LOCAL, LOG

    ledger = DeliveryLedger(3600, 10, clock=lambda: 0.0)
    ledger.mark_delivered("mine")
    ledger.mark_delivered("mine", source=LOG)  # this process's own record, read back
    ledger.mark_delivered("theirs", source=LOG)
    assert (ledger.marked_by("mine"), ledger.marked_by("theirs"), ledger.marked_by("nobody")) == (LOCAL, LOG, None)


def test_a_fan_out_is_delivered_once_every_record_is_written_in_any_order() -> None:
    ledger = DeliveryLedger(ttl_s=640, max_entries=100, clock=Clock())
    ledger.mark_written("f", [2], 3, source=LOG)
    ledger.mark_written("f", [0], 3, source=LOG)
    assert not ledger.delivered("f") and ledger.written("f", 3) == 0b101
    assert ledger.written("f", 4) == 0  # parts of another count are not this event's
    ledger.mark_written("f", [0, 2], 3)  # seen again: nothing new
    assert not ledger.delivered("f")
    ledger.mark_written("f", [1], 3)
    assert ledger.delivered("f") and ledger.marked_by("f") == LOCAL and ledger.written("f", 3) == 0
    ledger.mark_written("g", [0], 1, source=LOG)  # one record of one: delivered at once
    assert ledger.marked_by("g") == LOG


def test_partly_written_events_are_bounded_and_forgotten_after_the_ttl() -> None:
    clock = Clock()
    ledger = DeliveryLedger(ttl_s=640, max_entries=100, clock=clock)
    ledger.mark_written("old", [0], 2)
    clock.now += 641
    assert ledger.written("old", 2) == 0
    for i in range(MAX_PARTIAL + 5):
        ledger.mark_written(f"p{i}", [1], 2)
    assert len(ledger._partial) == MAX_PARTIAL
    assert ledger.written("p0", 2) == 0 and ledger.written(f"p{MAX_PARTIAL + 4}", 2) == 0b10
    assert len(ledger) == 0  # partial events are not delivered ones


def test_fingerprint_set_matches_a_reference_through_collisions_wraparound_and_growth() -> None:
    """Crafted values crowd a few home slots (long probe runs, runs wrapping past the table's
    end) while adds and oldest-first removals interleave; after every step the table holds
    exactly the reference's values, and growth past 512 entries keeps them."""
    import random
    from collections import deque

    from bridge.dedup import FingerprintSet

    rng = random.Random(7)
    ids = FingerprintSet()
    reference: deque[int] = deque()
    homes = [0, 1, 2, 1021, 1022, 1023]  # at both ends of the initial 1,024 slots

    def value() -> int:
        return ((rng.randrange(1, 1 << 40) << 10 | rng.choice(homes)) << 1) | rng.randrange(2)

    for step in range(6000):
        if reference and rng.random() < (0.3 if step < 4000 else 0.7):
            assert ids.oldest() == reference[0]
            ids.pop_oldest()
            reference.popleft()
        else:
            v = value()
            assert ids.add(v) is True
            assert ids.add(v ^ 1) is False  # bit 0 is the source, not part of the fingerprint
            reference.append(v)
        if step % 50 == 0 or len(reference) < 8:
            assert len(ids) == len(reference)
            assert all(ids.find(v) == v for v in reference)
            assert all(ids.find(value()) == 0 for _ in range(20))
    assert len(ids) == len(reference) > 512
    while reference:
        ids.pop_oldest()
        reference.popleft()
    assert len(ids) == 0
    with pytest.raises(IndexError):
        ids.pop_oldest()
