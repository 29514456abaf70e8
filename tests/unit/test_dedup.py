"""Dedup window: TTL, bound, in-flight futures."""

from __future__ import annotations

import asyncio

import pytest

from bridge.dedup import DeliveryLedger


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
    ledger.finish("x", delivered=True)
    assert await waiter is True and ledger.delivered("x") and ledger.in_flight("x") is None


async def test_failed_delivery_is_not_marked() -> None:
    ledger = DeliveryLedger(ttl_s=100, max_entries=10)
    fut = ledger.begin("x")
    ledger.finish("x", delivered=False)
    assert fut.result() is False and not ledger.delivered("x")


def test_at_capacity_the_oldest_id_goes_first_even_within_one_bucket() -> None:
    ledger = DeliveryLedger(3600, 3, clock=lambda: 0.0)  # every mark falls in the same bucket
    for delivery_id in ("a", "b", "c", "d"):
        ledger.mark_delivered(delivery_id)
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
