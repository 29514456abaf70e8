"""The soak benchmark's pure parts (benchmarks/soak.py): percentiles, /metrics and /proc parsing,
and the "flat after warm-up" judgement."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from benchmarks.soak import (
    BOUNDS,
    MIB,
    Bound,
    LifoConnector,
    ReplicaSample,
    Sample,
    conn_states,
    count_fds,
    fmt_states,
    inbound_socket_inodes,
    judge,
    percentile,
    scan_metrics,
    socket_inode,
    states_of,
    tcp_sockets,
    window_stats,
)
from tests.support.chaos import Attempt


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([3.0, 1.0, 2.0], 50) == 2
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def test_scan_metrics_counts_sample_lines_and_reads_the_ledger() -> None:
    text = (
        "# HELP bridge_dedup_entries Event ids held in the dedup window.\n"
        "# TYPE bridge_dedup_entries gauge\n"
        "bridge_dedup_entries 1234.0\n"
        'bridge_requests_total{outcome="published"} 5.0\n'
        'bridge_dedup_entries_other{x="1"} 9.0\n'
        "\n"
    )
    assert scan_metrics(text) == (3, 1234.0)
    assert scan_metrics("# nothing\n") == (0, None)


def test_inbound_sockets_from_proc_net_tcp() -> None:
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n"
        "   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n"
        "   3: 0100007F:2384 0100007F:D000 01 00000000:00000000 00:00000000 00000000     0        0 444 1\n"
    )
    # port 0x1F90 = 8080: the listener (0A) is not a connection; the client side (local C350) is not ours
    assert inbound_socket_inodes([tcp, ""], 8080) == {222}
    assert socket_inode("socket:[222]") == 222
    assert socket_inode("/tmp/log") is None
    assert socket_inode("anon_inode:[eventpoll]") is None


TCP = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
    "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 222 1\n"
    "   2: 0100007F:1F90 0100007F:C351 08 00000000:00000000 00:00000000 00000000     0        0 223 1\n"
    "   3: 0100007F:1F90 0100007F:C352 06 00000000:00000000 03:00000D2F 00000000     0        0 0 0\n"
    "   4: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n"
    "   5: 0100007F:C353 0100007F:1F90 08 00000000:00000000 00:00000000 00000000     0        0 334 1\n"
)
TCP6 = (
    "  sl  local_address                         remote_address                        st tx_queue rx_queue tr "
    "tm->when retrnsmt   uid  timeout inode\n"
    "   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:C360 04 00000000:00000000 "
    "00:00000000 00000000     0        0 555 1\n"
)


def test_tcp_sockets_by_state() -> None:
    # port 0x1F90 = 8080; the listener and the TIME_WAIT entry (inode 0: no fd holds it) left out
    assert tcp_sockets([TCP, TCP6], local_port=8080) == {222: "ESTABLISHED", 223: "CLOSE_WAIT", 555: "FIN_WAIT1"}
    # the client sides: remote port 8080
    assert tcp_sockets([TCP], remote_port=8080) == {333: "ESTABLISHED", 334: "CLOSE_WAIT"}
    assert tcp_sockets([TCP], local_port=8080, remote_port=0xC351) == {223: "CLOSE_WAIT"}
    assert tcp_sockets(["", "header only\n"], local_port=8080) == {}


def test_states_of_the_fds() -> None:
    sockets = tcp_sockets([TCP, TCP6], local_port=8080)
    links = ["socket:[222]", "socket:[223]", "socket:[999]", "/var/log/x", "anon_inode:[eventpoll]", "", "socket:[555]"]
    assert states_of(links, sockets) == {"CLOSE_WAIT": 1, "ESTABLISHED": 1, "FIN_WAIT1": 1}
    assert states_of([], sockets) == {}
    assert (
        fmt_states({"CLOSE_WAIT": 2, "ESTABLISHED": 40, "FIN_WAIT1": 1}) == "ESTABLISHED 40, CLOSE_WAIT 2, FIN_WAIT1 1"
    )
    assert fmt_states({}) == "-"
    assert fmt_states(None) == "?"


@pytest.mark.skipif(not os.path.exists("/proc/self/net/tcp"), reason="Linux /proc only")
def test_conn_states_of_a_real_process_sees_close_wait() -> None:
    """This process as the server: a connection the client closed and the server did not is
    CLOSE_WAIT on the server's side, and is still one of its fds."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server_side, _ = listener.accept()
    try:
        fds, states = conn_states(os.getpid(), local_port=port)
        assert states == {"ESTABLISHED": 1}
        assert fds is not None and count_fds(os.getpid(), port)[1] == 1
        assert conn_states(os.getpid(), remote_port=port)[1] == {"ESTABLISHED": 1}  # the client's side
        client.close()
        for _ in range(100):  # the FIN arrives at once on loopback
            if conn_states(os.getpid(), local_port=port)[1] == {"CLOSE_WAIT": 1}:
                break
            asyncio.run(asyncio.sleep(0.01))
        assert conn_states(os.getpid(), local_port=port)[1] == {"CLOSE_WAIT": 1}
        assert conn_states(os.getpid(), remote_port=port)[1] == {}  # the client's socket: no fd any more
    finally:
        server_side.close()
        client.close()
        listener.close()
    assert conn_states(os.getpid(), local_port=port)[1] == {}
    assert conn_states(2**22 + 12345) == (None, None)  # no such process


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A local HTTP server answering its client's port; ``?slow=1`` waits for the event."""
    gate = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        if request.query.get("slow"):
            await gate.wait()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return web.Response(text=str(peer[1] if peer else 0))

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/", gate
    finally:
        await runner.cleanup()


