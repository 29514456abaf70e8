"""Run the app: bind, serve until SIGTERM/SIGINT, then shut down gracefully.

Shutdown (docs/operations.md, "Shutdown"; the budget step by step: docs/architecture.md): on the
signal, readiness turns 503 and new events get 503 at once; the listening socket closes; requests
in flight finish; the producer flushes and closes; the whole takes at most
``BRIDGE_SHUTDOWN_TIMEOUT_S`` seconds, then the process exits 0 (1 when the long connection had
stopped for good).

Connections (hostile clients are normal clients): a connection that has not sent a whole request
within :data:`IDLE_TIMEOUT_S` is closed (aiohttp's keep-alive timer, armed from the connection's
start, is also the header deadline); unread bodies after an early answer are drained for at most
:data:`LINGER_S`; the open-file soft limit is raised to the hard limit at start; the event loop's
"socket.accept() out of system resource" error is logged once per :data:`ACCEPT_ERROR_LOG_S`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web

from bridge.app import STATE, create_app
from bridge.logs import Throttle
from bridge.settings import EventLoop, Settings
from bridge.tracing import configure_from_environment

log = logging.getLogger("bridge.server")

#: Seconds a connection may stay without a whole request (headers trickling, or idle keep-alive).
IDLE_TIMEOUT_S: Final = 15.0
#: Seconds aiohttp keeps reading (and discarding) a body left unread after an early answer.
LINGER_S: Final = 2.0
#: Connections the kernel queues for ``accept()`` (``listen()`` backlog; capped by
#: ``net.core.somaxconn``). aiohttp's default of 128 overflows when a burst of new connections
#: meets a busy loop: the kernel then drops the SYNs and the clients retry after 1, 3, 7 s —
#: answers late past the platform's 3 s deadline (BENCHMARKS.md).
LISTEN_BACKLOG: Final = 1024
#: At most one "out of system resource" accept error is logged per this many seconds.
ACCEPT_ERROR_LOG_S: Final = 10.0


def raise_open_file_limit() -> tuple[int, int]:
    """Raise ``RLIMIT_NOFILE``'s soft limit to its hard limit.

    Each connection holds a file descriptor: the common soft limit of 1,024 is exhausted by a
    thousand idle clients, while the hard limit is usually far higher. An unlimited hard limit
    raises the soft one to 2²⁰ (or leaves it, if higher). Never raises.

    Returns:
        ``(before, after)``: the soft limit before and after; equal when it could not be raised.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target


class AcceptErrorThrottle:
    """An event-loop exception handler that throttles the accept error's log.

    It logs "socket.accept() out of system resource" (file descriptors exhausted: asyncio retries
    the accept every second, and logs each time) at most once per ``interval_s`` seconds, with the
    count since the last line; every other context goes to the loop's default handler.

    Args:
        interval_s: Least time between two such lines, in seconds. Default
            :data:`ACCEPT_ERROR_LOG_S` (10 s).
        clock: Returns monotonic seconds. Default :func:`time.monotonic`.
    """

    def __init__(self, interval_s: float = ACCEPT_ERROR_LOG_S, clock: Any = time.monotonic) -> None:
        self._throttle = Throttle(interval_s, clock)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "out of system resource" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        held = self._throttle.admit()
        if held is None:
            return
        exc = context.get("exception")
        log.error(
            "socket.accept() out of system resource (%s); %d more since the last line",
            type(exc).__name__ if exc else "unknown",
            held,
        )


