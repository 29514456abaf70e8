"""Process-level limits of the server: the open-file limit and the accept-error log throttle."""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import pytest

from bridge.server import AcceptErrorThrottle, raise_open_file_limit


def test_open_file_soft_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        before, after = raise_open_file_limit()
        now_soft, now_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert now_hard == hard and now_soft == after
        if hard != resource.RLIM_INFINITY:
            assert after == hard and before <= after
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_accept_errors_are_logged_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttle = AcceptErrorThrottle(interval_s=10.0, clock=clock)
    loop = asyncio.new_event_loop()
    try:
        context: dict[str, Any] = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(24, "EMFILE"),
        }
        with caplog.at_level(logging.ERROR, logger="bridge.server"):
            for _ in range(1000):  # asyncio retries the accept and reports each failure
                throttle(loop, context)
                clock.now += 0.01  # 1,000 reports over 10 s
            clock.now = 10.5
            throttle(loop, context)
        lines = [r.getMessage() for r in caplog.records if r.name == "bridge.server"]
        assert len(lines) == 2
        assert "0 more since the last line" in lines[0] and "999 more since the last line" in lines[1]
    finally:
        loop.close()


def test_other_loop_errors_still_reach_the_default_handler(caplog: pytest.LogCaptureFixture) -> None:
    throttle = AcceptErrorThrottle(interval_s=10.0, clock=Clock())
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            throttle(loop, {"message": "Task exception was never retrieved"})
            throttle(loop, {"message": "Task exception was never retrieved"})
        assert sum("never retrieved" in r.getMessage() for r in caplog.records) == 2
    finally:
        loop.close()
