"""The long connection's reconnect policy and the platform's timings (docs/long_connection.md §1,
§4, §7, §9.4) as pure functions: no socket, no sleep."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.ingress.reconnect import ClientConfig, GiveUp, reconnect_delay


def config(raw: dict[str, Any] | None = None, *, received: bool = True, second_s: float = 1.0) -> ClientConfig:
    c = ClientConfig(second_s=second_s)
    if raw is not None:
        c.update(raw)
    c.received = received
    return c


def never(*_: Any) -> float:
    raise AssertionError("no jitter expected")


def test_the_defaults_are_the_sdks() -> None:
    c = ClientConfig()
    assert (c.reconnect_count, c.reconnect_interval_s, c.reconnect_nonce_s, c.ping_interval_s) == (-1, 120, 30, 120)
    assert c.received is False


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 64.0), (8, 120.0), (9, 120.0), (50, 120.0)],
)
def test_before_the_platform_sent_its_config_failed_attempts_back_off_up_to_120_s(attempts: int, delay: float) -> None:
    c = ClientConfig()
    assert reconnect_delay(attempts, config=c, lost_before=False, rand=never) == delay


def test_the_backoff_is_capped_by_a_shorter_interval_even_before_the_config() -> None:
    c = ClientConfig()
    c.update({"ReconnectInterval": 3})  # e.g. from a pong: applied, but the backoff goes on
    assert [reconnect_delay(n, config=c, lost_before=False) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]


def test_the_first_backoff_step_scales() -> None:
    c = ClientConfig()
    delays = [reconnect_delay(n, config=c, lost_before=False, backoff_first_s=0.01) for n in (1, 2, 3)]
    assert delays == [0.01, 0.02, 0.04]


@pytest.mark.parametrize("attempts", [1, 2, 7, 30])
def test_once_the_platform_sent_its_config_its_interval_is_the_delay(attempts: int) -> None:
    c = config({"ReconnectInterval": 7})
    assert reconnect_delay(attempts, config=c, lost_before=False, rand=never) == 7.0


def test_a_failed_attempt_after_a_loss_waits_the_interval_without_jitter() -> None:
    c = config({"ReconnectInterval": 7, "ReconnectNonce": 30})
    assert reconnect_delay(1, config=c, lost_before=True, rand=never) == 7.0


@pytest.mark.parametrize(("draw", "delay"), [(0.0, 0.0), (0.5, 15.0), (0.999, 29.97)])
def test_after_a_loss_the_first_attempt_waits_a_random_part_of_the_nonce(draw: float, delay: float) -> None:
    c = config({"ReconnectNonce": 30})
    assert reconnect_delay(0, config=c, lost_before=True, rand=lambda: draw) == pytest.approx(delay)


@pytest.mark.parametrize(("lost_before", "nonce"), [(False, 30), (True, 0)])
def test_no_jitter_at_start_nor_with_a_zero_nonce(lost_before: bool, nonce: int) -> None:
    c = config({"ReconnectNonce": nonce})
    assert reconnect_delay(0, config=c, lost_before=lost_before, rand=never) == 0.0


@pytest.mark.parametrize(
    ("count", "attempts", "expected"),
    [
        (-1, 1000, 1.0),  # negative: for ever
        (0, 1, GiveUp(1)),  # 0 counts as 1 attempt in all
        (1, 1, GiveUp(1)),
        (3, 1, 1.0),
        (3, 2, 1.0),
        (3, 3, GiveUp(3)),
        (3, 4, GiveUp(4)),
    ],
)
def test_reconnect_count_bounds_the_attempts_in_a_row(count: int, attempts: int, expected: Any) -> None:
    c = config({"ReconnectCount": count, "ReconnectInterval": 1})
    assert reconnect_delay(attempts, config=c, lost_before=False, rand=never) == expected


def test_the_give_up_applies_before_the_platform_sent_its_config_too() -> None:
    c = ClientConfig()
    c.update({"ReconnectCount": 2})
    assert reconnect_delay(1, config=c, lost_before=False) == 1.0
    assert reconnect_delay(2, config=c, lost_before=False) == GiveUp(2)


@pytest.mark.parametrize(
    ("raw", "field", "value"),
    [
        ({"PingInterval": 0}, "ping_interval_s", 1.0),  # clamped up to 1 s
        ({"PingInterval": -5}, "ping_interval_s", 1.0),
        ({"PingInterval": 10**9}, "ping_interval_s", 3600.0),  # clamped down to 1 h
        ({"PingInterval": 45}, "ping_interval_s", 45.0),
        ({"ReconnectInterval": 0}, "reconnect_interval_s", 1.0),
        ({"ReconnectInterval": 7200}, "reconnect_interval_s", 3600.0),
        ({"ReconnectNonce": 0}, "reconnect_nonce_s", 0.0),  # a nonce may be 0: no jitter
        ({"ReconnectNonce": -3}, "reconnect_nonce_s", 0.0),
        ({"ReconnectNonce": 99999}, "reconnect_nonce_s", 3600.0),
        ({"ReconnectCount": 5}, "reconnect_count", 5),  # a count: not clamped
        ({"ReconnectCount": -7}, "reconnect_count", -7),
    ],
)
def test_the_platform_s_values_are_applied_and_clamped(raw: dict[str, Any], field: str, value: float) -> None:
    c = ClientConfig()
    c.update(raw)
    assert getattr(c, field) == value


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        "PingInterval",
        {"PingInterval": "5"},  # a string
        {"PingInterval": 5.5},  # a float
        {"PingInterval": True},  # a boolean is no integer here
        {"PingInterval": None},
        {"pinginterval": 5},  # names are case-sensitive
    ],
)
def test_ill_typed_values_keep_the_current_ones(raw: Any) -> None:
    c = ClientConfig()
    c.update(raw)
    assert (c.ping_interval_s, c.reconnect_interval_s, c.reconnect_nonce_s, c.reconnect_count) == (120, 120, 30, -1)


def test_an_update_keeps_the_fields_it_does_not_name() -> None:
    c = ClientConfig()
    c.update({"PingInterval": 5})
    c.update({"ReconnectInterval": 9})
    assert (c.ping_interval_s, c.reconnect_interval_s) == (5.0, 9.0)


def test_a_platform_second_may_be_shorter_in_tests() -> None:
    c = ClientConfig(second_s=0.01)
    assert c.ping_interval_s == pytest.approx(1.2) and c.reconnect_interval_s == pytest.approx(1.2)
    c.update({"PingInterval": 0, "ReconnectInterval": 2, "ReconnectNonce": 3})
    assert c.ping_interval_s == pytest.approx(0.01)  # the floor is one platform second
    assert c.reconnect_interval_s == pytest.approx(0.02) and c.reconnect_nonce_s == pytest.approx(0.03)