def loop_factory(kind: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """Pick the constructor of the event loop ``BRIDGE_EVENT_LOOP`` names.

    Args:
        kind: The configured loop.

    Returns:
        uvloop's ``new_event_loop``, or asyncio's own (also when uvloop is not installed, with a
        warning).
    """
    if kind == EventLoop.UVLOOP:
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; using asyncio's event loop")
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    return asyncio.new_event_loop


def run(settings: Settings, *, app: web.Application | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run :func:`serve` on the event loop of ``BRIDGE_EVENT_LOOP``.

    The tracer provider (when one was built) is shut down, its last spans flushed, after serving.

    Args:
        settings: The bridge's settings.
        app: The app to serve. Default: ``create_app(settings)`` with the tracer provider the
            ``OTEL_*`` variables of ``environ`` ask for
            (:func:`bridge.tracing.configure_from_environment`).
        environ: Where the ``OTEL_*`` variables are read, only when ``app`` is not given.
            Default :data:`os.environ`.

    Returns:
        :func:`serve`'s exit code.
    """
    provider = configure_from_environment(os.environ if environ is None else environ) if app is None else None
    if app is None:
        app = create_app(settings, tracer_provider=provider)
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            return runner.run(serve(settings, app=app))
    finally:
        if provider is not None:
            provider.shutdown()


def runner_options(settings: Settings) -> dict[str, Any]:
    """Build the keyword arguments of the ``web.AppRunner`` that serves the app.

    Tests serve it the same way. The runner's wait for in-flight handlers gets most of the
    shutdown budget (``0.6 × S``, ``S`` = ``BRIDGE_SHUTDOWN_TIMEOUT_S``), the producer's close
    (cleanup context) the rest; both are bounded again by :func:`serve`. ``auto_decompress`` is
    off: the platform never compresses (docs/protocol.md §1), the webhook answers 415 to a
    Content-Encoding, and no byte a stranger sends is inflated, read or not. Handlers are not
    cancelled when a client leaves (aiohttp's default): the webhook sees the hang-up as
    ``ConnectionResetError`` and a publish under way still completes. Signals are left to
    :func:`serve`, and aiohttp's access log is off (the bridge writes one log line per request
    itself, :class:`bridge.ingress.webhook.RequestLog`).

    Args:
        settings: The bridge's settings (``shutdown_timeout_s``, seconds).

    Returns:
        ``{name: value}`` for ``web.AppRunner``: ``shutdown_timeout`` in seconds,
        ``keepalive_timeout`` :data:`IDLE_TIMEOUT_S`, ``lingering_time`` :data:`LINGER_S`, …
    """
    return {
        "handle_signals": False,
        "access_log": None,
        "shutdown_timeout": settings.shutdown_timeout_s * 0.6,
        "auto_decompress": False,
        "keepalive_timeout": IDLE_TIMEOUT_S,
        "lingering_time": LINGER_S,
        "handler_cancellation": False,
    }


async def serve(settings: Settings, *, ready: asyncio.Event | None = None, app: web.Application | None = None) -> int:
    """Serve ``settings.http_host:http_port`` until SIGTERM/SIGINT, then shut down gracefully.

    The long connection stopping for good (a refusal no retry can mend, docs/long_connection.md
    §7) also ends serving. Once started, ``gc.freeze()`` moves what start-up allocated out of the
    collector's generations. The shutdown is bounded by ``BRIDGE_SHUTDOWN_TIMEOUT_S`` seconds
    (docs/operations.md, "Shutdown").

    Args:
        settings: The bridge's settings.
        ready: Set once the socket listens. Default: none.
        app: The app to serve. Default ``create_app(settings)``; the benchmarks pass one with a
            pre-filled dedup ledger.

    Returns:
        The exit code after a clean shutdown: 0, or 1 when the long connection stopped for good.

    Raises:
        OSError: The port can't be bound.
    """
    if app is None:
        app = create_app(settings)
    before, after = raise_open_file_limit()
    if after != before:
        log.info("open-file limit raised from %d to %d", before, after)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorThrottle())
    # The runner's own wait for in-flight handlers gets most of the budget; the producer's close
    # (cleanup context) the rest. Both are bounded again by the wait_for below.
    runner = web.AppRunner(app, **runner_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True, backlog=LISTEN_BACKLOG)
    await site.start()
    path = settings.http_path if settings.webhook_enabled else " (health, readiness, metrics; no webhook)"
    log.info("listening on http://%s:%d%s", settings.http_host, settings.http_port, path)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # What start-up allocated (modules, app, producer) lives as long as the process: moved out of
    # the collector's generations, so that later collections do not walk it again and again.
    gc.collect()
    gc.freeze()
    if ready is not None:
        ready.set()
    long_connection = app[STATE].long_connection
    watcher = None
    if long_connection is not None:
        lc = long_connection

        async def stop_when_failed() -> None:
            await lc.stopped.wait()
            stop.set()

        watcher = asyncio.create_task(stop_when_failed())
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        app[STATE].draining = True  # readiness (and the bridge_ready gauge) turn 0 at once
        log.info("shutting down")
        try:
            await asyncio.wait_for(runner.cleanup(), settings.shutdown_timeout_s)
        except TimeoutError:
            log.warning("shutdown took longer than %.1fs; exiting anyway", settings.shutdown_timeout_s)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")
    return 1 if long_connection is not None and long_connection.failed else 0
