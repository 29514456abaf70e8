"""Logging: stdlib ``logging`` rendered by structlog, JSON lines by default (``BRIDGE_LOG_FORMAT``).

One "canonical" line per webhook request is written by ``bridge.ingress.webhook`` (event
``request``); other libraries' records (aiokafka, aiohttp) go through the same formatter. Nothing
here ever receives a body, a header, a token or a key (structlog docs, "Logging Best Practices").
The lines and their fields: docs/operations.md, "Logs".
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, Final, TextIO

import structlog

from bridge.settings import LogFormat, deprecated_variables, unknown_variables

#: The id of the webhook request being handled: every line logged meanwhile, by the bridge or a
#: library, carries it as ``request_id`` (:func:`add_request_id`). One context variable set and
#: reset per request — cheaper than binding structlog's context variables (a context manager and
#: a dict of variables per request).
REQUEST_ID: ContextVar[str | None] = ContextVar("bridge_request_id", default=None)

#: Longest value of a payload-derived log field (Lark type, event id, tenant), in characters.
MAX_LOG_FIELD_CHARS = 128


def capped(value: str | None) -> str | None:
    """A payload-derived log field, bounded whatever a payload holds.

    Args:
        value: the field (a Lark type, event id, tenant key, a platform's error text), or None.

    Returns:
        ``value`` unchanged when it has at most :data:`MAX_LOG_FIELD_CHARS` characters, else its
        first ``MAX_LOG_FIELD_CHARS - 1`` characters followed by ``…``; None stays None.
    """
    if value is None or len(value) <= MAX_LOG_FIELD_CHARS:
        return value
    return value[: MAX_LOG_FIELD_CHARS - 1] + "…"


def add_request_id(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: add ``request_id`` from :data:`REQUEST_ID` when a request is being handled.

    A ``request_id`` the line already has is kept.

    Args:
        logger: The wrapped logger (unused).
        method: The name of the log method called (unused).
        event_dict: The event being logged.

    Returns:
        ``event_dict``, with ``request_id`` set when a request is being handled.
    """
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def configure_logging(level: str, fmt: LogFormat, stream: TextIO | None = None) -> None:
    """Route all logging to one stream as JSON or console lines.

    Process-wide by nature (the logging module is); call once at start. Every line carries the
    level, the logger's name, an ISO 8601 UTC timestamp, structlog's context variables and
    ``request_id`` (:func:`add_request_id`). aiokafka logs at WARNING or above, never ERROR, each
    kind of its lines at most once per :data:`CLIENT_LOG_INTERVAL_S` (:class:`ClientLogFilter`);
    aiohttp's access log at WARNING.

    Args:
        level: The root level, any case (``info``, ``WARNING``, …).
        fmt: JSON lines or console lines (``BRIDGE_LOG_FORMAT``).
        stream: Where lines go. Default stderr.
    """
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer() if fmt == LogFormat.JSON else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(ClientLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every failed reconnect at ERROR/WARNING; keep them but not at DEBUG noise.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    structlog.configure(
        # filter_by_level first: a request line below the configured level (e.g. at WARNING in
        # production) costs one level check, not a rendered event (BENCHMARKS.md).
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def warn_unknown_variables(environ: Mapping[str, str]) -> int:
    """Log one warning per ``BRIDGE_*`` variable that is no setting, naming the closest setting,
    and one per variable set under a renamed setting's old name, naming the new one.

    Names only, never values. The bridge still starts: an unknown variable may be legitimate.

    Args:
        environ: The process environment (or a stand-in).

    Returns:
        How many unknown variables were found (:func:`bridge.settings.unknown_variables`).
    """
    found = unknown_variables(environ)
    log = structlog.get_logger("bridge.settings")
    for name, closest in found:
        log.warning("unknown setting variable ignored", variable=name, did_you_mean=closest)
    for old, new in deprecated_variables(environ):
        ignored = new in {k.upper() for k in environ}
        log.warning("deprecated setting variable", variable=old, use_instead=new, ignored_because_set=ignored)
    return len(found)


class Throttle:
    """Bounds a log line that a client or an outage can repeat at will.

    :meth:`admit` says whether to write it — at most once per ``interval_s`` seconds — and how
    many were held back since the last one written (put that count in the line). The first call
    always admits.

    Args:
        interval_s: Least time between two lines written, in seconds.
        clock: Returns monotonic seconds. Default :func:`time.monotonic`.
    """

    __slots__ = ("_clock", "_interval_s", "_last", "_suppressed")

    def __init__(self, interval_s: float, clock: Any = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last = -float("inf")
        self._suppressed = 0

    def admit(self) -> int | None:
        """Decide whether to write the line now.

        Returns:
            None: do not write it (it is counted); else how many were held back since the last
            line written.
        """
        now = self._clock()
        if now - self._last < self._interval_s:
            self._suppressed += 1
            return None
        held, self._last, self._suppressed = self._suppressed, now, 0
        return held


#: aiokafka's lines of one kind (logger + message template) are written at most once per this
#: many seconds; the count held back goes into the next one.
CLIENT_LOG_INTERVAL_S: Final = 30.0
#: Most kinds of aiokafka line throttled at once (the oldest forgotten first): the filter's memory
#: stays bounded whatever the client logs.
MAX_CLIENT_LOG_KINDS: Final = 256


class ClientLogFilter(logging.Filter):
    """The Kafka client's lines as one story, not hundreds: aiokafka logs every failed connection
    and request, at ERROR, for outages the bridge rides out (the bridge's own lines say when the
    broker is away and back, with counts). On the handler, for records of ``aiokafka.*``: ERROR
    and above become WARNING, and each kind of line (logger and message template) is written at
    most once per ``interval_s`` seconds with how many were held back. Other records pass as
    they are.

    Args:
        interval_s: Least time between two lines of one kind, seconds.
        clock: Returns monotonic seconds. Default :func:`time.monotonic`.
    """

    def __init__(self, interval_s: float = CLIENT_LOG_INTERVAL_S, clock: Any = time.monotonic) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._throttles: OrderedDict[tuple[str, str], Throttle] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to write ``record`` (rewritten in place when it is aiokafka's)."""
        if not record.name.startswith("aiokafka"):
            return True
        key = (record.name, str(record.msg))
        throttle = self._throttles.get(key)
        if throttle is None:
            throttle = self._throttles[key] = Throttle(self._interval_s, self._clock)
            if len(self._throttles) > MAX_CLIENT_LOG_KINDS:
                self._throttles.popitem(last=False)
        else:
            self._throttles.move_to_end(key)
        held = throttle.admit()
        if held is None:
            return False
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if held:
            record.msg, record.args = f"{record.getMessage()} ({held} more like it since the last line)", None
        return True


class Outage:
    """One story per outage in the log: the first failure is a WARNING naming what is away and
    why, the failures after it are counted (DEBUG), and the recovery is one INFO line with how
    long it lasted and how many failures it held.

    Args:
        log: The logger of the part that sees the outage.
        what: What is away, for the lines (``kafka producer``, ``dedup feed``).
        consequence: What it means meanwhile, for the first line (``events are answered 503``).
        clock: Returns monotonic seconds. Default :func:`time.monotonic`.
    """

    __slots__ = ("_clock", "_consequence", "_log", "_since", "_what", "failures")

    def __init__(self, log: logging.Logger, what: str, consequence: str, clock: Any = time.monotonic) -> None:
        self._log = log
        self._what = what
        self._consequence = consequence
        self._clock = clock
        self._since: float | None = None
        self.failures = 0

    @property
    def ongoing(self) -> bool:
        """A failure was seen and no recovery since."""
        return self._since is not None

    def failed(self, reason: str) -> None:
        """Count one failure; the first of an outage is logged at WARNING.

        Args:
            reason: A short identifier or exception class name (never request data or secrets).
        """
        self.failures += 1
        if self._since is None:
            self._since = self._clock()
            self._log.warning("%s: unavailable (%s); %s until it is back", self._what, reason, self._consequence)
        else:
            self._log.debug("%s: still unavailable (%s)", self._what, reason)

    def recovered(self) -> None:
        """End the outage, if one is ongoing, with one INFO line; else do nothing."""
        if self._since is None:
            return
        lasted = self._clock() - self._since
        self._log.info("%s: back after %.1fs (%d failures meanwhile)", self._what, lasted, self.failures)
        self._since, self.failures = None, 0


class RequestIds:
    """Request ids for requests that bring no ``X-Request-Id``; call it for the next one.

    An id is a random 64-bit prefix per process (``os.urandom``) and a counter from 1,
    ``<16 hex>-<hex>`` — unique across replicas and restarts like a UUID4, at the cost of a
    counter step instead of 16 random bytes each. Takes no constructor arguments.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex() + "-"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"
