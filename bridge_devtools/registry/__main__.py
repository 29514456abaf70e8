"""``python -m bridge_devtools.registry fetch|start|stop|status`` (see the package docstring)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bridge_devtools.registry.fetch import (
    DEFAULT_REGISTRY_VERSION,
    VERSION_ENV,
    RegistryError,
    default_state_dir,
    fetch,
    find_java,
)
from bridge_devtools.registry.process import COMPATIBILITY_LEVELS, LocalRegistry

# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bridge_devtools.registry",
        description="Fetch and run an Apicurio schema registry (in-memory, Confluent-compatible API) "
        "on 127.0.0.1 (no Docker).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--version",
            help=f"Apicurio Registry version (default ${VERSION_ENV} or {DEFAULT_REGISTRY_VERSION}; "
            "for an existing state dir, the version it was created with)",
        )
        sp.add_argument("--state-dir", type=Path, default=None, help=f"log/state dir (default {default_state_dir()})")

    f = sub.add_parser("fetch", help="download and extract a registry version into the cache")
    f.add_argument(
        "--version", help=f"Apicurio Registry version (default ${VERSION_ENV} or {DEFAULT_REGISTRY_VERSION})"
    )
    s = sub.add_parser("start", help="start a detached registry and print its Confluent-compatible API URL")
    common(s)
    s.add_argument("--port", type=int, default=None, help="main HTTP port (default: free port, then kept)")
    s.add_argument("--management-port", type=int, default=None, help="/health port (default: free port, then kept)")
    s.add_argument(
        "--compatibility",
        default="BACKWARD",
        choices=sorted(COMPATIBILITY_LEVELS),
        help="global compatibility level (default BACKWARD, as Confluent's)",
    )
    s.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness (default 90)")
    common(sub.add_parser("stop", help="stop the registry of the state dir (its schemas are lost)"))
    common(sub.add_parser("status", help="print the API URL if running; exit 1 if not"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status (errors are printed, status 2)."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "fetch":
            t0 = time.monotonic()
            app = fetch(args.version)
            java = find_java()
            print(f"{app}  ({time.monotonic() - t0:.1f}s); java {java.version}: {java.path}", file=sys.stderr)
            return 0
        state_dir = args.state_dir or default_state_dir()
        if args.cmd == "start":
            registry = LocalRegistry(
                version=args.version,
                state_dir=state_dir,
                port=args.port,
                management_port=args.management_port,
                compatibility=args.compatibility,
            )
            if registry.is_running():
                running = registry._read_state().get("version", "?")
                print(f"Apicurio Registry {running} already running (pid {registry.pid})", file=sys.stderr)
            else:
                secs = registry.start(args.timeout, detach=True)
                print(
                    f"Apicurio Registry {registry.version} started in {secs:.1f}s (pid {registry.pid}, "
                    f"compatibility {registry.compatibility}); logs: {registry.log_path}",
                    file=sys.stderr,
                )
            print(registry.url)
            return 0
        registry = LocalRegistry(version=args.version, state_dir=state_dir)
        if args.cmd == "stop":
            was = registry.pid
            registry.stop()
            print("stopped" if was else "not running", file=sys.stderr)
            return 0
        if args.cmd == "status":
            if not registry.is_running():
                print(f"not running (state dir {state_dir})", file=sys.stderr)
                return 1
            rss = registry.rss_bytes()
            state = registry._read_state()
            summary = f"Apicurio Registry {registry.version} running, pid {registry.pid}"
            summary += f", compatibility {state.get('compatibility', '?')}"
            print(summary + (f", rss {rss / 2**20:.0f} MiB" if rss else ""), file=sys.stderr)
            print(registry.url)
            return 0
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(args.cmd)


if __name__ == "__main__":
    sys.exit(main())
