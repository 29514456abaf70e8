"""Run the app: bind, serve until SIGTERM/SIGINT, then shut down gracefully.

Shutdown (README "Operations"): on the signal, readiness turns 503 and new events get 503 at once; the
listening socket closes; requests in flight finish; the producer flushes and closes; the whole
takes at most ``BRIDGE_SHUTDOWN_TIMEOUT_S`` seconds, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from bridge.app import STATE, create_app
from bridge.settings import Settings

log = logging.getLogger("bridge.server")


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Serve ``settings.http_host:http_port`` until SIGTERM/SIGINT; returns after a clean shutdown.

    ``ready`` (optional) is set once the socket listens. Raises OSError if the port can't be bound.
    """
    app = create_app(settings)
    # The runner's own wait for in-flight handlers gets most of the budget; the producer's close
    # (cleanup context) the rest. Both are bounded again by the wait_for below.
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=settings.shutdown_timeout_s * 0.6
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
    await site.start()
    log.info("listening on http://%s:%d%s", settings.http_host, settings.http_port, settings.http_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        app[STATE].draining = True
        app[STATE].metrics.ready.set(0)
        log.info("shutting down")
        try:
            await asyncio.wait_for(runner.cleanup(), settings.shutdown_timeout_s)
        except TimeoutError:
            log.warning("shutdown took longer than %.1fs; exiting anyway", settings.shutdown_timeout_s)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")
