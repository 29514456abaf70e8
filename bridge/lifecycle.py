"""Background services: one shape, one retry policy.

Every long-lived part of the bridge that works in the background — the producer's supervisor
(:class:`bridge.publish.Publisher`), the dedup ledger's feed (:class:`bridge.dedup_feed.LedgerFeed`),
the schema ids (:class:`bridge.registry.SchemaIds`), the long connection, the platform's egress IP
list (:class:`bridge.egress_ips.EgressIps`) — has the shape of
:class:`BackgroundService`: ``start()`` returns at once and never raises (the work goes on in a
task), ``close()`` ends it, and ``not_ready_reason()`` says why it cannot serve yet (None when it
can). The app starts them in order in one cleanup context and closes them in reverse order
(:func:`bridge.app.create_app`).

Retries of a failed connection or call use tenacity (:func:`retrying`): exponential backoff with
a little jitter, forever, with a hook that logs each retry — one well-kept implementation instead
of a hand-written loop in each service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never, wait_exponential_jitter

log = logging.getLogger("bridge.lifecycle")

#: Jitter added to each backoff step, as a share of its first step: replicas that lost the same
#: broker at the same moment do not come back in lockstep.
JITTER_SHARE: Final = 0.25


class BackgroundService(Protocol):
    """The shape of the app's background services (module docstring)."""

    async def start(self) -> None:
        """Begin the work in the background; returns at once and never raises."""
        ...

    async def close(self) -> None:
        """End the work (bounded in time by the service's own settings)."""
        ...

    def not_ready_reason(self) -> str | None:
        """Why the service cannot serve yet (a short identifier for ``/readyz`` and logs), or
        None when it can."""
        ...


def retrying(
    *, first_s: float, max_s: float, on_retry: Callable[[BaseException, float], None] | None = None
) -> AsyncRetrying:
    """A tenacity retry loop for ``async for attempt in retrying(...): with attempt: ...``.

    Args:
        first_s: the first wait, seconds; each next one doubles (plus up to
            :data:`JITTER_SHARE` × ``first_s`` of jitter).
        max_s: the longest wait, seconds.
        on_retry: called before each wait with the exception of the failed attempt and the
            wait in seconds (a log line, a metric).

    Returns:
        An ``AsyncRetrying`` that retries any ``Exception`` forever (``CancelledError`` is not
        one: cancelling the caller ends the loop at once).
    """

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(exc, state.next_action.sleep)

    return AsyncRetrying(
        retry=retry_if_exception_type(Exception),
        wait=wait_exponential_jitter(multiplier=first_s, max=max_s, jitter=first_s * JITTER_SHARE),
        stop=stop_never,
        before_sleep=before_sleep,
        reraise=True,
    )


class TaskRunner:
    """The one task a background service runs: ``spawn`` once, ``cancel`` (and wait) on close.
    A task that ends with an exception (a bug: the services retry what they expect) is logged at
    ERROR with its traceback, at once — not when the task is garbage-collected."""

    __slots__ = ("_name", "_task")

    def __init__(self, name: str) -> None:
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as the service's task (named for debugging)."""
        self._task = asyncio.create_task(work, name=self._name)
        self._task.add_done_callback(_log_failure)

    async def cancel(self) -> None:
        """Cancel the task and wait for it to end; its exceptions are not raised here."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background task %s ended: %s", task.get_name(), type(exc).__name__, exc_info=exc)
