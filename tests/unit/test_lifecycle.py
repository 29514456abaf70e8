"""The background services' shared parts: the retry policy (tenacity) and the task runner."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge import kafka
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


class FakeClient:
    """A client whose start fails ``failures`` times in all (across instances), then succeeds."""

    made: list[FakeClient] = []

    def __init__(self, failures: list[int]) -> None:
        self.failures = failures
        self.started = self.stopped = False
        FakeClient.made.append(self)

    async def start(self) -> None:
        if self.failures[0] > 0:
            self.failures[0] -= 1
            raise ConnectionRefusedError("broker away")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


async def test_started_retries_until_a_client_starts_and_stops_each_that_did_not() -> None:
    FakeClient.made = []
    failures = [2]
    retries: list[str] = []
    client = await kafka.started(
        lambda: FakeClient(failures),
        lambda c: c.start(),
        backoff_s=(0.001, 0.002),
        on_retry=lambda exc, _: retries.append(type(exc).__name__),
    )
    assert client.started and not client.stopped and retries == ["ConnectionRefusedError"] * 2
    assert [c.stopped for c in FakeClient.made] == [True, True, False]


async def test_started_stops_the_client_being_started_when_cancelled() -> None:
    FakeClient.made = []
    entered = asyncio.Event()

    async def hangs(client: FakeClient) -> None:
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(kafka.started(lambda: FakeClient([0]), hangs, backoff_s=(1, 1), on_retry=print))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [client] = FakeClient.made
    assert client.stopped
