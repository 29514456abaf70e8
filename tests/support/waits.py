"""Polling: until a condition holds, or until an endpoint answers a given status. Each wait fails
the test with an ``AssertionError`` naming what never happened."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]],
    *,
    timeout_s: float | None,
    interval_s: float = 0.1,
    message: str,
) -> None:
    """Call ``check`` (sync or async) every ``interval_s`` s until it returns true; raise
    ``AssertionError(message)`` once ``timeout_s`` s have passed (``None``: wait for ever)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise AssertionError(message)
        await asyncio.sleep(interval_s)


class StatusSource(Protocol):
    """Anything with ``await get(path) -> (status, text)`` (the integration tests' running bridge)."""

    async def get(self, path: str) -> tuple[int, str]: ...


async def wait_status(
    source: StatusSource,
    path: str,
    status: int,
    *,
    timeout_s: float = 60.0,
    interval_s: float = 0.2,
    message: str | None = None,
) -> None:
    """Poll ``source.get(path)`` until it answers ``status``."""

    async def answered() -> bool:
        return (await source.get(path))[0] == status

    await wait_until(
        answered, timeout_s=timeout_s, interval_s=interval_s, message=message or f"{path} never answered {status}"
    )


async def wait_http_status(
    session: aiohttp.ClientSession,
    url: str,
    status: int = 200,
    *,
    timeout_s: float,
    interval_s: float = 0.2,
    alive: Callable[[], bool] | None = None,
    message: str,
) -> None:
    """GET ``url`` until it answers ``status``; refused connections count as not yet. ``alive``:
    checked after every miss, the wait fails at once (``message``) when it returns false (the
    server's process died)."""

    async def answered() -> bool:
        try:
            async with session.get(url) as resp:
                if resp.status == status:
                    return True
        except aiohttp.ClientError:
            pass
        assert alive is None or alive(), message
        return False

    await wait_until(answered, timeout_s=timeout_s, interval_s=interval_s, message=message)
