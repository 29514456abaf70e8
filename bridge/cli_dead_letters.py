"""``python -m bridge dead-letters list|replay``: the command-line face of :mod:`bridge.dead_letters`.

Output: a table (or ``--json``, one object a line) on stdout, a summary and errors on stderr, a
progress bar on stderr during a replay when stderr is a terminal (tqdm). Exit codes: 0 every
selected dead letter was replayed (or already delivered; ``list``: always), 1 some still fail, 2
bad settings or arguments, 3 the broker is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from bridge.dead_letters import BrokerUnavailable, DeadLetter, ReplayOutcome, Selection, read, replay
from bridge.settings import Settings

EXIT_OK = 0
EXIT_STILL_FAILING = 1
EXIT_USAGE = 2
EXIT_BROKER = 3
#: Longest value shown in a table cell (a hostile delivery id must not break the layout).
MAX_CELL_CHARS = 48


class UsageError(ValueError):
    """An argument that does not parse; the message names it."""


def parse_time_ms(value: str, flag: str) -> int:
    """ISO 8601 (``Z`` or an offset; a time without one is UTC) → unix ms. Raises :class:`UsageError`."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag}: not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def parse_offsets(values: Sequence[str]) -> dict[int, tuple[int, int | None]]:
    """``["0:10-20", "3:5"]`` → ``{0: (10, 20), 3: (5, None)}``. Raises :class:`UsageError`."""
    out: dict[int, tuple[int, int | None]] = {}
    for value in values:
        partition, sep, span = value.partition(":")
        start, _, end = span.partition("-")
        try:
            p, a, b = int(partition), int(start), (int(end) if end else None)
        except ValueError:
            p = -1
        if not sep or p < 0:
            raise UsageError(f"--offsets: expected PARTITION:START[-END], got {value!r}")
        if a < 0 or (b is not None and b <= a):
            raise UsageError(f"--offsets: empty or negative range {value!r}")
        out[p] = (a, b)
    return out


def selection_of(args: argparse.Namespace) -> Selection:
    """The :class:`Selection` of the command's filters. Raises :class:`UsageError`."""
    return Selection(
        reasons=frozenset(args.reason),
        types=frozenset(args.types),
        since_ms=parse_time_ms(args.since, "--since") if args.since else None,
        until_ms=parse_time_ms(args.until, "--until") if args.until else None,
        offsets=parse_offsets(args.offsets),
    )


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def table(rows: Iterable[Sequence[Any]], head: Sequence[str], out: TextIO) -> None:
    """``rows`` as a plain-text table with ``head``, columns as wide as their widest cell."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(head)]
    for row in [list(head), ["-" * w for w in widths], *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


LIST_HEAD = ("received_at", "reason", "lark_type", "delivery_id", "tenant_key", "path", "where")


def _list_row(dl: DeadLetter) -> list[Any]:
    return [dl.received_at, dl.reason, dl.lark_type, dl.delivery_id, dl.tenant_key, dl.path, dl.where]


async def list_command(settings: Settings, selection: Selection, *, as_json: bool, out: TextIO) -> int:
    """Print the selected dead letters; returns :data:`EXIT_OK`."""
    letters = [dl async for dl in read(settings, selection)]
    if as_json:
        for dl in letters:
            print(json.dumps(dl.as_json(), ensure_ascii=False), file=out)
    else:
        table((_list_row(dl) for dl in letters), LIST_HEAD, out)
    print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return EXIT_OK


def _progress(items: Iterable[DeadLetter], total: int) -> Iterable[DeadLetter]:
    from tqdm import tqdm

    bar: Iterable[DeadLetter] = tqdm(
        items, total=total, unit="dead letter", file=sys.stderr, disable=not sys.stderr.isatty()
    )
    return bar


async def replay_command(settings: Settings, selection: Selection, *, dry_run: bool, as_json: bool, out: TextIO) -> int:
    """Replay (or, with ``dry_run``, judge) the selected dead letters; print one line each and a
    summary; returns :data:`EXIT_OK` or :data:`EXIT_STILL_FAILING`."""
    outcomes: list[ReplayOutcome] = await replay(settings, selection, dry_run=dry_run, progress=_progress)
    if as_json:
        for o in outcomes:
            print(json.dumps(o.as_json(), ensure_ascii=False), file=out)
    else:
        table(
            ([o.kind, o.records, *_list_row(o.dead_letter)[:4], o.error or ""] for o in outcomes),
            ("outcome", "records", "received_at", "reason", "lark_type", "delivery_id", "now failing with"),
            out,
        )
    counts = Counter(o.kind for o in outcomes)
    summary = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items())) or "nothing selected"
    print(f"{'dry run: ' if dry_run else ''}{summary}", file=sys.stderr)
    return EXIT_STILL_FAILING if counts["still_failing"] else EXIT_OK


def run_dead_letters(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``dead-letters list|replay`` with parsed ``args``; returns the exit code."""
    out = out or sys.stdout
    try:
        selection = selection_of(args)
    except UsageError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.action == "list":
            return asyncio.run(list_command(settings, selection, as_json=args.json, out=out))
        return asyncio.run(replay_command(settings, selection, dry_run=args.dry_run, as_json=args.json, out=out))
    except BrokerUnavailable as exc:
        print(f"bridge: broker unavailable: {exc}", file=sys.stderr)
        return EXIT_BROKER
