"""Command line: ``python -m bridge {serve,schemas,dead-letters,platform,config-reference,metrics-reference}``.

``serve`` runs the bridge with the configuration from ``BRIDGE_*`` environment variables (exit
code 2 and a message naming the variable when one is bad). ``schemas write|check`` generates or
checks ``schemas/``; ``schemas register|check-compat`` registers each topic's schema in the schema
registry of ``BRIDGE_SCHEMA_REGISTRY_*``, or asks whether each subject would accept it (exit
codes: :data:`EXIT_OK`, :data:`EXIT_REFUSED`, :data:`EXIT_CONFIG`, :data:`EXIT_REGISTRY`).
``dead-letters list|replay`` lists the dead-letter topic's records or replays them through
today's decode and normalize (:mod:`bridge.dead_letters`; exit codes :data:`EXIT_OK` all
replayed or already delivered, :data:`EXIT_REFUSED` some still fail, :data:`EXIT_CONFIG`,
:data:`EXIT_REGISTRY` the broker is unreachable). ``platform egress-ips`` prints the platform's
event egress IPs as CIDRs, JSON or NetworkPolicy peers (:mod:`bridge.cli_platform`; exit codes
:data:`EXIT_OK`, :data:`EXIT_REFUSED` the platform refused, :data:`EXIT_CONFIG`,
:data:`EXIT_REGISTRY` the platform is unreachable). ``config-reference`` and ``metrics-reference`` print
the generated tables of ``docs/configuration.md`` and ``docs/metrics.md``. (The demo and the local
broker are development tools outside the package: ``bridge_devtools``.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from bridge import __version__
from bridge.settings import Settings, SettingsError, load_settings, setting_docs

EXIT_OK = 0  # done; every subject accepts (or has) our schema
EXIT_REFUSED = 1  # a subject refuses a schema as incompatible or invalid; or schemas/ is stale
EXIT_CONFIG = 2  # a setting is missing or bad
EXIT_REGISTRY = 3  # the registry is unreachable, refuses our credentials, or answered oddly


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
    schemas = sub.add_parser(
        "schemas",
        help="write/check the JSON Schemas in schemas/; register them or check compatibility in a registry",
        description="write|check: the files under --dir. register|check-compat: each topic's schema "
        "in the registry of BRIDGE_SCHEMA_REGISTRY_* under <topic>-value (topics from BRIDGE_TOPIC_*). "
        f"Exit codes: {EXIT_OK} ok, {EXIT_REFUSED} refused/incompatible (or stale files), "
        f"{EXIT_CONFIG} bad settings, {EXIT_REGISTRY} registry unreachable or refusing the credentials.",
    )
    schemas.add_argument("action", choices=("write", "check", "register", "check-compat"))
    schemas.add_argument("--dir", type=Path, default=Path("schemas"), help="schemas directory")
    dead = sub.add_parser(
        "dead-letters",
        help="list the dead-letter topic, or replay dead letters through today's decode and normalize",
        description="list: a table of the dead letters of BRIDGE_TOPIC_DEAD_LETTER (--json: one JSON object "
        "a line). replay: decode and normalize each stored payload with this version of the bridge and "
        "publish what now succeeds to its event topic (header lark_replayed_from); ids already in the event "
        "topics are not published again; what still fails stays and is reported. Kafka settings from "
        f"BRIDGE_*. Exit codes: {EXIT_OK} ok, {EXIT_REFUSED} some dead letters still fail, {EXIT_CONFIG} bad "
        f"settings or arguments, {EXIT_REGISTRY} broker unreachable.",
    )
    dead.add_argument("action", choices=("list", "replay"))
    dead.add_argument("--reason", action="append", default=[], help="only this reason (repeatable)")
    dead.add_argument("--type", action="append", default=[], dest="types", help="only this Lark type (repeatable)")
    dead.add_argument("--since", help="records from this time on (ISO 8601, e.g. 2026-12-01T08:00Z)")
    dead.add_argument("--until", help="records before this time (ISO 8601)")
    dead.add_argument(
        "--offsets",
        action="append",
        default=[],
        metavar="PARTITION:START[-END]",
        help="only this partition, from offset START (to END, exclusive) (repeatable)",
    )
    dead.add_argument("--json", action="store_true", help="one JSON object a line instead of a table")
    dead.add_argument("--dry-run", action="store_true", help="replay: say what would happen, publish nothing")
    platform = sub.add_parser(
        "platform",
        help="ask the platform's Open API with the app's credentials (egress-ips: the webhook's source addresses)",
        description="egress-ips: the addresses the platform pushes webhook events from (GET "
        "/open-apis/event/v1/outbound_ip; the app needs the event:ip_list permission), fetched with "
        "BRIDGE_LARK_APP_ID / BRIDGE_LARK_APP_SECRET at BRIDGE_LARK_DOMAIN. --format plain: one CIDR a "
        "line (for a WAF or security group); json; networkpolicy: Kubernetes NetworkPolicy ipBlock peers "
        f"(YAML). Exit codes: {EXIT_OK} ok, {EXIT_REFUSED} the platform refused or listed nothing usable, "
        f"{EXIT_CONFIG} bad settings or arguments, {EXIT_REGISTRY} the platform unreachable.",
    )
    platform.add_argument("action", choices=("egress-ips",))
    platform.add_argument(
        "--format", choices=("plain", "json", "networkpolicy"), default="plain", help="output format (default plain)"
    )
    sub.add_parser("config-reference", help="print the settings table of docs/configuration.md (markdown)")
    sub.add_parser("metrics-reference", help="print the metrics table of docs/metrics.md (markdown)")
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
        from bridge.server import run

        configure_logging(settings.log_level, settings.log_format)
        warn_unknown_variables(os.environ)
        return run(settings)
    if args.command == "schemas" and args.action in ("register", "check-compat"):
        tool_settings = _tool_settings()
        if tool_settings is None:
            return EXIT_CONFIG
        if tool_settings.schema_registry_url is None:
            print("bridge: BRIDGE_SCHEMA_REGISTRY_URL is not set", file=sys.stderr)
            return EXIT_CONFIG
        return asyncio.run(_registry_command(tool_settings, register=args.action == "register"))
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
    if args.command == "dead-letters":
        dead_letter_settings = _tool_settings()
        if dead_letter_settings is None:
            return EXIT_CONFIG
        from bridge.cli_dead_letters import run_dead_letters

        return run_dead_letters(dead_letter_settings, args)
    if args.command == "platform":
        platform_settings = _tool_settings()
        if platform_settings is None:
            return EXIT_CONFIG
        from bridge.cli_platform import run_platform

        return run_platform(platform_settings, args)
    if args.command == "config-reference":
        from bridge.settings import settings_markdown

        print(settings_markdown())
        return 0
    if args.command == "metrics-reference":
        from bridge.metrics import metrics_markdown

        print(metrics_markdown())
        return 0
    return 2


def _tool_settings() -> Settings | None:
    """Settings of a command that never takes webhook events (the verification token is not
    needed); None after printing the bad variable to stderr."""
    env = dict(os.environ)
    env.setdefault("BRIDGE_LARK_VERIFICATION_TOKEN", "not-used-by-this-command")
    try:
        return load_settings(env)
    except SettingsError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return None


async def _registry_command(settings: Settings, *, register: bool) -> int:
    """``schemas register`` / ``schemas check-compat``: one line per subject on stdout."""
    from bridge.normalize import Topics
    from bridge.registry import RegistryClient, RegistryError, schema_texts, subject_of

    code = EXIT_OK
    async with RegistryClient.from_settings(settings) as client:
        for topic, text in schema_texts(Topics.from_settings(settings)).items():
            subject = subject_of(topic)
            try:
                if register:
                    print(f"{subject}: registered, id {await client.register(subject, text)}")
                    continue
                ok, messages = await client.is_compatible(subject, text)
            except RegistryError as exc:
                refused = exc.reason in ("schema_incompatible", "schema_invalid")
                print(f"{subject}: {exc.reason}: {exc.message}", file=sys.stderr)
                if not refused:
                    return EXIT_REGISTRY
                code = EXIT_REFUSED
                continue
            if ok:
                print(f"{subject}: compatible")
            else:
                code = EXIT_REFUSED
                print(f"{subject}: INCOMPATIBLE: {'; '.join(messages) or 'no details'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
