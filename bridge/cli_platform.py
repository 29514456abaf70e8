"""``python -m bridge platform egress-ips``: what the platform's Open API says, for operators.

``egress-ips`` fetches the addresses the platform pushes webhook events from (``GET
/open-apis/event/v1/outbound_ip``, :meth:`bridge.lark_api.LarkApi.list_outbound_ips`) with the
app of ``BRIDGE_LARK_APP_ID`` / ``BRIDGE_LARK_APP_SECRET`` at ``BRIDGE_LARK_DOMAIN`` (the app
needs the ``event:ip_list`` permission) and prints them on stdout (:func:`render`):

- ``plain`` (default): one CIDR a line (a single address as ``/32`` or ``/128``), sorted — what
  a WAF or a cloud security group takes;
- ``json``: one object: ``domain``, ``fetched_at`` (UTC, ISO 8601), ``ip_list`` (as the platform
  wrote it), ``cidrs``;
- ``networkpolicy``: a YAML list of Kubernetes NetworkPolicy peers (``- ipBlock: {cidr: …}``),
  for ``spec.ingress[].from`` — or the chart's ``networkPolicy.ingressFrom``.

Entries that are no address or range are left out, with a line on stderr. Exit codes: 0 printed,
1 the platform refused (credentials, the permission missing) or listed nothing usable, 2 bad
settings or arguments, 3 the platform unreachable (network, 5xx, rate limited past the call's
bound). The app secret and the token never appear in the output (errors name the platform's code
and log id only). Usage: docs/operations.md, "Allow-listing the platform's egress IPs".
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Callable
from typing import Final, TextIO

import aiohttp

from bridge.allowlist import AllowList
from bridge.lark_api import (
    LarkApi,
    LarkApiError,
    LarkDeadlineExceeded,
    LarkRateLimited,
    LarkServerError,
    LarkTransportError,
)
from bridge.logs import capped
from bridge.settings import Settings

#: Exit code: the list was printed.
EXIT_OK: Final = 0
#: Exit code: the platform refused (credentials, permission), or listed no usable entry.
EXIT_REFUSED: Final = 1
#: Exit code: bad settings or arguments.
EXIT_USAGE: Final = 2
#: Exit code: the platform is unreachable (network, 5xx, rate limited, the call's bound passed).
EXIT_UNREACHABLE: Final = 3
FORMATS: Final = ("plain", "json", "networkpolicy")


def render(listed: AllowList, entries: list[str], fmt: str, *, domain: str, fetched_at: dt.datetime) -> str:
    """The list as ``fmt`` shows it (module docstring).

    Args:
        listed: The parsed list (its ranges are printed).
        entries: The platform's ``ip_list`` as it came (``json`` carries it too).
        fmt: ``plain``, ``json`` or ``networkpolicy``.
        domain: The Open Platform asked (named in ``json`` and ``networkpolicy``).
        fetched_at: When, UTC.

    Returns:
        The text, ending with a newline.

    Raises:
        ValueError: an unknown ``fmt``.
    """
    cidrs = listed.cidrs()
    when = fetched_at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if fmt == "plain":
        return "".join(f"{c}\n" for c in cidrs)
    if fmt == "json":
        body = {"domain": domain, "fetched_at": when, "ip_list": entries, "cidrs": cidrs}
        return json.dumps(body, indent=2) + "\n"
    if fmt == "networkpolicy":
        head = (
            "# NetworkPolicy peers: the platform's event egress IPs\n"
            f"# (GET /open-apis/event/v1/outbound_ip at {domain}, {when}).\n"
            "# Put them under spec.ingress[].from, or the chart's networkPolicy.ingressFrom.\n"
        )
        return head + "".join(f"- ipBlock:\n    cidr: {c}\n" for c in cidrs)
    raise ValueError(f"unknown format {fmt!r}")


async def fetch_entries(
    settings: Settings, *, api_factory: Callable[[aiohttp.ClientSession], LarkApi] | None = None
) -> list[str]:
    """Every ``ip_list`` entry of the platform, through a session of its own.

    Raises:
        LarkApiError: the call failed (the tree of :mod:`bridge.lark_api`).
    """
    async with aiohttp.ClientSession() as session:
        api = api_factory(session) if api_factory is not None else LarkApi.from_settings(session, settings)
        return [entry async for entry in api.list_outbound_ips()]


def run_platform(
    settings: Settings,
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    api_factory: Callable[[aiohttp.ClientSession], LarkApi] | None = None,
) -> int:
    """``python -m bridge platform egress-ips [--format …]``.

    Args:
        settings: The app's credentials and domain (``BRIDGE_LARK_*``).
        args: ``action`` (``egress-ips``) and ``format``.
        out, err: Where the list and the messages go (default stdout, stderr).
        api_factory: Builds the Open API client (default :meth:`LarkApi.from_settings`).

    Returns:
        The exit code (module docstring).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if not settings.lark_app_id or settings.lark_app_secret is None:
        print("bridge: BRIDGE_LARK_APP_ID and BRIDGE_LARK_APP_SECRET are required (the app's credentials)", file=err)
        return EXIT_USAGE
    try:
        entries = asyncio.run(fetch_entries(settings, api_factory=api_factory))
    except (LarkTransportError, LarkServerError, LarkRateLimited, LarkDeadlineExceeded) as exc:
        print(f"bridge: the platform is unreachable: {exc}", file=err)
        return EXIT_UNREACHABLE
    except LarkApiError as exc:
        hint = " (grant the app the event:ip_list permission)" if exc.name == "SCOPE_REQUIRED" else ""
        print(f"bridge: the platform refused: {exc}{hint}", file=err)
        return EXIT_REFUSED
    listed = AllowList.parse(entries)
    if listed.rejected:
        shown = ", ".join(repr(capped(e)) for e in listed.rejected[:5])
        print(f"bridge: left out {len(listed.rejected)} entries that are no address or range: {shown}", file=err)
    if not listed.networks:
        print("bridge: the platform listed no usable egress address", file=err)
        return EXIT_REFUSED
    fetched_at = dt.datetime.now(dt.UTC)
    out.write(render(listed, entries, args.format, domain=settings.lark_domain, fetched_at=fetched_at))
    return EXIT_OK
