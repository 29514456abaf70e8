"""``python -m benchmarks.soak``: steady traffic for a long time on a 3-node cluster and two bridge
replicas; does anything grow that should not (memory, file descriptors, metric series), and is
every delivery still published exactly once at the end? (harness: tests/support/chaos.py).

1. Starts a local 3-node KRaft cluster (bridge_devtools.broker.LocalCluster), creates the four
   topics (RF 3, min ISR 2, ``--partitions``) and spawns two replicas (``python -m bridge serve``,
   ``BRIDGE_LOG_LEVEL=INFO``; ``--dedup-ttl-s`` sets ``BRIDGE_DEDUP_TTL_S`` so the ledger can plateau).
2. Sends the chaos driver's platform requests (AES-encrypted, signed; 60 % third-party bookings of
   1-3 rooms, 25 % reserve-config updates, 15 % room creations, over ``--rooms`` rooms) at
   ``--rate`` deliveries/s (default 200: see BENCHMARKS.md's soak section for why), open loop, for
   ``--duration-s`` (default 30 minutes): each delivery to a random replica, no
   200 within 3 s → the same request again to a random replica after ``--retry-interval-s``, then
   twice as long each time, up to 4 tries (the platform's behaviour, its gaps shortened). Its
   keep-alive pool (``--client-pool``) is LIFO by default (:class:`LifoConnector`): the
   connections beyond the current concurrency close after 10 s idle; aiohttp's own FIFO pool
   (``fifo``) keeps every connection a burst of slow answers ever opened (BENCHMARKS.md).
3. Every ``--sample-s`` (and before the traffic, and at its end) samples each replica: RSS
   (``VmRSS``), open fds (``/proc/<pid>/fd``; those that are inbound HTTP connections from the
   driver counted apart, and those by TCP state from ``/proc/<pid>/net/tcp{,6}``: ``ESTABLISHED``,
   ``CLOSE_WAIT`` — the client closed, the replica not yet —, …), CPU, the number of series on
   its ``/metrics`` and the dedup ledger's size (``bridge_dedup_entries``); and, from the driver,
   the answers by status and the latency p50/p99 of the attempts that ended in the interval
   (client-side: start of the request to the whole answer), its connections to each replica by
   TCP state, its pool's idle and busy connections and how many it opened in the interval.
4. Once every delivery settled and the topics stopped growing, reads every topic back
   (``read_committed``) and checks with the chaos checker that every delivery answered 200 has
   exactly its records: none lost, none twice.
5. Judges "flat after warm-up" (:func:`judge`): the first sample at or after ``--warmup-s`` is each
   replica's baseline; no later sample may exceed baseline + max(rel × baseline, abs), with
   RSS: 10 % or 16 MiB; fds other than the driver's HTTP connections: +8; /metrics series: +16;
   the ledger (judged only with ``--dedup-ttl-s`` ≤ the warm-up, i.e. once it can have
   plateaued; otherwise it grows with the traffic and is only reported): 10 %. With the default
   TTL (24 h) the ledger's growth counts against the RSS bound (≈ 28 bytes of RSS per id,
   ``python -m benchmarks.dedup_memory``: 200/s for 25 minutes ≈ 8 MiB); ``--dedup-ttl-s 300``
   keeps both at a plateau after the default warm-up.

Prints a table per sample, the verdict and a Markdown section for BENCHMARKS.md; writes every
sample as JSON (``--json``) and a plot of RSS / fds / series / ledger / connections by state per
replica and the driver's pool (``--plot``; default: both in the state dir). Exit status 0 when
flat and exactly-once (and both replicas still alive), 1 otherwise.

Loopback only; bounded in time; stops what it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from benchmarks import tools
from tests.support import chaos

MIB: Final = 2**20


# -- pure parts (unit-tested in tests/unit/test_soak.py) ----------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``values``: the smallest value with at least
    ``q`` % of the values at or below it; nan when there are none."""
    if not values:
        return math.nan
    s = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(s)))
    return s[min(rank, len(s)) - 1]


def scan_metrics(text: str) -> tuple[int, float | None]:
    """Prometheus text → (number of series = sample lines, value of ``bridge_dedup_entries``)."""
    series = 0
    ledger = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series += 1
        name, _, value = line.rpartition(" ")
        if name == "bridge_dedup_entries":
            with contextlib.suppress(ValueError):
                ledger = float(value)
    return series, ledger


#: ``/proc/net/tcp``'s ``st`` column (the kernel's include/net/tcp_states.h) → the state's name.
TCP_STATES: Final = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
    "0C": "NEW_SYN_RECV",
}


def tcp_sockets(
    tables: Iterable[str], *, local_port: int | None = None, remote_port: int | None = None
) -> dict[int, str]:
    """Inode → state name (:data:`TCP_STATES`) of the TCP sockets in ``/proc/net/tcp``/``tcp6``
    texts whose local port is ``local_port`` and/or remote port is ``remote_port``, listeners
    (``LISTEN``) and sockets no fd holds (inode 0: ``TIME_WAIT``, orphans) left out."""
    out = {}
    for text in tables:
        for line in text.splitlines()[1:]:
            f = line.split()
            if len(f) < 10 or ":" not in f[1] or ":" not in f[2] or f[3] == "0A" or f[9] == "0":
                continue
            if local_port is not None and int(f[1].rsplit(":", 1)[1], 16) != local_port:
                continue
            if remote_port is not None and int(f[2].rsplit(":", 1)[1], 16) != remote_port:
                continue
            out[int(f[9])] = TCP_STATES.get(f[3].upper(), f[3])
    return out


