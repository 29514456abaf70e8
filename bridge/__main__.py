"""Command line: ``python -m bridge {serve,schemas,config-reference}``.

``serve`` runs the bridge with the configuration from ``BRIDGE_*`` environment variables (exit
code 2 and a message naming the variable when one is bad). ``schemas write|check`` generates or
checks ``schemas/``. ``config-reference`` prints README's settings table. (The demo and the
local broker are development tools outside the package: ``bridge_devtools``.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from bridge import __version__
from bridge.settings import SettingsError, load_settings, setting_docs


def settings_help() -> str:
    """The settings reference as plain text (``--help`` epilog), derived from the model."""
    lines = ["settings (environment variables):"]
    for d in setting_docs():
        flag = " [secret]" if d.secret else ""
        lines.append(f"  {d.env}  (default: {d.default}){flag}\n      {d.description}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge",
        description="Lark/Feishu meeting-room events -> verified CloudEvents -> Kafka.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve",
        help="run the webhook -> Kafka bridge",
        description="Run the bridge. All configuration comes from the environment.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schemas = sub.add_parser("schemas", help="write or check the JSON Schemas in schemas/")
    schemas.add_argument("action", choices=("write", "check"))
    schemas.add_argument("--dir", type=Path, default=Path("schemas"), help="schemas directory")
    sub.add_parser("config-reference", help="print the settings table of README (markdown)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = load_settings()
        except SettingsError as exc:
            print(f"bridge: {exc}", file=sys.stderr)
            return 2
        from bridge.logs import configure_logging, warn_unknown_variables
        from bridge.server import serve

        configure_logging(settings.log_level, settings.log_format)
        warn_unknown_variables(os.environ)
        asyncio.run(serve(settings))
        return 0
    if args.command == "schemas":
        from bridge import schemas

        if args.action == "write":
            for path in schemas.write(args.dir):
                print(f"wrote {path}")
            return 0
        stale = schemas.check(args.dir)
        for rel in stale:
            print(f"out of date: {args.dir / rel} (run: python -m bridge schemas write)", file=sys.stderr)
        return 1 if stale else 0
    if args.command == "config-reference":
        from bridge.settings import settings_markdown

        print(settings_markdown())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
