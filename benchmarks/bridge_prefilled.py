"""``python -m benchmarks.bridge_prefilled``: ``python -m bridge serve`` with a full dedup window.

Same configuration (``BRIDGE_*`` environment), logging, event loop and lifecycle as
``python -m bridge serve`` (it runs ``bridge.server.run``), except that the app's dedup ledger is
pre-filled with ``BENCH_PREFILL_IDS`` (default ``BRIDGE_DEDUP_MAX_ENTRIES``, i.e. 1,000,000)
synthetic event ids before the socket opens — the steady state of a bridge that has run for a whole dedup TTL. The
benchmark reads this process's peak RSS (VmHWM) after driving it.

How: the real ``create_app`` builds the app, this script fills ``app[STATE].ledger`` (a
``bridge.dedup.DeliveryLedger``) and hands the app to ``bridge.server.run(settings, app=…)``.
Nothing else of the bridge changes.
The ids are generated one at a time and dropped, so only the ledger keeps memory.
"""

from __future__ import annotations

import os
import sys
import time

from aiohttp import web

from bridge.app import STATE, create_app
from bridge.logs import configure_logging
from bridge.server import run
from bridge.settings import Settings, SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"bridge_prefilled: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    count = int(os.environ.get("BENCH_PREFILL_IDS", settings.dedup_max_entries))

    def prefilled_app(s: Settings) -> web.Application:
        app = create_app(s)
        ledger = app[STATE].ledger
        assert ledger is not None
        t0 = time.perf_counter()
        for i in range(count):
            ledger.mark_delivered(f"prefill-{i:010d}")
        print(
            f"bridge_prefilled: dedup window holds {len(ledger):,} ids (filled in {time.perf_counter() - t0:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
        return app

    return run(settings, app=prefilled_app(settings))


if __name__ == "__main__":
    sys.exit(main())