async def _burst_then_steady(pool: type[aiohttp.TCPConnector], steady_s: float) -> tuple[int, int]:
    """A burst of 8 slow requests (8 connections), then one request at a time for ``steady_s``
    through a ``pool`` with a 0.5 s keep-alive: (connections the steady requests went over, idle
    connections in the pool at the end)."""
    connector = pool(keepalive_timeout=0.5)
    async with _server() as (url, gate), aiohttp.ClientSession(connector=connector) as session:

        async def get(slow: bool) -> str:
            async with session.get(url, params={"slow": "1"} if slow else {}) as resp:
                return await resp.text()

        burst = [asyncio.create_task(get(True)) for _ in range(8)]
        await asyncio.sleep(0.2)
        gate.set()
        assert len(set(await asyncio.gather(*burst))) == 8
        loop = asyncio.get_running_loop()
        end = loop.time() + steady_s
        used = {await get(False)}
        while loop.time() < end:
            await asyncio.sleep(0.02)
            used.add(await get(False))
        return len(used), sum(len(q) for q in connector._conns.values())


def test_aiohttp_pool_keeps_every_connection_warm_and_lifo_does_not() -> None:
    # aiohttp's own pool (FIFO): one request at a time still takes turns on all 8 connections the
    # burst opened, so none stays idle for the keep-alive timeout and all 8 stay open
    assert asyncio.run(_burst_then_steady(aiohttp.TCPConnector, 1.6)) == (8, 8)
    # LIFO: the connection released last is reused; the 7 others stay idle and are closed
    assert asyncio.run(_burst_then_steady(LifoConnector, 1.6)) == (1, 1)


def sample(t: float, *replicas: tuple[int, int, int, int, float | None]) -> Sample:
    """replicas: (rss MiB, fds, http conns, series, ledger)."""
    return Sample(
        t,
        [
            ReplicaSample(i, 100 + i, rss * MIB, fds, conns, series, ledger)
            for i, (rss, fds, conns, series, ledger) in enumerate(replicas)
        ],
    )


