"""Logging: JSON lines at the configured level; lines below it are dropped before rendering."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bridge.logs import configure_logging
from bridge.settings import LogFormat


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.parametrize(("level", "expected"), [("WARNING", ["warn"]), ("INFO", ["request", "warn"])])
def test_level_filters_request_lines(level: str, expected: list[str]) -> None:
    buf = io.StringIO()
    configure_logging(level, LogFormat.JSON, buf)
    log = structlog.get_logger("bridge.request.test")
    log.info("request", status=200)
    log.warning("warn", reason="x")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [line["event"] for line in lines] == expected
    assert all(line["logger"] == "bridge.request.test" for line in lines)


def test_request_ids_are_unique_per_process_and_across_processes() -> None:
    from bridge.logs import RequestIds

    a, b = RequestIds(), RequestIds()  # two processes (or replicas): two random prefixes
    ids = [a() for _ in range(1000)] + [b() for _ in range(1000)]
    assert len(set(ids)) == 2000
    prefix, _, counter = ids[0].partition("-")
    assert len(prefix) == 16 and int(prefix, 16) >= 0 and counter == "1"
