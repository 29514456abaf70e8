"""The background services' shared parts: the retry policy (tenacity) and the task runner."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.lifecycle import JITTER_SHARE, TaskRunner, retrying


async def test_retrying_waits_longer_each_time_up_to_the_cap_then_returns_the_result() -> None:
    waits: list[float] = []
    failures: list[str] = []
    attempts = 0

    def on_retry(exc: BaseException, wait_s: float) -> None:
        failures.append(type(exc).__name__)
        waits.append(wait_s)

    async for attempt in retrying(first_s=0.001, max_s=0.004, on_retry=on_retry):
        with attempt:
            attempts += 1
            if attempts < 6:
                raise OSError("refused")
    assert attempts == 6 and failures == ["OSError"] * 5
    jitter = 0.001 * JITTER_SHARE
    for wait_s, base in zip(waits, (0.001, 0.002, 0.004, 0.004, 0.004), strict=True):
        assert base <= wait_s <= base + jitter + 1e-9


async def test_retrying_never_gives_up_but_cancelling_the_caller_ends_it_at_once() -> None:
    attempts = 0

    async def forever() -> None:
        nonlocal attempts
        async for attempt in retrying(first_s=0.001, max_s=0.001):
            with attempt:
                attempts += 1
                raise RuntimeError("still failing")

    task = asyncio.create_task(forever())
    while attempts < 20:  # noqa: ASYNC110 - polling a counter the task moves
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_task_that_dies_is_logged_at_once_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise KeyError("bug")

    runner = TaskRunner("bridge-test-service")
    with caplog.at_level(logging.ERROR, logger="bridge.lifecycle"):
        runner.spawn(broken())
        await asyncio.sleep(0)  # the task runs and ends
        await asyncio.sleep(0)  # its done-callback runs
    [line] = caplog.records
    assert "bridge-test-service" in line.getMessage() and line.exc_info is not None
    await runner.cancel()  # a dead task: cancel() returns without raising


async def test_cancel_ends_a_running_task_and_a_never_spawned_runner_is_fine() -> None:
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    runner = TaskRunner("bridge-test-service")
    await TaskRunner("idle").cancel()
    runner.spawn(waits())
    await started.wait()
    await runner.cancel()
    assert runner._task is not None and runner._task.cancelled()
