"""The chaos harness's checker (tests/support/chaos.py, check_level) on made-up deliveries and
records: what it calls lost, duplicated (and how), partial and out of order."""

from __future__ import annotations

from tests.support.chaos import (
    READ_COMMITTED,
    Attempt,
    ChaosTopics,
    Delivery,
    DriverLog,
    Expected,
    SeenRecord,
    check_level,
)

TOPICS = ChaosTopics("t")
TAG = "abcd0123"
ROOM = TOPICS.by_kind["vc.room.created_v1"]
THIRD = TOPICS.by_kind["third_party_meeting_room_event_created"]


def delivery(n: int, *expected: Expected) -> Delivery:
    return Delivery(f"{TAG}{n:08x}{0:016x}", "kind", n, expected, {})


def record(d: Delivery, e: Expected, offset: int, ts: float, pid: int) -> SeenRecord:
    return SeenRecord(e.topic, 0, offset, e.key, d.event_id, e.part, int(ts * 1000), pid, 0, False)


def attempt(d: Delivery, number: int, replica: int, started: float, status: int | None) -> Attempt:
    return Attempt(d.event_id, number, replica, started, started + 0.5, status)


def test_exactly_once_is_clean() -> None:
    a = delivery(1, Expected(ROOM, "r1", None))
    b = delivery(2, Expected(THIRD, "r1", "0/2"), Expected(THIRD, "r2", "1/2"))
    log = DriverLog({a.event_id: a, b.event_id: b}, [attempt(a, 1, 0, 100.0, 200), attempt(b, 1, 1, 101.0, 200)])
    records = [
        record(a, a.expected[0], 0, 100.1, 7),
        record(b, b.expected[0], 0, 101.1, 8),
        record(b, b.expected[1], 1, 101.1, 8),
        SeenRecord(ROOM, 0, 9, "x", "othertag", None, 0, 1, 0, False),  # another run's: ignored
    ]
    report = check_level(log, records, READ_COMMITTED, TAG)
    assert report.records == 3
    assert not report.lost and not report.duplicates and not report.order_violations and not report.unexpected


def test_lost_partial_and_duplicates_with_their_writers() -> None:
    lost = delivery(1, Expected(THIRD, "r1", "0/2"), Expected(THIRD, "r2", "1/2"))
    partial = delivery(2, Expected(THIRD, "r3", "0/2"), Expected(THIRD, "r4", "1/2"))
    late = delivery(3, Expected(ROOM, "r5", None))
    unseen = delivery(4, Expected(ROOM, "r6", None))
    log = DriverLog(
        {d.event_id: d for d in (lost, partial, late, unseen)},
        [
            attempt(lost, 1, 0, 10.0, 200),
            attempt(partial, 1, 0, 10.0, 503),
            attempt(late, 1, 0, 10.0, 503),
            attempt(late, 2, 1, 14.0, 200),
            attempt(unseen, 1, 1, 10.0, 503),
            attempt(unseen, 2, 0, 14.0, 200),
        ],
    )
    records = [
        record(lost, lost.expected[0], 0, 10.1, 100),  # 1/2 missing
        record(partial, partial.expected[0], 1, 10.1, 100),  # never 200'd, one of two
        record(late, late.expected[0], 3, 10.1, 100),  # try 1's copy lands after try 2's
        record(late, late.expected[0], 2, 14.1, 200),
        record(unseen, unseen.expected[0], 4, 10.1, 200),  # try 1's copy first, try 2 wrote again
        record(unseen, unseen.expected[0], 5, 14.1, 100),
    ]
    report = check_level(log, records, READ_COMMITTED, TAG)
    assert report.lost == {lost.event_id: 1}
    assert report.partial_unanswered == {partial.event_id: 1}
    assert report.extra_records == 2
    assert {d.event_id: d.pattern for d in report.duplicates} == {
        late.event_id: "late+other-replica",
        unseen.event_id: "unseen+other-replica",
    }
    copies = {d.event_id: d.copies for d in report.duplicates}
    assert [(c.offset, c.replica, c.attempt, c.answer, c.pid_replica) for c in copies[late.event_id]] == [
        (2, 1, 2, 200, 1),
        (3, 0, 1, 503, 0),
    ]
    assert report.summary()["duplicate_patterns"] == {"late+other-replica": 1, "unseen+other-replica": 1}


