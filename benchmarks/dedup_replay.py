"""``python -m benchmarks.dedup_replay``: the Kafka-backed dedup ledger's replay and tail, measured.

1. Starts the project's local Kafka broker and fills one 12-partition topic with ``--ids``
   records (default 1,000,000), each as the bridge writes them: a ~``--value-bytes`` CloudEvents
   value and the ``lark_event_id`` header.
2. Replays them the way a starting bridge does (:class:`bridge.dedup_feed.LedgerFeed` into a
   :class:`bridge.dedup.DeliveryLedger`, ``BRIDGE_DEDUP_MAX_ENTRIES`` = ``--ids``) in a fresh
   child process, and reports the replay time, ids/s and the child's RSS (VmRSS now, VmHWM peak).
3. Tail: another producer (a second replica) publishes ``--tail`` records one at a time; for each,
   the time from its broker ack until its id is in the ledger (polled every 0.2 ms) — the window
   in which a redelivery to this replica would not yet be recognised. Prints p50/p99/max.

Loopback only; bounded in count and time; stops what it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOPIC = "bench.dedup.replay"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def _fill(bootstrap: str, ids: int, value_bytes: int) -> float:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=12, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024, acks=1)
    await producer.start()
    started = time.perf_counter()
    try:
        pad = "x" * max(0, value_bytes - 200)
        pending = []
        for i in range(ids):
            event_id = f"{i:032x}"
            value = json.dumps({"specversion": "1.0", "id": event_id, "larkeventid": event_id, "pad": pad})
            fut = await producer.send(
                TOPIC, value.encode(), key=event_id.encode(), headers=[("lark_event_id", event_id.encode())]
            )
            pending.append(fut)
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                print(f"  filled {i + 1:,}", file=sys.stderr, flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _replay_and_tail(bootstrap: str, ids: int, tail: int, timeout_s: float) -> dict[str, Any]:
    """In the child: replay, then measure the tail while a producer publishes one id at a time."""
    from aiokafka import AIOKafkaProducer

    from bridge.dedup import DeliveryLedger
    from bridge.dedup_feed import LedgerFeed
    from bridge.metrics import Metrics
    from bridge.normalize import Topics
    from bridge.settings import load_settings

    settings = load_settings(
        {
            "BRIDGE_LARK_VERIFICATION_TOKEN": "bench",
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BRIDGE_DEDUP_MAX_ENTRIES": str(max(ids, 1)),
            "BRIDGE_DEDUP_REPLAY_TIMEOUT_S": str(timeout_s),
        }
    )
    topics = Topics(by_type={}, dead_letter=TOPIC)
    ledger = DeliveryLedger(settings.dedup_ttl_s, settings.dedup_max_entries)
    feed = LedgerFeed(settings, topics, ledger, Metrics())
    rss_before = _status_kib("VmRSS")
    started = time.perf_counter()
    await feed.start()
    while not feed.ready and time.perf_counter() - started < timeout_s + 5:  # noqa: ASYNC110 - the flag is what is timed
        await asyncio.sleep(0.05)
    replay_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "replayed": feed.replayed,
        "replay_s": round(replay_s, 2),
        "ids_in_ledger": len(ledger),
        "ids_per_s": round(len(ledger) / replay_s) if replay_s else None,
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_after_mib": round(_status_kib("VmRSS") / 1024, 1),
        "rss_peak_mib": round(_status_kib("VmHWM") / 1024, 1),
    }
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    lags_ms: list[float] = []
    try:
        for i in range(tail):
            event_id = f"tail-{i}"
            await producer.send_and_wait(
                TOPIC, b"{}", key=event_id.encode(), headers=[("lark_event_id", event_id.encode())]
            )
            acked = time.perf_counter()
            while not ledger.delivered(event_id):
                if time.perf_counter() - acked > 5:
                    break
                await asyncio.sleep(0.0002)
            lags_ms.append((time.perf_counter() - acked) * 1000)
            await asyncio.sleep(0.005)
    finally:
        await producer.stop()
        await feed.close()
    if lags_ms:
        ordered = sorted(lags_ms)
        result["tail_ack_to_ledger_ms"] = {
            "n": len(ordered),
            "p50": round(statistics.median(ordered), 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "max": round(ordered[-1], 2),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    """Fill, replay in a child process, tail; prints a JSON report. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dedup_replay", description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=900, help="record value size (the envelope's)")
    parser.add_argument("--tail", type=int, default=500, help="records published one at a time after the replay")
    parser.add_argument("--timeout", type=float, default=600.0, help="replay bound, seconds")
    parser.add_argument("--child", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(_replay_and_tail(args.child, args.ids, args.tail, args.timeout))))
        return 0

    from bridge_devtools.broker import LocalBroker

    with LocalBroker() as broker:
        print(f"broker {broker.bootstrap_servers}; filling {args.ids:,} records ...", file=sys.stderr, flush=True)
        fill_s = asyncio.run(_fill(broker.bootstrap_servers, args.ids, args.value_bytes))
        cmd = [sys.executable, "-m", "benchmarks.dedup_replay", "--child", broker.bootstrap_servers]
        cmd += ["--ids", str(args.ids), "--tail", str(args.tail), "--timeout", str(args.timeout)]
        child = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout + 300, check=False)
        if child.returncode != 0:
            print(child.stderr[-4000:], file=sys.stderr)
            return 1
        report = json.loads(child.stdout.strip().splitlines()[-1])
        report = {"ids": args.ids, "value_bytes": args.value_bytes, "fill_s": round(fill_s, 1), **report}
        print(json.dumps(report, indent=2))
        return 0 if report["replayed"] else 1


if __name__ == "__main__":
    sys.exit(main())
