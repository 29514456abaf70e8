"""The benchmark's search for a max sustained rate (``benchmarks.search``), on simulated services."""

from __future__ import annotations

import itertools

import pytest

from benchmarks.search import max_sustained, round_rate


class Service:
    """Holds every rate up to ``capacity`` (events/s); a confirmation holds up to ``confirm_cap``."""

    def __init__(self, capacity: int, confirm_cap: int | None = None) -> None:
        self.capacity = capacity
        self.confirm_cap = capacity if confirm_cap is None else confirm_cap
        self.steps: list[tuple[str, int]] = []

    def holds(self, rate: int) -> bool:
        self.steps.append(("step", rate))
        return rate <= self.capacity

    def confirm(self, rate: int) -> bool:
        self.steps.append(("confirm", rate))
        return rate <= self.confirm_cap

    def fixed(self, *rates: int) -> list[tuple[int, bool]]:
        return [(r, r <= self.capacity) for r in rates]


@pytest.mark.parametrize("capacity", [1_234, 2_500, 4_000, 9_999, 17_000])
def test_finds_the_capacity_within_the_bisection_resolution(capacity: int) -> None:
    svc = Service(capacity)
    found = max_sustained(svc.fixed(500, 1000, 2000), svc.holds, svc.confirm, refine=3)
    assert found <= capacity  # never reports a rate that failed
    assert found >= capacity * 0.85  # ×1.5 climb + 3 bisections: within ~5 %, + rounding
    assert svc.steps[-1] == ("confirm", found)


def test_climbs_from_the_bottom_when_every_fixed_rate_fails() -> None:
    svc = Service(180)
    found = max_sustained(svc.fixed(500, 1000, 2000), svc.holds, svc.confirm, refine=3)
    assert 150 <= found <= 180
    assert svc.steps[0] == ("step", 50)


def test_nothing_holds_means_zero() -> None:
    svc = Service(10)
    assert max_sustained(svc.fixed(500, 1000), svc.holds, svc.confirm) == 0


def test_a_failing_confirmation_steps_down_until_one_holds() -> None:
    svc = Service(3_000, confirm_cap=2_600)
    found = max_sustained(svc.fixed(500, 1000, 2000), svc.holds, svc.confirm, refine=3)
    confirms = [r for kind, r in svc.steps if kind == "confirm"]
    assert found == confirms[-1] <= 2_600 and len(confirms) >= 2
    assert all(b < a for a, b in itertools.pairwise(confirms))


def test_a_lower_fixed_rate_failing_is_noise_when_a_higher_one_passed() -> None:
    svc = Service(5_000)
    fixed = [(500, False), (1000, True), (2000, True)]
    found = max_sustained(fixed, svc.holds, svc.confirm, refine=3)
    assert found >= 4_250 and svc.steps[0] == ("step", 3_000)


def test_rates_are_rounded_to_step_units() -> None:
    assert [round_rate(x) for x in (3, 14, 996, 1024, 2470.5)] == [10, 10, 1000, 1000, 2450]


def test_a_failing_fixed_rate_is_probed_again_before_it_caps_the_search() -> None:
    svc = Service(5_000)
    fixed = [(500, True), (1000, True), (2000, False)]  # 2,000/s failed on a VM pause
    found = max_sustained(fixed, svc.holds, svc.confirm, refine=3)
    assert svc.steps[0] == ("step", 2000) and found >= 4_250


def test_a_fixed_rate_that_fails_again_stays_the_upper_bound() -> None:
    svc = Service(1_500)
    found = max_sustained(svc.fixed(500, 1000, 2000), svc.holds, svc.confirm, refine=3)
    assert svc.steps[0] == ("step", 2000) and 1_250 <= found <= 1_500
    assert all(rate < 2000 for _, rate in svc.steps[1:])
