"""Measure the memory of the dedup window: ``python -m benchmarks.dedup_memory [N]``.

Prints bytes per event id and the total for N ids (default 1,000,000, the default
``BRIDGE_DEDUP_MAX_ENTRIES``), measured with tracemalloc and as the process RSS growth.
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc
import uuid

from bridge.dedup import DeliveryLedger


def _fill(ids: list[str]) -> tuple[DeliveryLedger, float]:
    clock = [0.0]
    ledger = DeliveryLedger(ttl_s=86_400, max_entries=len(ids), clock=lambda: clock[0])
    t0 = time.perf_counter()
    for i, event_id in enumerate(ids):
        clock[0] = i * 86_400 / len(ids)  # spread over the TTL: every bucket in use
        ledger.mark_delivered(event_id)
    return ledger, time.perf_counter() - t0


def main(n: int) -> None:
    ids = [uuid.uuid4().hex for _ in range(n)]  # allocated before measuring: not the ledger's
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ledger, elapsed = _fill(ids)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del ledger
    tracemalloc.start()
    ledger, _ = _fill(ids)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t1 = time.perf_counter()
    hits = sum(ledger.delivered(i) for i in ids[: min(n, 100_000)])
    lookup = (time.perf_counter() - t1) / min(n, 100_000)
    print(
        f"entries={len(ledger):,} traced={current / 2**20:.1f} MiB ({current / n:.0f} B/id) "
        f"rss_growth={(rss1 - rss0) / 1024:.1f} MiB mark={elapsed / n * 1e6:.2f} us/id "
        f"lookup={lookup * 1e6:.2f} us hits={hits:,}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