def inbound_socket_inodes(tables: Iterable[str], port: int) -> set[int]:
    """Inodes of the TCP sockets in ``/proc/net/tcp``/``tcp6`` texts whose local port is ``port``
    and that are not listening (state ``0A``): the connections clients opened to that port."""
    return set(tcp_sockets(tables, local_port=port))


def states_of(links: Iterable[str], sockets: dict[int, str]) -> dict[str, int]:
    """How many of the fd link targets ``links`` (``socket:[inode]``) are in ``sockets`` (inode →
    state, :func:`tcp_sockets`), by state, sorted by name."""
    counts = Counter(sockets[i] for i in map(socket_inode, links) if i is not None and i in sockets)
    return dict(sorted(counts.items()))


def fmt_states(states: dict[str, int] | None) -> str:
    """``{"CLOSE_WAIT": 2, "ESTABLISHED": 40}`` → ``"ESTABLISHED 40, CLOSE_WAIT 2"`` (ESTABLISHED
    first); ``"-"`` for none, ``"?"`` when not read."""
    if states is None:
        return "?"
    order = sorted(states, key=lambda k: (k != "ESTABLISHED", k))
    return ", ".join(f"{k} {states[k]}" for k in order) or "-"


def socket_inode(link: str) -> int | None:
    """``socket:[123]`` (an fd's link target) → 123; None for anything else."""
    if link.startswith("socket:[") and link.endswith("]"):
        return int(link[8:-1])
    return None


@dataclass(frozen=True)
class Bound:
    """A measure may grow by at most max(``rel`` × baseline, ``abs``) over its baseline."""

    rel: float
    abs: float

    def limit(self, base: float) -> float:
        return base + max(self.rel * base, self.abs)

    def text(self, unit: float = 1.0, suffix: str = "") -> str:
        parts = []
        if self.rel:
            parts.append(f"{self.rel:.0%}")
        if self.abs:
            parts.append(f"{self.abs / unit:g}{suffix}")
        return "+" + " or +".join(parts) + (" (whichever is larger)" if len(parts) > 1 else "")


#: The flatness rule, per measure (judged after the warm-up).
BOUNDS: Final = {
    "rss_bytes": Bound(0.10, 16 * MIB),
    "other_fds": Bound(0.0, 8),
    "series": Bound(0.0, 16),
    "ledger": Bound(0.10, 0),
}


@dataclass
class ReplicaSample:
    """One replica at one moment (None: not readable — the process gone, /metrics not answering)."""

    replica: int
    pid: int
    rss_bytes: int | None = None
    fds: int | None = None
    http_conns: int | None = None
    series: int | None = None
    ledger: float | None = None
    cpu_s: float | None = None
    #: the inbound HTTP connections by TCP state (``ESTABLISHED``, ``CLOSE_WAIT``: the client
    #: closed and the replica did not, …), from ``/proc/<pid>/net/tcp{,6}``
    http_conn_states: dict[str, int] | None = None

    @property
    def other_fds(self) -> int | None:
        """Open fds other than inbound HTTP connections (those come and go with the driver's
        concurrency: keep-alive connections it opens when answers are slow and closes when idle)."""
        return None if self.fds is None or self.http_conns is None else self.fds - self.http_conns


@dataclass
class Sample:
    """Everything sampled at ``t_s`` seconds into the traffic; ``window_*``: the driver's attempts
    that ended since the previous sample."""

    t_s: float
    replicas: list[ReplicaSample]
    deliveries: int = 0  # deliveries started so far
    window_attempts: int = 0
    window_statuses: dict[str, int] = field(default_factory=dict)
    window_p50_ms: float = math.nan
    window_p99_ms: float = math.nan
    brokers_rss_bytes: list[int | None] = field(default_factory=list)
    brokers_cpu_s: float | None = None  # all nodes together
    runner_cpu_s: float | None = None  # this process: driver, sampler
    #: the driver's side, per replica: its connections to the replica by TCP state as the kernel
    #: sees them (this process's sockets whose remote port is the replica's), and its pool's
    #: idle connections and those carrying a request (None: not readable)
    driver_conn_states: list[dict[str, int] | None] = field(default_factory=list)
    driver_pool_idle: list[int | None] = field(default_factory=list)
    driver_pool_in_use: list[int | None] = field(default_factory=list)
    #: connections the driver's pool opened, and requests it sent on a pooled one, in the interval
    window_conns_opened: int = 0
    window_conns_reused: int = 0
    #: per replica, the most requests the driver had in flight to it at once in the interval
    window_peak_in_flight: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for r, raw in zip(self.replicas, out["replicas"], strict=True):
            raw["other_fds"] = r.other_fds
        for k in ("window_p50_ms", "window_p99_ms"):
            if math.isnan(out[k]):
                out[k] = None
        return out


@dataclass(frozen=True)
class Check:
    """One measure of one replica after the warm-up: its baseline, highest value, limit, verdict."""

    replica: int
    measure: str
    base: float | None
    peak: float | None
    limit: float | None
    ok: bool
    note: str = ""


