"""``python -m benchmarks.chaos``: exactly-once of two bridge replicas on a 3-node cluster under
broker faults, over a longer run than the integration tests (harness: tests/support/chaos.py).

1. Starts a local 3-node KRaft cluster (bridge_devtools.broker.LocalCluster), creates the four
   topics (RF 3, min ISR 2, ``--partitions``; node 3 listed last in every replica list, so it
   leads nothing) and spawns two replicas (``python -m bridge serve``) sharing them.
2. Drives platform-like traffic for ``--duration-s`` at ``--rate`` deliveries/s: each delivery to
   a random replica; no 200 within 3 s → the same request again to a random replica after
   ``--retry-interval-s``, then ``--retry-growth`` times longer each time, up to 4 tries.
3. Meanwhile, one after the other, the faults chosen with ``--faults`` (default
   ``kill,hang,follower,rolling``), the first at 10 % of the run, then 35 %, 60 %, 80 % (a fault
   starts when the previous one is over, if that is later): ``kill`` the leader of a partition
   SIGKILLed (started again after ``--kill-down-s``), ``hang`` that partition's leader SIGSTOPped
   for ``--broker-hang-s``, ``follower`` the node leading nothing SIGKILLed (``--kill-down-s``),
   ``rolling`` a rolling restart, ``isolate`` that partition's leader cut off from its followers'
   replication traffic for ``--isolate-s`` while it stays in the quorum (not in the default set:
   the case docs/delivery.md says is still open); each fault ends when every partition is fully
   in sync again.
4. Once every delivery settled and the topics stopped growing, reads every topic back with
   ``read_committed`` and ``read_uncommitted`` and prints, overall and per phase (deliveries
   first sent before the first fault, or after a fault started and before the next): deliveries,
   answered 200, lost (200'd without all records), duplicates, per-key order violations; then
   every duplicated record's copies with the replica, try and answer that wrote each.

Loopback only; bounded in time; stops what it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bridge_devtools.broker import LocalCluster
from tests.support import chaos

#: When the n-th chosen fault starts, as a share of the traffic's duration.
SHARES = (0.10, 0.35, 0.60, 0.80)
#: ``--faults`` names and their phase labels.
FAULT_NAMES = {
    "kill": "leader SIGKILL",
    "hang": "broker SIGSTOP",
    "follower": "replica SIGKILL",
    "rolling": "rolling restart",
    "isolate": "leader isolated",
}
DEFAULT_FAULTS = "kill,hang,follower,rolling"


def sub_log(log: chaos.DriverLog, ids: set[str]) -> chaos.DriverLog:
    """The part of ``log`` about the deliveries ``ids``."""
    return chaos.DriverLog(
        {i: d for i, d in log.deliveries.items() if i in ids},
        [a for a in log.attempts if a.event_id in ids],
        log.started,
        log.ended,
    )


#: The histogram of the delay from a record's timestamp to its id in a replica's ledger.
TAIL_LAG = "bridge_dedup_tail_lag_seconds"


async def tail_lag_buckets(ports: list[int]) -> dict[float, float]:
    """``{le: cumulative count}`` of :data:`TAIL_LAG`, summed over the replicas on ``ports`` (a
    replica not answering is left out)."""
    totals: dict[float, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for port in ports:
            try:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError):
                continue
            for family in text_string_to_metric_families(text):
                if family.name != TAIL_LAG:
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        le = float(sample.labels["le"])
                        totals[le] = totals.get(le, 0.0) + sample.value
    return totals


def lag_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, str]:
    """p50, p99 and max of the tail lag between two :func:`tail_lag_buckets` snapshots, as the
    upper bound of the bucket each falls in (``≤ 100 ms``; ``> 10 s`` past the last finite one)."""
    les = sorted(after)
    cum = [after[le] - before.get(le, 0.0) for le in les]
    total = cum[-1] if cum else 0.0
    out = {}
    for name, q in (("tail_lag_p50", 0.5), ("tail_lag_p99", 0.99), ("tail_lag_max", 1.0)):
        if total <= 0:
            out[name] = "-"
            continue
        le = next(le for le, c in zip(les, cum, strict=True) if c >= q * total)
        finite = [x for x in les if x != float("inf")]
        out[name] = f"> {finite[-1] * 1000:.0f} ms" if le == float("inf") else f"≤ {le * 1000:.0f} ms"
    return out


def row(
    name: str, log: chaos.DriverLog, committed: chaos.LevelReport, uncommitted: chaos.LevelReport
) -> dict[str, Any]:
    return {
        "phase": name,
        "deliveries": len(log.deliveries),
        "answered_200": len(log.first_ok()),
        "attempts": len(log.attempts),
        "lost": len(committed.lost),
        "dup_events_committed": committed.duplicated_events,
        "extra_records_committed": committed.extra_records,
        "dup_events_uncommitted": uncommitted.duplicated_events,
        "extra_records_uncommitted": uncommitted.extra_records,
        "partial_unanswered": len(committed.partial_unanswered),
        "order_violations": len(committed.order_violations),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    gaps = tuple(args.retry_interval_s * args.retry_growth**i for i in range(3))
    state = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    cluster = LocalCluster(size=3, state_dir=state / "cluster")
    t_start = time.monotonic()
    cluster.start(timeout_s=180)
    pair: chaos.BridgePair | None = None
    try:
        topics = chaos.ChaosTopics(f"chaos-{uuid.uuid4().hex[:6]}")
        await chaos.create_topics(cluster, topics, partitions=args.partitions)
        extra = dict(kv.split("=", 1) for kv in args.bridge_env or ())
        pair = chaos.BridgePair(cluster.bootstrap_servers, topics, state / "bridges", extra=extra)
        await pair.start()
        print(f"cluster and replicas up in {time.monotonic() - t_start:.0f}s; logs in {state}", flush=True)

        flog = chaos.FaultLog()
        phase_starts: list[tuple[float, str]] = []
        lag_snapshots: list[dict[float, float]] = [await tail_lag_buckets(pair.ports)]  # one per phase start

        async def kill(c: LocalCluster, t: chaos.ChaosTopics, log: chaos.FaultLog) -> None:
            await chaos.kill_leader(c, t, log, down_s=args.kill_down_s)

        async def hang(c: LocalCluster, t: chaos.ChaosTopics, log: chaos.FaultLog) -> None:
            await chaos.pause_leader(c, t, log, hang_s=args.broker_hang_s)

        async def follower(c: LocalCluster, t: chaos.ChaosTopics, log: chaos.FaultLog) -> None:
            await chaos.kill_follower(c, t, log, down_s=args.kill_down_s)

        async def isolate(c: LocalCluster, t: chaos.ChaosTopics, log: chaos.FaultLog) -> None:
            await chaos.isolate_leader(c, t, log, isolate_s=args.isolate_s)

        by_name: dict[str, chaos.Fault] = {
            "kill": kill,
            "hang": hang,
            "follower": follower,
            "rolling": chaos.rolling_restart,
            "isolate": isolate,
        }
        chosen = [(share, FAULT_NAMES[f], by_name[f]) for share, f in zip(SHARES, args.faults, strict=False)]

        async def fault_schedule(t0: float) -> None:
            for share, name, fault in chosen:
                delay = t0 + share * args.duration_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                phase_starts.append((time.time(), name))
                lag_snapshots.append(await tail_lag_buckets(pair.ports))
                print(f"+{time.monotonic() - t0:5.0f}s {name}", flush=True)
                await fault(cluster, topics, flog)
                print(f"+{time.monotonic() - t0:5.0f}s {name}: over ({flog.events[-2][1]})", flush=True)

        tag = chaos.new_tag()
        traffic = chaos.Traffic(topics, tag=tag, rooms=chaos.make_rooms(args.rooms), seed=args.seed)
        driver = chaos.PlatformDriver(
            pair.urls,
            traffic,
            rate_per_s=args.rate,
            duration_s=args.duration_s,
            retry_gaps_s=gaps,
            tries=4,
            seed=args.seed,
        )
        t0 = time.monotonic()
        schedule = asyncio.create_task(fault_schedule(t0))
        try:
            log = await driver.run()
        finally:
            await schedule
        print(f"+{time.monotonic() - t0:5.0f}s every delivery settled", flush=True)
        await chaos.settle(cluster.bootstrap_servers, topics.all, quiet_s=5.0, timeout_s=180)
        lag_snapshots.append(await tail_lag_buckets(pair.ports))
        committed = await chaos.read_records(
            cluster.bootstrap_servers, topics.all, isolation_level=chaos.READ_COMMITTED
        )
        uncommitted = await chaos.read_records(
            cluster.bootstrap_servers, topics.all, isolation_level=chaos.READ_UNCOMMITTED
        )
        alive = pair.alive()
    finally:
        if pair is not None:
            await pair.stop()
        cluster.stop(timeout_s=30)

    first_sent = {eid: tries[0].started for eid, tries in log.attempts_of().items()}
    bounds = [(log.started, "before faults"), *phase_starts]
    rows = []
    reports = {}
    for i, (start, name) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else float("inf")
        ids = {eid for eid, t in first_sent.items() if start <= t < end}
        part = sub_log(log, ids)
        c = chaos.check_level(part, committed, chaos.READ_COMMITTED, tag)
        u = chaos.check_level(part, uncommitted, chaos.READ_UNCOMMITTED, tag)
        rows.append({**row(name, part, c, u), **lag_quantiles(lag_snapshots[i], lag_snapshots[i + 1])})
    c = chaos.check_level(log, committed, chaos.READ_COMMITTED, tag)
    u = chaos.check_level(log, uncommitted, chaos.READ_UNCOMMITTED, tag)
    rows.append({**row("all", log, c, u), **lag_quantiles(lag_snapshots[0], lag_snapshots[-1])})
    statuses: dict[str, int] = {}
    for a in log.attempts:
        k = str(a.status) if a.status is not None else (a.error or "none")
        statuses[k] = statuses.get(k, 0) + 1
    report = chaos.ChaosReport(
        len(log.deliveries), len(log.first_ok()), len(log.attempts), statuses, c, u, faults=flog.events
    )
    reports["all"] = report.summary()
    print()
    print(
        f"duration {args.duration_s:.0f}s at {args.rate:.0f}/s, retry gaps {', '.join(f'{g:.0f}' for g in gaps)} s, "
        f"faults {','.join(args.faults)}, hang {args.broker_hang_s:.0f}s, isolation {args.isolate_s:.0f}s; "
        f"wall {time.monotonic() - t_start:.0f}s; replicas alive at the end: {alive}"
    )
    print(f"answers: {dict(sorted(statuses.items()))}")
    print_table(rows)
    print("\nfaults:")
    for t, text in flog.events:
        print(f"  +{t - log.started:6.1f}s {text}")
    if c.duplicates or u.duplicates:
        print(f"\nduplicated records (times relative to the start of the traffic; {args.show} shown):")
        print(report.describe_duplicates(limit=args.show, t0=log.started))
    if c.lost:
        print(f"\nlost: {sorted(c.lost.items())[:20]}")
    return {"rows": rows, "summary": reports["all"], "faults": flog.events, "alive": alive}


def fault_list(text: str) -> list[str]:
    """``--faults``: names of :data:`FAULT_NAMES`, comma-separated, at most one per share."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULT_NAMES]
    if unknown or not names or len(names) > len(SHARES):
        raise argparse.ArgumentTypeError(
            f"{text!r}: 1 to {len(SHARES)} of {', '.join(FAULT_NAMES)}" + (f" (unknown: {unknown})" if unknown else "")
        )
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when a 200'd delivery lost a record or a replica died."""
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=doc.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--rate", type=float, default=40.0, help="new deliveries per second (default 40)")
    parser.add_argument("--retry-interval-s", type=float, default=15.0, help="first retry gap (platform: 15)")
    parser.add_argument("--retry-growth", type=float, default=2.0, help="each further gap is this much longer")
    parser.add_argument("--broker-hang-s", type=float, default=35.0, help="how long the broker is SIGSTOPped")
    parser.add_argument(
        "--faults",
        type=fault_list,
        default=fault_list(DEFAULT_FAULTS),
        help=f"comma-separated, in order, at most {len(SHARES)} of {', '.join(FAULT_NAMES)} (default {DEFAULT_FAULTS})",
    )
    parser.add_argument(
        "--isolate-s", type=float, default=35.0, help="how long the leader is cut off from its followers"
    )
    parser.add_argument("--kill-down-s", type=float, default=20.0, help="how long a SIGKILLed node stays down")
    parser.add_argument("--partitions", type=int, default=3, help="partitions per topic (default 3)")
    parser.add_argument("--rooms", type=int, default=40, help="room pool (keys) of the traffic (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=20, help="duplicated records to print (default 20)")
    parser.add_argument("--state-dir", help="cluster data and bridge logs (default: a new temp dir, kept)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON here")
    parser.add_argument(
        "--bridge-env",
        action="append",
        metavar="NAME=VALUE",
        help="a BRIDGE_* setting of both replicas, e.g. BRIDGE_KAFKA_TRANSACTIONS=true; repeatable",
    )
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    lost = result["summary"]["read_committed"]["lost_events"]
    return 1 if lost or not result["alive"] else 0


if __name__ == "__main__":
    sys.exit(main())