def test_bound_is_the_larger_of_relative_and_absolute() -> None:
    rss = BOUNDS["rss_bytes"]
    assert rss.limit(100 * MIB) == 116 * MIB  # 10 % = 10 MiB < 16 MiB
    assert rss.limit(300 * MIB) == 330 * MIB  # 10 % = 30 MiB > 16 MiB
    assert Bound(0.0, 8).limit(20) == 28
    assert Bound(0.1, 16).text(1, " MiB") == "+10% or +16 MiB (whichever is larger)"


def test_flat_after_warm_up() -> None:
    samples = [
        sample(0, (40, 30, 0, 100, 0)),
        sample(60, (90, 40, 10, 110, 6000)),  # warm-up: anything goes
        sample(120, (100, 35, 4, 120, 12000)),  # the baseline
        sample(180, (110, 60, 29, 130, 18000)),  # +10 MiB, +25 fds of which +25 connections, +10 series
        sample(240, (115, 38, 5, 136, 24000)),
    ]
    checks = judge(samples, warmup_s=120)
    assert {c.measure for c in checks} == {"rss_bytes", "other_fds", "series"}  # the ledger not judged
    assert all(c.ok for c in checks), checks
    rss = next(c for c in checks if c.measure == "rss_bytes")
    assert (rss.base, rss.peak, rss.limit) == (100 * MIB, 115 * MIB, 116 * MIB)


@pytest.mark.parametrize(
    ("last", "grows"),
    [
        ((117, 35, 4, 120, 12000), "rss_bytes"),  # > +16 MiB
        ((100, 44, 4, 120, 12000), "other_fds"),  # 40 other fds > 31 + 8
        ((100, 35, 4, 137, 12000), "series"),  # > +16
        ((100, 35, 4, 120, 13500), "ledger"),  # > +10 %, judged here
    ],
)
def test_growth_past_a_bound_fails(last: tuple[int, int, int, int, float], grows: str) -> None:
    samples = [sample(0, (40, 30, 0, 100, 0)), sample(120, (100, 35, 4, 120, 12000)), sample(180, last)]
    checks = judge(samples, warmup_s=100, judge_ledger=True)
    assert [c.measure for c in checks if not c.ok] == [grows]


def test_each_replica_judged_on_its_own_and_missing_data_fails() -> None:
    samples = [
        sample(0, (40, 30, 0, 100, 0), (40, 30, 0, 100, 0)),
        sample(60, (100, 35, 4, 120, 0), (60, 35, 4, 120, 0)),
        sample(120, (101, 35, 4, 120, 0), (80, 35, 4, 120, 0)),  # replica 1: +20 MiB
    ]
    bad = [(c.replica, c.measure) for c in judge(samples, warmup_s=60) if not c.ok]
    assert bad == [(1, "rss_bytes")]

    gone = [*samples[:2], Sample(120, [ReplicaSample(0, 100), ReplicaSample(1, 101)])]  # nothing readable
    assert all(not c.ok and c.note for c in judge(gone, warmup_s=60))


def test_too_few_samples_after_warm_up_is_not_flat() -> None:
    samples = [sample(0, (40, 30, 0, 100, 0)), sample(60, (40, 30, 0, 100, 0))]
    checks = judge(samples, warmup_s=60)
    assert checks and all(not c.ok for c in checks)
    assert "1 sample(s)" in checks[0].note


def test_window_stats() -> None:
    attempts = [Attempt("e", 1, 0, 10.0, 10.0 + ms / 1000, 200) for ms in range(1, 101)]
    attempts.append(Attempt("f", 1, 1, 10.0, 13.0, None, "TimeoutError"))
    attempts.append(Attempt("g", 1, 1, 10.0, 10.5, 503))
    statuses, p50, p99 = window_stats(attempts)
    assert statuses == {"200": 100, "503": 1, "TimeoutError": 1}
    assert p50 == pytest.approx(51.0)
    assert p99 == pytest.approx(500.0)
    assert window_stats([])[0] == {} and math.isnan(window_stats([])[1])