def judge(
    samples: Sequence[Sample],
    warmup_s: float,
    *,
    judge_ledger: bool = False,
    bounds: dict[str, Bound] = BOUNDS,
) -> list[Check]:
    """ "Flat after warm-up", per replica and measure: the first sample at or after ``warmup_s``
    is the baseline; every later sample must stay within ``bounds[measure].limit(baseline)``.
    Fewer than two samples after the warm-up, or a value missing there, is a failure. The ledger
    is judged only when ``judge_ledger`` (a TTL short enough for it to have plateaued)."""
    after = [s for s in samples if s.t_s >= warmup_s]
    measures = [m for m in bounds if m != "ledger" or judge_ledger]
    replicas = sorted({r.replica for s in samples for r in s.replicas})
    checks = []
    for i in replicas:
        for m in measures:
            values = [_value(s, i, m) for s in after]
            if len(values) < 2:
                checks.append(Check(i, m, None, None, None, False, f"{len(values)} sample(s) after the warm-up"))
                continue
            if any(v is None for v in values):
                checks.append(Check(i, m, values[0], None, None, False, "a sample could not be read"))
                continue
            vals = [float(v) for v in values if v is not None]
            limit = bounds[m].limit(vals[0])
            peak = max(vals)
            checks.append(Check(i, m, vals[0], peak, limit, peak <= limit))
    return checks


def _value(s: Sample, replica: int, measure: str) -> float | None:
    r = next((r for r in s.replicas if r.replica == replica), None)
    if r is None:
        return None
    v = getattr(r, measure)
    return None if v is None else float(v)


def window_stats(attempts: Sequence[chaos.Attempt]) -> tuple[dict[str, int], float, float]:
    """Answers by status (or error name) and latency p50/p99 in ms of ``attempts``."""
    statuses = Counter(str(a.status) if a.status is not None else (a.error or "none") for a in attempts)
    lat = [(a.ended - a.started) * 1000 for a in attempts]
    return dict(sorted(statuses.items())), percentile(lat, 50), percentile(lat, 99)


# -- the run ------------------------------------------------------------------------------------------


#: Seconds the driver keeps an idle connection (``--client-pool lifo``): below the bridge's
#: 15 s (bridge/server.py ``IDLE_TIMEOUT_S``), so that it never sends on one the bridge is closing.
CLIENT_KEEPALIVE_S: Final = 10.0


