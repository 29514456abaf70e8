"""The search for a service's max sustained rate: a pure policy over a "does this rate hold?" probe.

:func:`max_sustained` is what ``benchmarks.run`` does with the results of its fixed-rate steps:
start from the highest fixed rate that passed and the lowest failing one above it, climb ×1.5 while
steps pass (or from :data:`START_RATE` when even the lowest fixed rate failed), bisect (geometric
mean) ``refine`` times, then confirm the best rate with a longer step, 7 % lower each time it does
not hold. The probes are callbacks, so the policy is tested without a service
(``tests/unit/test_bench_search.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

#: Where the climb starts when even the lowest fixed rate failed, events/s.
START_RATE: Final = 50
#: The climb stops here, events/s (no service on one core comes near).
TOP_RATE: Final = 200_000
#: Confirmation attempts, each 7 % below the previous.
CONFIRM_ATTEMPTS: Final = 8


def round_rate(x: float) -> int:
    """``x`` rounded to a step rate: to 10/s below 1,000/s, to 50/s above; at least one unit."""
    unit = 10 if x < 1000 else 50
    return max(unit, round(x / unit) * unit)


def max_sustained(
    fixed: Sequence[tuple[int, bool]],
    holds: Callable[[int], bool],
    confirm: Callable[[int], bool],
    *,
    refine: int = 3,
) -> int:
    """The highest rate (events/s) that held a confirmation step, or 0 when none did.

    ``fixed``: ``(rate, passed)`` of the fixed-rate steps already run (a lower rate failing while
    a higher one passed is noise, e.g. a VM stall: the search starts from the highest pass; the
    lowest failing rate above it is probed again before it counts as a failure).
    ``holds(rate)``: run one search step, True when it passed. ``confirm(rate)``: run the longer
    confirmation step. ``refine``: bisection steps between the last pass and the first failure.
    """
    passing = [rate for rate, ok in fixed if ok]
    lo: int | None = max(passing) if passing else None
    hi: int | None = min((rate for rate, ok in fixed if not ok and rate > (lo or 0)), default=None)
    lowest_fixed = min((rate for rate, _ in fixed), default=START_RATE)
    if lo is not None and hi is not None and holds(hi):
        # A fixed step failed above one that passed: probed once more as a search step (which
        # retries a narrow latency failure) before it may cap the search — one VM pause in a
        # 5 s fixed step must not decide the max.
        lo, hi = hi, None

    if lo is None:  # even the lowest fixed rate failed: climb from START_RATE
        r = START_RATE
        while r < (hi or lowest_fixed):
            if holds(r):
                lo, r = r, round_rate(r * 1.6)
            else:
                hi = r
                break
        if lo is None:
            return 0
        hi = hi or lowest_fixed
    elif hi is None:  # the highest fixed rate passed: ×1.5 until a step fails
        r = round_rate(lo * 1.5)
        while hi is None and r <= TOP_RATE:
            if holds(r):
                lo, r = r, round_rate(r * 1.5)
            else:
                hi = r
        if hi is None:
            hi = r
    for _ in range(refine):
        mid = round_rate(math.sqrt(lo * hi))
        if mid <= lo or mid >= hi:
            break
        if holds(mid):
            lo = mid
        else:
            hi = mid
    for _ in range(CONFIRM_ATTEMPTS):
        if confirm(lo):
            return lo
        lo = round_rate(lo * 0.93)
    return 0
