"""``python -m bridge dead-letters list|replay``: the command-line face of :mod:`bridge.dead_letters`.

Output: a table (or ``--json``, one object a line) on stdout, a summary and errors on stderr, a
progress bar on stderr during a replay when stderr is a terminal (tqdm). Exit codes: 0 every
selected dead letter was replayed (or already delivered; ``list``: always), 1 some still fail, 2
bad settings or arguments, 3 the broker is unreachable. Usage and examples: docs/operations.md,
"Dead letters".
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

#: Exit code: every selected dead letter was replayed or already delivered (``list``: always).
EXIT_OK = 0
#: Exit code: some selected dead letters still fail.
EXIT_STILL_FAILING = 1
#: Exit code: bad settings or arguments.
EXIT_USAGE = 2
#: Exit code: the broker is unreachable (:class:`bridge.dead_letters.BrokerUnavailable`).
EXIT_BROKER = 3
#: Longest value shown in a table cell (a hostile event id must not break the layout).
MAX_CELL_CHARS = 48


class UsageError(ValueError):
    """An argument that does not parse; the message names it."""


def parse_time_ms(value: str, flag: str) -> int:
    """Parse an ISO 8601 time into unix ms.

    Args:
        value: The time, with ``Z`` or an offset; a time without one is UTC.
        flag: The option it came from (``--since``), for the error message.

    Returns:
        The time, unix milliseconds.

    Raises:
        UsageError: ``value`` is not an ISO 8601 time.
    """
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag}: not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def parse_offsets(values: Sequence[str]) -> dict[int, tuple[int, int | None]]:
    """Parse ``--offsets`` values into per-partition offset ranges.

    Args:
        values: ``PARTITION:START[-END]`` each, ``END`` exclusive: ``["0:10-20", "3:5"]``.

    Returns:
        ``{partition: (start, end or None)}``: ``{0: (10, 20), 3: (5, None)}``.

    Raises:
        UsageError: A value does not parse, or its range is empty or negative.
    """
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
    """Build the :class:`~bridge.dead_letters.Selection` of the command's filters.

    Args:
        args: The parsed command line (``reason``, ``types``, ``since``, ``until``,
            ``offsets``).

    Returns:
        The selection.

    Raises:
        UsageError: A time or an offset range does not parse.
    """
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
    """Print rows as a plain-text table, columns as wide as their widest cell.

    A cell shows at most :data:`MAX_CELL_CHARS` characters (then ``…``), unprintable ones as
    ``?``; None is an empty cell.

    Args:
        rows: The rows, one value per column.
        head: The column titles; a line of dashes follows them.
        out: Where to print.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(head)]
    for row in [list(head), ["-" * w for w in widths], *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


#: The columns of ``dead-letters list``.
LIST_HEAD = ("received_at", "reason", "lark_type", "event_id", "tenant_key", "path", "where")


def _list_row(dl: DeadLetter) -> list[Any]:
    return [dl.received_at, dl.reason, dl.lark_type, dl.event_id, dl.tenant_key, dl.path, dl.where]


async def list_command(settings: Settings, selection: Selection, *, as_json: bool, out: TextIO) -> int:
    """Print the selected dead letters to ``out``, and their count to stderr.

    Args:
        settings: The bridge's settings.
        selection: Which dead letters to print.
        as_json: One JSON object a line instead of a table.
        out: Where to print them.

    Returns:
        :data:`EXIT_OK`.

    Raises:
        BrokerUnavailable: As :func:`bridge.dead_letters.read`.
    """
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
    """Replay (or judge) the selected dead letters; print one line each and a summary.

    Lines go to ``out``, the summary (counts per outcome) and a progress bar (when stderr is a
    terminal) to stderr.

    Args:
        settings: The bridge's settings.
        selection: Which dead letters to replay.
        dry_run: Publish nothing; only judge what would be replayed.
        as_json: One JSON object a line instead of a table.
        out: Where to print the lines.

    Returns:
        :data:`EXIT_OK`, or :data:`EXIT_STILL_FAILING` when some still fail.

    Raises:
        BrokerUnavailable: As :func:`bridge.dead_letters.replay`.
    """
    outcomes: list[ReplayOutcome] = await replay(settings, selection, dry_run=dry_run, progress=_progress)
    if as_json:
        for o in outcomes:
            print(json.dumps(o.as_json(), ensure_ascii=False), file=out)
    else:
        table(
            ([o.kind, o.records, *_list_row(o.dead_letter)[:4], o.error or ""] for o in outcomes),
            ("outcome", "records", "received_at", "reason", "lark_type", "event_id", "now failing with"),
            out,
        )
    counts = Counter(o.kind for o in outcomes)
    summary = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items())) or "nothing selected"
    print(f"{'dry run: ' if dry_run else ''}{summary}", file=sys.stderr)
    return EXIT_STILL_FAILING if counts["still_failing"] else EXIT_OK


def run_dead_letters(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``dead-letters list|replay``; errors go to stderr as one ``bridge: …`` line.

    Args:
        settings: The bridge's settings.
        args: The parsed command line (``action``, ``json``, ``dry_run`` and the filters).
        out: Where the lines go. Default stdout.

    Returns:
        The exit code: :data:`EXIT_OK`, :data:`EXIT_STILL_FAILING`, :data:`EXIT_USAGE` (an
        argument that does not parse) or :data:`EXIT_BROKER`.
    """
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