class LifoConnector(aiohttp.TCPConnector):
    """aiohttp's pool, handing out its idle connections last in, first out.

    aiohttp's own pool is a FIFO (``_get`` takes the idle connection released longest ago,
    ``_release`` appends): under steady traffic it cycles through every connection it ever opened,
    so none stays idle for its keep-alive timeout and the pool keeps the most connections a burst
    of slow answers ever needed. Here a released connection goes to the front instead: the ones
    beyond the current concurrency stay idle and close after ``keepalive_timeout``."""

    def _release(self, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        super()._release(key, protocol, should_close=should_close)
        conns = self._conns.get(key)
        if conns and conns[-1][0] is protocol:
            conns.rotate(1)  # the last appended → the first ``_get`` takes


class SoakDriver(chaos.PlatformDriver):
    """The chaos driver without its memory growth: a settled delivery drops its payload and
    request (the checker needs only its id and expected records), and finished tasks are not kept.

    ``client_pool``: ``"fifo"``, aiohttp's own pool (what the chaos driver uses; at most 512
    connections, idle ones closed after 15 s); ``"lifo"``, :class:`LifoConnector` with a
    :data:`CLIENT_KEEPALIVE_S` keep-alive. Counts the connections its pool opens and reuses."""

    failures: list[BaseException]

    def __init__(self, *args: Any, client_pool: str = "lifo", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if client_pool not in ("lifo", "fifo"):
            raise ValueError(f"client_pool: lifo or fifo, not {client_pool!r}")
        self.client_pool = client_pool
        self.connector: aiohttp.TCPConnector | None = None
        self.conns_opened = 0
        self.conns_reused = 0
        self.in_flight: Counter[int] = Counter()  # by replica port
        self.peak_in_flight: Counter[int] = Counter()

    def _connector(self) -> aiohttp.TCPConnector:
        if self.client_pool == "fifo":
            return aiohttp.TCPConnector(limit=512)
        return LifoConnector(limit=512, keepalive_timeout=CLIENT_KEEPALIVE_S)

    def _trace(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def opened(*_: Any) -> None:
            self.conns_opened += 1

        async def reused(*_: Any) -> None:
            self.conns_reused += 1

        async def started(_: Any, __: Any, params: Any) -> None:
            port = params.url.port
            self.in_flight[port] += 1
            self.peak_in_flight[port] = max(self.peak_in_flight[port], self.in_flight[port])

        async def ended(_: Any, __: Any, params: Any) -> None:
            self.in_flight[params.url.port] -= 1

        trace.on_connection_create_end.append(opened)
        trace.on_connection_reuseconn.append(reused)
        trace.on_request_start.append(started)
        trace.on_request_end.append(ended)
        trace.on_request_exception.append(ended)
        return trace

    def take_peak_in_flight(self, port: int) -> int:
        """The most requests in flight to ``port`` at once since the last call."""
        peak = self.peak_in_flight[port]
        self.peak_in_flight[port] = self.in_flight[port]
        return peak

    def pool(self, port: int) -> tuple[int | None, int | None]:
        """(idle, in use) connections of the pool to ``port`` (None before the run or when
        aiohttp's internals are not what this expects)."""
        c = self.connector
        if c is None:
            return None, None
        try:
            idle = sum(len(q) for k, q in c._conns.items() if k.port == port)
            in_use = 0
            for proto in c._acquired:
                peer = proto.transport.get_extra_info("peername") if proto.transport is not None else None
                if peer is not None and peer[1] == port:
                    in_use += 1
        except (AttributeError, TypeError, IndexError):
            return None, None
        return idle, in_use

    async def _deliver(self, session: aiohttp.ClientSession, d: chaos.Delivery) -> None:
        try:
            await super()._deliver(session, d)
        finally:
            d.payload = {}
            d.request = None

    async def run(self) -> chaos.DriverLog:
        loop = asyncio.get_running_loop()
        self.failures = []
        self.log.started = time.time()
        count = max(1, round(self.rate_per_s * self.duration_s))
        pending: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self.failures.append(task.exception())  # type: ignore[arg-type]

        t0 = loop.time()
        self.connector = self._connector()
        async with aiohttp.ClientSession(connector=self.connector, trace_configs=[self._trace()]) as session:
            for i in range(count):
                delay = t0 + i / self.rate_per_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                d = self.traffic.delivery(i, int(time.time() * 1000))
                self.log.deliveries[d.event_id] = d
                task = asyncio.create_task(self._deliver(session, d))
                pending.add(task)
                task.add_done_callback(done)
            while pending:
                await asyncio.gather(*list(pending), return_exceptions=True)
        self.connector = None
        self.log.ended = time.time()
        return self.log


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cpu_sum(pids: Iterable[int | None]) -> float | None:
    """utime + stime of all ``pids`` together (None when one is gone)."""
    total = 0.0
    for pid in pids:
        if pid is None:
            return None
        try:
            total += tools.cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            return None
    return total


def fd_links(pid: int) -> list[str] | None:
    """The link targets of process ``pid``'s open fds (None: the process is gone)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    links = []
    for n in names:
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{n}"))
        except OSError:
            links.append("")  # closed meanwhile: still counted as open, as before
    return links


def _tcp_tables(pid: int) -> tuple[str, str]:
    return _read(f"/proc/{pid}/net/tcp"), _read(f"/proc/{pid}/net/tcp6")


def conn_states(
    pid: int, *, local_port: int | None = None, remote_port: int | None = None
) -> tuple[int | None, dict[str, int] | None]:
    """(open fds, the TCP connections among them with that local and/or remote port, by state) of
    process ``pid``; (None, None) when it is gone."""
    links = fd_links(pid)
    if links is None:
        return None, None
    sockets = tcp_sockets(_tcp_tables(pid), local_port=local_port, remote_port=remote_port)
    return len(links), states_of(links, sockets)


def count_fds(pid: int, port: int) -> tuple[int | None, int | None]:
    """(open fds, of which inbound connections to ``port``) of process ``pid``."""
    fds, states = conn_states(pid, local_port=port)
    return fds, None if states is None else sum(states.values())


async def sample_replica(session: aiohttp.ClientSession, i: int, pid: int, port: int) -> ReplicaSample:
    s = ReplicaSample(i, pid, rss_bytes=tools.proc_status(pid, "VmRSS"))
    s.fds, s.http_conn_states = conn_states(pid, local_port=port)
    s.http_conns = None if s.http_conn_states is None else sum(s.http_conn_states.values())
    with contextlib.suppress(OSError, IndexError, ValueError):
        s.cpu_s = tools.cpu_seconds(pid)
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status == 200:
                s.series, s.ledger = scan_metrics(await resp.text())
    return s


def fmt(v: float | None, spec: str = ".0f") -> str:
    return "?" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(samples: Sequence[Sample]) -> str:
    """One row per sample; per-replica columns ``r0 / r1``."""

    def per(s: Sample, f: Any) -> str:
        return " / ".join(f(r) for r in s.replicas)

    rows = [
        [
            "t (s)",
            "deliveries",
            "answers (interval)",
            "p50 / p99 ms",
            "RSS MiB",
            "fds (http conns)",
            "http conns by state",
            "driver: pool idle+in use, opened, peak in flight",
            "series",
            "ledger",
            "CPU % replicas",
            "CPU % brokers, runner",
        ]
    ]
    prev: Sample | None = None
    for s in samples:
        cpu = other = "-"
        if prev is not None and s.t_s > prev.t_s:
            dt = s.t_s - prev.t_s

            def share(now: float | None, before: float | None) -> str:
                return fmt(None if now is None or before is None else (now - before) / dt * 100)  # noqa: B023

            cpu = " / ".join(share(r.cpu_s, p.cpu_s) for r, p in zip(s.replicas, prev.replicas, strict=True))
            other = f"{share(s.brokers_cpu_s, prev.brokers_cpu_s)}, {share(s.runner_cpu_s, prev.runner_cpu_s)}"
        rows.append(
            [
                f"{s.t_s:.0f}",
                f"{s.deliveries:,}",
                " ".join(f"{k}×{v:,}" for k, v in s.window_statuses.items()) or "-",
                f"{fmt(s.window_p50_ms, '.1f')} / {fmt(s.window_p99_ms, '.1f')}",
                per(s, lambda r: fmt(None if r.rss_bytes is None else r.rss_bytes / MIB, ".1f")),
                per(s, lambda r: f"{fmt(r.fds)} ({fmt(r.http_conns)})"),
                per(s, lambda r: fmt_states(r.http_conn_states)),
                " / ".join(f"{fmt(a)}+{fmt(b)}" for a, b in zip(s.driver_pool_idle, s.driver_pool_in_use, strict=False))
                + f", {s.window_conns_opened:,}, "
                + " / ".join(str(n) for n in s.window_peak_in_flight),
                per(s, lambda r: fmt(r.series)),
                per(s, lambda r: fmt(r.ledger)),
                cpu,
                other,
            ]
        )
        prev = s
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


UNITS: Final = {"rss_bytes": (MIB, " MiB"), "other_fds": (1, ""), "series": (1, ""), "ledger": (1, "")}
LABELS: Final = {
    "rss_bytes": "RSS",
    "other_fds": "fds (without HTTP conns)",
    "series": "/metrics series",
    "ledger": "dedup ledger",
}


def check_text(c: Check) -> str:
    unit, suffix = UNITS[c.measure]
    if c.base is None or c.peak is None or c.limit is None:
        return f"replica {c.replica} {LABELS[c.measure]}: {c.note}"
    spec = ",.1f" if c.measure == "rss_bytes" else ",.0f"
    return (
        f"replica {c.replica} {LABELS[c.measure]}: {c.base / unit:{spec}} → peak {c.peak / unit:{spec}}{suffix} "
        f"(limit {c.limit / unit:{spec}}) {'ok' if c.ok else 'GROWS'}"
    )


def plot(samples: Sequence[Sample], warmup_s: float, checks: Sequence[Check], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 6.5), dpi=100, sharex=True)
    panels = (
        ("rss_bytes", "RSS, MiB"),
        ("fds", "open fds (dotted: without HTTP conns)"),
        ("series", "/metrics series"),
        ("ledger", "dedup ledger entries"),
    )
    replicas = sorted({r.replica for s in samples for r in s.replicas})
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    flat = list(axes.flat)
    for ax, (m, title) in zip(flat[0:2] + flat[3:5], panels, strict=True):
        ax.set_title(title, fontsize=9)
        unit = MIB if m == "rss_bytes" else 1
        for i in replicas:
            c = colors[i % len(colors)]
            xs, ys, other = [], [], []
            for s in samples:
                r = next((r for r in s.replicas if r.replica == i), None)
                v = getattr(r, m) if r is not None else None
                if v is not None:
                    xs.append(s.t_s / 60)
                    ys.append(v / unit)
                    other.append(r.other_fds if r is not None else None)
            ax.plot(xs, ys, "-o", ms=3, color=c, label=f"replica {i}")
            if m == "fds":
                ax.plot(xs, other, ":", color=c)
            judged = "other_fds" if m == "fds" else m
            for ch in checks:
                if ch.replica == i and ch.measure == judged and ch.limit is not None:
                    ax.hlines(
                        ch.limit / unit,
                        warmup_s / 60,
                        xs[-1] if xs else warmup_s / 60,
                        colors=c,
                        linestyles="--",
                        lw=0.8,
                    )
    conns_ax, pool_ax = flat[2], flat[5]
    states = sorted(
        {k for s in samples for r in s.replicas for k in (r.http_conn_states or {})},
        key=lambda k: (k != "ESTABLISHED", k),
    )
    styles = ("-", "--", "-.", ":")
    for i in replicas:
        c = colors[i % len(colors)]
        for n, state in enumerate(states):
            pts = [
                (s.t_s / 60, (r.http_conn_states or {}).get(state, 0))
                for s in samples
                for r in s.replicas
                if r.replica == i and r.http_conn_states is not None
            ]
            conns_ax.plot(
                [x for x, _ in pts], [y for _, y in pts], styles[n % len(styles)], color=c, label=f"r{i} {state}"
            )
        pts2 = [
            (s.t_s / 60, s.driver_pool_idle[i], s.driver_pool_in_use[i])
            for s in samples
            if i < len(s.driver_pool_idle) and s.driver_pool_idle[i] is not None
        ]
        pool_ax.plot(
            [x for x, _, _ in pts2],
            [a + (b or 0) for _, a, b in pts2 if a is not None],
            "-o",
            ms=3,
            color=c,
            label=f"pool to replica {i}",
        )
        peaks = [(s.t_s / 60, s.window_peak_in_flight[i]) for s in samples if i < len(s.window_peak_in_flight)]
        pool_ax.plot(
            [x for x, _ in peaks], [y for _, y in peaks], "--", color=c, lw=0.8, label=f"peak in flight to {i}"
        )
    pool_ax.plot(
        [s.t_s / 60 for s in samples], [s.window_conns_opened for s in samples], "k:", label="opened in the interval"
    )
    conns_ax.set_title("inbound HTTP connections by TCP state", fontsize=9)
    pool_ax.set_title("driver's pool: idle + in use; dashed: peak in flight; dotted: opened", fontsize=9)
    conns_ax.legend(fontsize=7)
    pool_ax.legend(fontsize=7)
    for ax in flat:
        ax.axvline(warmup_s / 60, color="k", lw=0.8, ls=":")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    for ax in axes[1]:
        ax.set_xlabel("minutes of traffic (dotted: end of warm-up; dashed: limits)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Soak: two bridge replicas on a 3-node cluster, steady traffic", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def run(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    from bridge_devtools.broker import LocalCluster

    gaps = tuple(args.retry_interval_s * 2**i for i in range(3))
    extra = {}
    if args.dedup_ttl_s is not None:
        extra["BRIDGE_DEDUP_TTL_S"] = str(args.dedup_ttl_s)
        # the ledger must outlive a signed request (settings check); the driver's retries end
        # within the sum of the gaps, so a shorter signature window is still far too long to matter
        extra["BRIDGE_LARK_MAX_SIGNATURE_AGE_S"] = str(min(28_800, args.dedup_ttl_s))
    cluster = LocalCluster(size=3, state_dir=state / "cluster")
    t_start = time.monotonic()
    cluster.start(timeout_s=180)
    pair: chaos.BridgePair | None = None
    samples: list[Sample] = []
    failures: list[str] = []
    try:
        topics = chaos.ChaosTopics(f"soak-{uuid.uuid4().hex[:6]}")
        await chaos.create_topics(cluster, topics, partitions=args.partitions)
        pair = chaos.BridgePair(cluster.bootstrap_servers, topics, state / "bridges", extra=extra)
        await pair.start()
        print(f"cluster and replicas up in {time.monotonic() - t_start:.0f}s; logs in {state}", flush=True)

        tag = chaos.new_tag()
        traffic = chaos.Traffic(topics, tag=tag, rooms=chaos.make_rooms(args.rooms), seed=args.seed)
        driver = SoakDriver(
            pair.urls,
            traffic,
            rate_per_s=args.rate,
            duration_s=args.duration_s,
            retry_gaps_s=gaps,
            tries=4,
            seed=args.seed,
            client_pool=args.client_pool,
        )
        procs = [(i, p.pid, port) for i, (p, port) in enumerate(zip(pair.procs, pair.ports, strict=True))]
        seen = 0
        opened = reused = 0

        async def take(session: aiohttp.ClientSession, t_s: float) -> Sample:
            nonlocal seen, opened, reused
            reps = [await sample_replica(session, i, pid, port) for i, pid, port in procs]
            attempts = driver.log.attempts[seen:]
            seen += len(attempts)
            pools = [driver.pool(port) for _, _, port in procs]
            statuses, p50, p99 = window_stats(attempts)
            s = Sample(
                t_s,
                reps,
                len(driver.log.deliveries),
                len(attempts),
                statuses,
                p50,
                p99,
                [cluster.nodes[n].rss_bytes() for n in sorted(cluster.nodes)],
                _cpu_sum(cluster.nodes[n].pid for n in sorted(cluster.nodes)),
                _cpu_sum([os.getpid()]),
                [conn_states(os.getpid(), remote_port=port)[1] for _, _, port in procs],
                [idle for idle, _ in pools],
                [in_use for _, in_use in pools],
                driver.conns_opened - opened,
                driver.conns_reused - reused,
                [driver.take_peak_in_flight(port) for _, _, port in procs],
            )
            opened, reused = driver.conns_opened, driver.conns_reused
            samples.append(s)
            print(
                f"+{t_s:5.0f}s {s.deliveries:,} deliveries; answers {statuses or '-'} p50 {fmt(p50, '.1f')} ms "
                f"p99 {fmt(p99, '.1f')} ms; RSS "
                + " / ".join(fmt(None if r.rss_bytes is None else r.rss_bytes / MIB, ".1f") for r in reps)
                + " MiB; fds "
                + " / ".join(f"{fmt(r.fds)}({fmt(r.http_conns)})" for r in reps)
                + "; series "
                + " / ".join(fmt(r.series) for r in reps)
                + "; ledger "
                + " / ".join(fmt(r.ledger) for r in reps)
                + "; http conns by state "
                + " / ".join(fmt_states(r.http_conn_states) for r in reps)
                + "; driver: conns "
                + " / ".join(fmt_states(c) for c in s.driver_conn_states)
                + ", pool idle+in use "
                + " / ".join(f"{fmt(a)}+{fmt(b)}" for a, b in pools)
                + f", opened {s.window_conns_opened:,} reused {s.window_conns_reused:,}, peak in flight "
                + " / ".join(str(n) for n in s.window_peak_in_flight),
                flush=True,
            )
            return s

        async with aiohttp.ClientSession() as session:
            t0 = time.monotonic()
            await take(session, 0.0)
            traffic_task = asyncio.create_task(driver.run())
            n = 1
            while True:
                due = t0 + n * args.sample_s
                if due >= t0 + args.duration_s:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(traffic_task), timeout=max(0.0, due - time.monotonic()))
                if traffic_task.done():
                    break
                await take(session, time.monotonic() - t0)
                n += 1
            # the last sample when the traffic ends (before the last retries settle)
            end = t0 + args.duration_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(traffic_task), timeout=max(0.0, end - time.monotonic()))
            await take(session, time.monotonic() - t0)
            log = await traffic_task
            if time.monotonic() - t0 > samples[-1].t_s + 1:  # retries ran on: their answers too
                await take(session, time.monotonic() - t0)
        failures += [repr(e) for e in driver.failures]
        print(f"+{time.monotonic() - t0:5.0f}s every delivery settled; reading the topics back", flush=True)
        await chaos.settle(cluster.bootstrap_servers, topics.all, quiet_s=5.0, timeout_s=180)
        records = await chaos.read_records(
            cluster.bootstrap_servers, topics.all, isolation_level=chaos.READ_COMMITTED, timeout_s=900
        )
        alive = pair.alive()
    finally:
        if pair is not None:
            await pair.stop()
        cluster.stop(timeout_s=30)
    report = chaos.check_level(log, records, chaos.READ_COMMITTED, tag)
    statuses = Counter(str(a.status) if a.status is not None else (a.error or "none") for a in log.attempts)
    all_lat = [(a.ended - a.started) * 1000 for a in log.attempts]
    return {
        "samples": samples,
        "check": report.summary(),
        "deliveries": len(log.deliveries),
        "answered_200": len(log.first_ok()),
        "attempts": len(log.attempts),
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": percentile(all_lat, 50),
        "p99_ms": percentile(all_lat, 99),
        "max_ms": max(all_lat) if all_lat else math.nan,
        "alive": alive,
        "driver_failures": failures,
        "kafka": cluster.version,
        "wall_s": time.monotonic() - t_start,
        "runner_peak_rss_bytes": tools.proc_status(os.getpid(), "VmHWM"),
    }


def cpu_line(a: Sample, b: Sample) -> str:
    """Average CPU shares between samples ``a`` and ``b``: each replica, the brokers, the runner."""
    dt = b.t_s - a.t_s

    def share(now: float | None, before: float | None) -> str:
        return "?" if now is None or before is None or dt <= 0 else f"{(now - before) / dt:.0%}"

    reps = " / ".join(share(r.cpu_s, p.cpu_s) for r, p in zip(b.replicas, a.replicas, strict=True))
    return (
        f"replicas {reps}, the three brokers {share(b.brokers_cpu_s, a.brokers_cpu_s)}, "
        f"the runner (driver, sampler) {share(b.runner_cpu_s, a.runner_cpu_s)}"
    )


def markdown(
    args: argparse.Namespace, command: str, res: dict[str, Any], checks: Sequence[Check], verdict: dict[str, bool]
) -> str:
    from benchmarks import report

    samples: list[Sample] = res["samples"]
    mach = report.machine()
    c = res["check"]
    ttl = f"`BRIDGE_DEDUP_TTL_S={args.dedup_ttl_s}`" if args.dedup_ttl_s is not None else "the default dedup TTL (24 h)"
    base = next((s for s in samples if s.t_s >= args.warmup_s), None)
    last = samples[-1]
    md = [
        "## Soak: steady traffic on a 3-node cluster (python -m benchmarks.soak)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `{command}` — {res['wall_s'] / 60:.1f} min wall. "
        f"{mach['cpu']} (a VM), {mach['cores']} cores, {mach['memory']} RAM, Linux {mach['kernel']}; Python "
        f"{platform.python_version()}, Kafka {res['kafka']}, bridge {tools.git_revision()}. Three KRaft nodes on "
        f"loopback (RF 3, min ISR 2, {args.partitions} partitions), two replicas (`python -m bridge serve`, INFO "
        f"logs, {ttl}), the driver and its checker in one more process, all on the same {mach['cores']} cores.",
        "",
        f"Traffic: {args.rate:g} deliveries/s for {args.duration_s:g} s (the chaos driver's signed, encrypted "
        f"platform requests, {args.rooms} rooms, each delivery to a random replica, retried after "
        f"{args.retry_interval_s:g}, {2 * args.retry_interval_s:g}, {4 * args.retry_interval_s:g} s); sampled every "
        f"{args.sample_s:g} s; warm-up {args.warmup_s:g} s.",
        "",
        "| Measure (replica 0 / replica 1) | before traffic | after warm-up (t = "
        + (f"{base.t_s:.0f} s" if base else "—")
        + f") | end (t = {last.t_s:.0f} s) | rule after warm-up | verdict |",
        "|---|---|---|---|---|---|",
    ]

    def vals(s: Sample | None, m: str, unit: float, spec: str) -> str:
        if s is None:
            return "—"
        out = []
        for r in s.replicas:
            v = _value(s, r.replica, m)
            out.append(fmt(None if v is None else v / unit, spec))
        return " / ".join(out)

    rules = {
        "rss_bytes": ("RSS, MiB", MIB, ".1f", BOUNDS["rss_bytes"].text(MIB, " MiB")),
        "other_fds": ("open fds without the driver's HTTP connections", 1, ".0f", BOUNDS["other_fds"].text()),
        "fds": ("open fds, all", 1, ".0f", "reported"),
        "series": ("/metrics series", 1, ".0f", BOUNDS["series"].text()),
        "ledger": (
            "dedup ledger entries",
            1,
            ".0f",
            BOUNDS["ledger"].text()
            if any(ch.measure == "ledger" for ch in checks)
            else "reported (grows until the TTL)",
        ),
    }
    for m, (label, unit, spec, rule) in rules.items():
        mine = [ch for ch in checks if ch.measure == m]
        ok = "—" if not mine else ("flat" if all(ch.ok for ch in mine) else "**grows**")
        cells = [vals(s, m, unit, spec) for s in (samples[0], base, last)]
        md.append(f"| {label} | {' | '.join(cells)} | {rule} | {ok} |")
    snaps = (samples[0], base, last)
    md.append(
        "| inbound HTTP connections by TCP state | "
        + " | ".join(
            "—" if x is None else " / ".join(fmt_states(r.http_conn_states) for r in x.replicas) for x in snaps
        )
        + " | reported | — |"
    )
    md.append(
        f"| the driver's pool ({args.client_pool}): idle + in use | "
        + " | ".join(
            "—"
            if x is None
            else " / ".join(
                f"{fmt(a)} + {fmt(b)}" for a, b in zip(x.driver_pool_idle, x.driver_pool_in_use, strict=False)
            )
            for x in snaps
        )
        + " | reported | — |"
    )
    answers = ", ".join(f"{k}: {v:,}" for k, v in res["statuses"].items())
    md += [
        "",
        f"Answers: {answers} ({res['attempts']:,} attempts for {res['deliveries']:,} deliveries, "
        f"{res['answered_200']:,} answered 200); latency p50 {fmt(res['p50_ms'], '.1f')} ms, p99 "
        f"{fmt(res['p99_ms'], '.1f')} ms, max {fmt(res['max_ms'], '.0f')} ms (client-side, every attempt). "
        f"Checker (read_committed): {c['records']:,} records, lost {c['lost_events']}, duplicated events "
        f"{c['duplicated_events']} ({c['extra_records']} extra records), unexpected {c['unexpected']}, per-key order "
        f"violations {c['order_violations']}.",
        "",
        f"CPU over the whole run (share of one core): {cpu_line(samples[0], last)}.",
        "",
        "Broker RSS (nodes 1 / 2 / 3, JVM `-Xmx512m`): "
        + " → ".join(
            " / ".join(fmt(None if b is None else b / MIB, ".0f") for b in s.brokers_rss_bytes) + " MiB"
            for s in (samples[0], last)
        )
        + " (before the traffic → end); the runner's peak RSS "
        f"{fmt(None if res['runner_peak_rss_bytes'] is None else res['runner_peak_rss_bytes'] / MIB, '.0f')} MiB.",
        "",
        f"**Verdict: {'flat' if verdict['flat'] else 'NOT flat'} after warm-up, "
        f"{'exactly-once' if verdict['exactly_once'] else 'NOT exactly-once'}"
        f"{'' if res['alive'] else ', a replica died'}.** Per-interval numbers: the JSON "
        "(`--json`) and the plot (`--plot`).",
    ]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; exit status 0 when flat after warm-up and exactly-once, else 1."""
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=doc.split("\n\n", 1)[0],
        epilog="Flatness rule: see the module docstring (benchmarks/soak.py) and BENCHMARKS.md.",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="new deliveries per second (default 200)")
    parser.add_argument("--duration-s", type=float, default=1800.0, help="seconds of traffic (default 1800)")
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument("--warmup-s", type=float, default=300.0, help="not judged before this (default 300)")
    parser.add_argument(
        "--dedup-ttl-s",
        type=int,
        help="BRIDGE_DEDUP_TTL_S of the replicas (default: theirs, 24 h); the ledger "
        "is judged flat when this is ≤ --warmup-s (e.g. 300 with the default warm-up)",
    )
    parser.add_argument("--retry-interval-s", type=float, default=15.0, help="first retry gap, doubling (default 15)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions per topic (default 3)")
    parser.add_argument("--rooms", type=int, default=1000, help="room pool (keys) of the traffic (default 1000)")
    parser.add_argument(
        "--client-pool",
        choices=("lifo", "fifo"),
        default="lifo",
        help="the driver's keep-alive pool: lifo (default; idle connections beyond the current concurrency "
        "close after 10 s) or fifo (aiohttp's own, as up to 2026-12: keeps every connection a burst opened)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--state-dir", help="cluster data and bridge logs (default: a new temp dir, kept)")
    parser.add_argument(
        "--json", metavar="PATH", help="every sample and the results (default: soak.json in the state dir)"
    )
    parser.add_argument(
        "--plot",
        metavar="PATH",
        help="PNG of RSS, fds, series, ledger, connections (default: soak.png in the state dir)",
    )
    args = parser.parse_args(argv)
    if args.sample_s <= 0 or args.duration_s <= 0 or args.rate <= 0:
        parser.error("--rate, --duration-s and --sample-s must be > 0")
    command = "python -m benchmarks.soak" + (
        "" if not (argv or sys.argv[1:]) else " " + shlex.join(argv or sys.argv[1:])
    )
    state = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="bench-soak-"))
    state.mkdir(parents=True, exist_ok=True)

    res = asyncio.run(run(args, state))
    samples: list[Sample] = res["samples"]
    # from t = TTL on the ledger holds the ids of the last TTL to TTL·(1 + 1/64) seconds (its
    # expiry buckets): at a steady rate within 2 % of its size at the end of the warm-up
    judge_ledger = args.dedup_ttl_s is not None and args.dedup_ttl_s <= args.warmup_s
    checks = judge(samples, args.warmup_s, judge_ledger=judge_ledger)
    c = res["check"]
    verdict = {
        "flat": bool(checks) and all(ch.ok for ch in checks),
        "exactly_once": c["lost_events"] == 0 and c["duplicated_events"] == 0 and c["unexpected"] == 0,
        "alive": bool(res["alive"]),
        "driver_ok": not res["driver_failures"],
    }

    print()
    print(table(samples))
    print()
    print(
        f"after the warm-up ({args.warmup_s:g} s); rule: a measure's peak ≤ its first sample after the warm-up + bound"
    )
    for ch in checks:
        print("  " + check_text(ch))
    if not judge_ledger:
        print("  dedup ledger: reported, not judged (it grows until the TTL; judged with --dedup-ttl-s ≤ --warmup-s)")
    print(
        f"answers {res['statuses']}; {res['deliveries']:,} deliveries, {res['answered_200']:,} answered 200; "
        f"latency p50 {fmt(res['p50_ms'], '.1f')} ms p99 {fmt(res['p99_ms'], '.1f')} ms"
    )
    print(f"checker (read_committed): {json.dumps(c)}")
    if res["driver_failures"]:
        print(f"driver failures: {res['driver_failures'][:5]}")
    print(f"verdict: {verdict}")

    json_path = Path(args.json) if args.json else state / "soak.json"
    plot_path = Path(args.plot) if args.plot else state / "soak.png"
    out = {
        **{k: v for k, v in res.items() if k != "samples"},
        "args": vars(args),
        "command": command,
        "samples": [s.to_json() for s in samples],
        "checks": [asdict(ch) for ch in checks],
        "verdict": verdict,
    }
    json_path.write_text(json.dumps(out, indent=1, default=str))
    try:
        plot(samples, args.warmup_s, checks, plot_path)
    except ImportError as exc:  # matplotlib is a bench-only package (benchmarks/requirements.txt)
        print(f"no plot: {exc}")
    print(f"wrote {json_path} and {plot_path}\n")
    print(markdown(args, command, res, checks, verdict))
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
