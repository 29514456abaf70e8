"""Logging: JSON lines at the configured level; lines below it are dropped before rendering."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from bridge.logs import MAX_CLIENT_LOG_KINDS, ClientLogFilter, Outage, configure_logging
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


def _record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_the_kafka_clients_lines_are_demoted_and_throttled_by_kind_others_pass_untouched() -> None:
    now = [0.0]
    f = ClientLogFilter(interval_s=30, clock=lambda: now[0])
    first = _record("aiokafka.conn", logging.ERROR, "Unable connect to node with id %s", 1)
    assert f.filter(first) and first.levelno == logging.WARNING and first.levelname == "WARNING"
    for node in (2, 3, 4):  # same kind (template), other arguments: held back
        assert not f.filter(_record("aiokafka.conn", logging.ERROR, "Unable connect to node with id %s", node))
    other_kind = _record("aiokafka.cluster", logging.ERROR, "Topic %s not found", "t")
    assert f.filter(other_kind)
    now[0] = 31.0
    later = _record("aiokafka.conn", logging.ERROR, "Unable connect to node with id %s", 5)
    assert (
        f.filter(later)
        and later.getMessage() == "Unable connect to node with id 5 (3 more like it since the last line)"
    )
    ours = _record("bridge.publish", logging.ERROR, "publish failed")
    assert f.filter(ours) and ours.levelno == logging.ERROR


def test_the_client_filter_remembers_a_bounded_number_of_kinds() -> None:
    f = ClientLogFilter(interval_s=30, clock=lambda: 0.0)
    for i in range(MAX_CLIENT_LOG_KINDS * 3):
        f.filter(_record("aiokafka.conn", logging.WARNING, f"kind {i}"))
    assert len(f._throttles) == MAX_CLIENT_LOG_KINDS


def test_an_outage_is_one_warning_then_one_recovery_line_with_its_length_and_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = Outage(logging.getLogger("bridge.test"), "kafka producer", "events are answered 503", clock=lambda: now[0])
    outage.recovered()  # nothing ongoing: nothing said
    with caplog.at_level(logging.DEBUG, logger="bridge.test"):
        for _ in range(5):
            outage.failed("connect: KafkaConnectionError")
        now[0] = 112.5
        outage.recovered()
    by_level = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert by_level == [
        (
            "WARNING",
            "kafka producer: unavailable (connect: KafkaConnectionError); events are answered 503 until it is back",
        ),
        ("INFO", "kafka producer: back after 12.5s (5 failures meanwhile)"),
    ]
    assert not outage.ongoing and outage.failures == 0
