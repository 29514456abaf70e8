"""``python -m bridge_devtools.broker fetch|start|stop|restart|status|cluster`` (see the package docstring)."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bridge_devtools.broker.cluster import _CLUSTER_STATE_FILE, LocalCluster
from bridge_devtools.broker.fetch import (
    _STATE_FILE,
    DEFAULT_KAFKA_VERSION,
    VERSION_ENV,
    BrokerError,
    default_cluster_dir,
    default_state_dir,
    fetch,
)
from bridge_devtools.broker.process import LocalBroker

# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bridge_devtools.broker",
        description="Fetch and run a single-node KRaft Kafka broker on 127.0.0.1 (no Docker).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--version",
            help=f"Kafka version (default ${VERSION_ENV} or {DEFAULT_KAFKA_VERSION}; "
            "for an existing state dir, the version it was created with)",
        )
        sp.add_argument(
            "--state-dir", type=Path, default=None, help=f"config/data/log dir (default {default_state_dir()})"
        )
        sp.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free port, then kept)")
        sp.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness (default 60)")

    f = sub.add_parser("fetch", help="download the jars of a Kafka version into the cache")
    f.add_argument("--version", help=f"Kafka version (default ${VERSION_ENV} or {DEFAULT_KAFKA_VERSION})")
    s = sub.add_parser("start", help="start a detached broker and print its bootstrap servers")
    common(s)
    s.add_argument("--reset", action="store_true", help="delete the state dir's data/config first")
    common(sub.add_parser("restart", help="stop and start again (same port and data)"))
    common(sub.add_parser("stop", help="stop the broker of the state dir"))
    common(sub.add_parser("status", help="print bootstrap servers if running; exit 1 if not"))

    c = sub.add_parser("cluster", help="a multi-node KRaft cluster (combined nodes) for fault tests")
    csub = c.add_subparsers(dest="cluster_cmd", required=True)

    def cluster_common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--version",
            help=f"Kafka version (default ${VERSION_ENV} or {DEFAULT_KAFKA_VERSION}; "
            "for an existing state dir, the version it was created with)",
        )
        sp.add_argument(
            "--state-dir", type=Path, default=None, help=f"dir of all nodes (default {default_cluster_dir()})"
        )
        sp.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)")

    cs = csub.add_parser("start", help="start a detached cluster and print its bootstrap servers")
    cluster_common(cs)
    cs.add_argument("--size", type=int, default=3, help="number of nodes (default 3; a state dir keeps its size)")
    cs.add_argument("--reset", action="store_true", help="delete the cluster's nodes (data, config) first")
    cluster_common(csub.add_parser("stop", help="stop every node of the state dir's cluster"))
    cluster_common(
        csub.add_parser("status", help="print each node's state, and bootstrap servers if all run; exit 1 if not")
    )
    return p


def _cluster(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or default_cluster_dir()
    if args.cluster_cmd == "start" and args.reset:
        if any(b.is_running() for b in LocalCluster(state_dir=state_dir).nodes.values()):
            raise BrokerError(f"a node of the cluster in {state_dir} is running; stop it before --reset")
        for path in [state_dir / _CLUSTER_STATE_FILE, *state_dir.glob("node-*")]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    cluster = LocalCluster(getattr(args, "size", 3), args.version, state_dir)
    running = [n for n, b in cluster.nodes.items() if b.is_running()]
    if args.cluster_cmd == "start":
        if len(running) == cluster.size:
            print(f"Kafka {cluster.version} cluster already running", file=sys.stderr)
        elif running:
            raise BrokerError(f"nodes {running} of {state_dir} are running, others not; stop the cluster first")
        else:
            secs = cluster.start(timeout_s=args.timeout, detach=True)
            print(
                f"Kafka {cluster.version}, {cluster.size} nodes, started in {secs:.1f}s; logs: {state_dir}/node-*/logs",
                file=sys.stderr,
            )
        print(cluster.bootstrap_servers)
        return 0
    if args.cluster_cmd == "stop":
        cluster.stop(timeout_s=args.timeout)
        print("stopped" if running else "not running", file=sys.stderr)
        return 0
    if args.cluster_cmd == "status":
        for n, b in cluster.nodes.items():
            state = "paused" if b.is_paused() else "running" if b.is_running() else "stopped"
            rss = b.rss_bytes()
            detail = f", pid {b.pid}" + (f", rss {rss / 2**20:.0f} MiB" if rss else "") if b.pid else ""
            print(f"node {n}: {state}{detail}", file=sys.stderr)
        if len(running) != cluster.size:
            return 1
        print(cluster.bootstrap_servers)
        return 0
    raise AssertionError(args.cluster_cmd)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status (errors are printed, status 2)."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "fetch":
            t0 = time.monotonic()
            libs = fetch(args.version)
            print(f"{libs}  ({time.monotonic() - t0:.1f}s)", file=sys.stderr)
            return 0
        if args.cmd == "cluster":
            return _cluster(args)
        state_dir = args.state_dir or default_state_dir()
        if args.cmd == "start" and args.reset:
            if LocalBroker(state_dir=state_dir).is_running():
                raise BrokerError(f"broker in {state_dir} is running; stop it before --reset")
            for name in ("data", "config", _STATE_FILE):
                path = state_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        broker = LocalBroker(version=args.version, state_dir=state_dir, port=args.port)
        if args.cmd == "start":
            if broker.is_running():
                running = broker._read_state().get("version", "?")
                print(f"Kafka {running} already running (pid {broker.pid})", file=sys.stderr)
            else:
                secs = broker.start(args.timeout, detach=True)
                print(
                    f"Kafka {broker.version} started in {secs:.1f}s (pid {broker.pid}); logs: {broker.log_path}",
                    file=sys.stderr,
                )
            print(broker.bootstrap_servers)
            return 0
        if args.cmd == "stop":
            was = broker.pid
            broker.stop()
            print("stopped" if was else "not running", file=sys.stderr)
            return 0
        if args.cmd == "restart":
            secs = broker.restart(args.timeout, detach=True)
            print(f"Kafka {broker.version} restarted in {secs:.1f}s (pid {broker.pid})", file=sys.stderr)
            print(broker.bootstrap_servers)
            return 0
        if args.cmd == "status":
            if not broker.is_running():
                print(f"not running (state dir {state_dir})", file=sys.stderr)
                return 1
            rss = broker.rss_bytes()
            print(
                f"Kafka {broker.version} running, pid {broker.pid}, rss {rss / 2**20:.0f} MiB"
                if rss
                else f"Kafka {broker.version} running, pid {broker.pid}",
                file=sys.stderr,
            )
            print(broker.bootstrap_servers)
            return 0
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