def test_per_key_order() -> None:
    first = delivery(1, Expected(ROOM, "r1", None))
    second = delivery(2, Expected(ROOM, "r1", None))
    log = DriverLog(
        {first.event_id: first, second.event_id: second},
        [attempt(first, 1, 0, 10.0, 200), attempt(second, 1, 1, 12.0, 200)],  # first answered before second sent
    )
    records = [record(first, first.expected[0], 5, 10.1, 1), record(second, second.expected[0], 4, 12.1, 2)]
    report = check_level(log, records, READ_COMMITTED, TAG)
    assert len(report.order_violations) == 1


def test_order_check_matches_every_pair() -> None:
    """The per-key order check (linear pre-filter, then pairs) flags exactly the pairs a
    comparison of every pair flags, in the same order."""
    import random

    rng = random.Random(3)
    ds = [delivery(n, Expected(ROOM, "r1", None)) for n in range(200)]
    attempts, records = [], []
    for d in ds:
        sent = rng.uniform(0, 100)
        attempts.append(Attempt(d.event_id, 1, 0, sent, sent + rng.uniform(0.01, 3), 200))
        records.append(record(d, d.expected[0], rng.randrange(10_000), sent + 0.01, 1))
    log = DriverLog({d.event_id: d for d in ds}, attempts)
    report = check_level(log, records, READ_COMMITTED, TAG)
    items = [(a.ended, a.started, r.offset, a.event_id) for a, r in zip(attempts, records, strict=True)]
    expected = [
        f"{ROOM} r1: {a_id}@{a_off} answered before {b_id}@{b_off}"
        for a_ok, _, a_off, a_id in items
        for _, b_sent, b_off, b_id in items
        if a_ok < b_sent and a_off > b_off
    ]
    assert expected and report.order_violations == expected


def test_unexpected_records_and_a_long_run() -> None:
    """A record of ours with a key the delivery did not expect is reported; tens of thousands of
    deliveries are checked in well under a second per 10,000 (no scan of all records per delivery)."""
    import time

    ds = [delivery(n, Expected(ROOM, f"r{n % 50}", None)) for n in range(40_000)]
    log = DriverLog({d.event_id: d for d in ds}, [attempt(d, 1, 0, float(n), 200) for n, d in enumerate(ds)])
    records = [record(d, d.expected[0], n, n + 0.1, 1) for n, d in enumerate(ds)]
    stray = record(ds[7], Expected(ROOM, "elsewhere", None), 40_000, 7.2, 1)
    t0 = time.monotonic()
    report = check_level(log, [*records, stray], READ_COMMITTED, TAG)
    assert time.monotonic() - t0 < 20
    assert report.unexpected == [stray]
    assert not report.lost and not report.duplicates and not report.order_violations


def test_the_tail_lag_of_a_phase_is_read_from_the_histograms_difference() -> None:
    from benchmarks.chaos import lag_quantiles

    inf = float("inf")
    before = {0.1: 10.0, 1.0: 10.0, 10.0: 10.0, inf: 10.0}
    after = {0.1: 108.0, 1.0: 109.0, 10.0: 110.0, inf: 110.0}  # 98 ≤ 100 ms, 1 ≤ 1 s, 1 ≤ 10 s
    assert lag_quantiles(before, after) == {
        "tail_lag_p50": "≤ 100 ms",
        "tail_lag_p99": "≤ 1000 ms",
        "tail_lag_max": "≤ 10000 ms",
    }
    assert lag_quantiles(after, {**after, inf: 111.0})["tail_lag_max"] == "> 10000 ms"
    assert lag_quantiles(after, after)["tail_lag_p50"] == "-"
