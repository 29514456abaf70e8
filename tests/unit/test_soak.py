"""The soak benchmark's pure parts (benchmarks/soak.py): percentiles, /metrics and /proc parsing,
and the "flat after warm-up" judgement."""

from __future__ import annotations

import math

import pytest

from benchmarks.soak import (
    BOUNDS,
    MIB,
    Bound,
    ReplicaSample,
    Sample,
    inbound_socket_inodes,
    judge,
    percentile,
    scan_metrics,
    socket_inode,
    window_stats,
)
from tests.support.chaos import Attempt


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([3.0, 1.0, 2.0], 50) == 2
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def test_scan_metrics_counts_sample_lines_and_reads_the_ledger() -> None:
    text = (
        "# HELP bridge_dedup_entries Event ids held in the dedup window.\n"
        "# TYPE bridge_dedup_entries gauge\n"
        "bridge_dedup_entries 1234.0\n"
        'bridge_requests_total{outcome="published"} 5.0\n'
        'bridge_dedup_entries_other{x="1"} 9.0\n'
        "\n"
    )
    assert scan_metrics(text) == (3, 1234.0)
    assert scan_metrics("# nothing\n") == (0, None)


def test_inbound_sockets_from_proc_net_tcp() -> None:
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n"
        "   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n"
        "   3: 0100007F:2384 0100007F:D000 01 00000000:00000000 00:00000000 00000000     0        0 444 1\n"
    )
    # port 0x1F90 = 8080: the listener (0A) is not a connection; the client side (local C350) is not ours
    assert inbound_socket_inodes([tcp, ""], 8080) == {222}
    assert socket_inode("socket:[222]") == 222
    assert socket_inode("/tmp/log") is None
    assert socket_inode("anon_inode:[eventpoll]") is None


def sample(t: float, *replicas: tuple[int, int, int, int, float | None]) -> Sample:
    """replicas: (rss MiB, fds, http conns, series, ledger)."""
    return Sample(
        t,
        [
            ReplicaSample(i, 100 + i, rss * MIB, fds, conns, series, ledger)
            for i, (rss, fds, conns, series, ledger) in enumerate(replicas)
        ],
    )


def test_bound_is_the_larger_of_relative_and_absolute() -> None:
    rss = BOUNDS["rss_bytes"]
    assert rss.limit(100 * MIB) == 116 * MIB  # 10 % = 10 MiB < 16 MiB
    assert rss.limit(300 * MIB) == 330 * MIB  # 10 % = 30 MiB > 16 MiB
    assert Bound(0.0, 8).limit(20) == 28
    assert Bound(0.1, 16).text(1, " MiB") == "+10% or +16 MiB (whichever is larger)"


def test_flat_after_warm_up() -> None:
    samples = [
        sample(0, (40, 30, 0, 100, 0)),
        sample(60, (90, 40, 10, 110, 6000)),  # warm-up: anything goes
        sample(120, (100, 35, 4, 120, 12000)),  # the baseline
        sample(180, (110, 60, 29, 130, 18000)),  # +10 MiB, +25 fds of which +25 connections, +10 series
        sample(240, (115, 38, 5, 136, 24000)),
    ]
    checks = judge(samples, warmup_s=120)
    assert {c.measure for c in checks} == {"rss_bytes", "other_fds", "series"}  # the ledger not judged
    assert all(c.ok for c in checks), checks
    rss = next(c for c in checks if c.measure == "rss_bytes")
    assert (rss.base, rss.peak, rss.limit) == (100 * MIB, 115 * MIB, 116 * MIB)


@pytest.mark.parametrize(
    ("last", "grows"),
    [
        ((117, 35, 4, 120, 12000), "rss_bytes"),  # > +16 MiB
        ((100, 44, 4, 120, 12000), "other_fds"),  # 40 other fds > 31 + 8
        ((100, 35, 4, 137, 12000), "series"),  # > +16
        ((100, 35, 4, 120, 13500), "ledger"),  # > +10 %, judged here
    ],
)
def test_growth_past_a_bound_fails(last: tuple[int, int, int, int, float], grows: str) -> None:
    samples = [sample(0, (40, 30, 0, 100, 0)), sample(120, (100, 35, 4, 120, 12000)), sample(180, last)]
    checks = judge(samples, warmup_s=100, judge_ledger=True)
    assert [c.measure for c in checks if not c.ok] == [grows]


def test_each_replica_judged_on_its_own_and_missing_data_fails() -> None:
    samples = [
        sample(0, (40, 30, 0, 100, 0), (40, 30, 0, 100, 0)),
        sample(60, (100, 35, 4, 120, 0), (60, 35, 4, 120, 0)),
        sample(120, (101, 35, 4, 120, 0), (80, 35, 4, 120, 0)),  # replica 1: +20 MiB
    ]
    bad = [(c.replica, c.measure) for c in judge(samples, warmup_s=60) if not c.ok]
    assert bad == [(1, "rss_bytes")]

    gone = [*samples[:2], Sample(120, [ReplicaSample(0, 100), ReplicaSample(1, 101)])]  # nothing readable
    assert all(not c.ok and c.note for c in judge(gone, warmup_s=60))


def test_too_few_samples_after_warm_up_is_not_flat() -> None:
    samples = [sample(0, (40, 30, 0, 100, 0)), sample(60, (40, 30, 0, 100, 0))]
    checks = judge(samples, warmup_s=60)
    assert checks and all(not c.ok for c in checks)
    assert "1 sample(s)" in checks[0].note


def test_window_stats() -> None:
    attempts = [Attempt("e", 1, 0, 10.0, 10.0 + ms / 1000, 200) for ms in range(1, 101)]
    attempts.append(Attempt("f", 1, 1, 10.0, 13.0, None, "TimeoutError"))
    attempts.append(Attempt("g", 1, 1, 10.0, 10.5, 503))
    statuses, p50, p99 = window_stats(attempts)
    assert statuses == {"200": 100, "503": 1, "TimeoutError": 1}
    assert p50 == pytest.approx(51.0)
    assert p99 == pytest.approx(500.0)
    assert window_stats([])[0] == {} and math.isnan(window_stats([])[1])
