"""``python -m benchmarks.run`` (``make bench``): the bridge vs. its floor, the HTTP ceiling and the docs' recipe.

One core each. The runner pins itself, the local Kafka broker it starts and the load
generator to core 1 (``taskset -c 1``) and runs the services under test one at a time on core 0
(``taskset -c 0``):

1. ``ceiling`` — a minimal aiohttp app that reads the body and answers 200 (``benchmarks/ceiling.py``);
2. ``passthrough`` — the ceiling's app whose handler publishes the raw body with the bridge's own
   producer (``bridge.publish.build_producer``, same ``BRIDGE_*`` environment: idempotent, acks=all)
   to a topic of its own with the partitions of the bridge's topics, and answers 200 after the ack;
   no verification, no decoding (``benchmarks/passthrough.py``): what the chosen libraries cost by
   themselves, the bridge's floor;
3. ``bridge``  — ``python -m bridge serve`` with an encrypt key, log level WARNING;
4. ``bridge-full-window`` — the same bridge with its dedup window pre-filled with 1,000,000 ids
   (``benchmarks/bridge_prefilled.py``), for the peak-RSS target;
5. ``recipe``  — the SDK's ``EventDispatcherHandler`` in Flask + kafka-python ``send().get()``
   (``benchmarks/recipe.py``).

Each is driven open-loop by ``benchmarks/loadgen`` with pre-built, platform-exact requests
(``benchmarks/traffic.py``): a warm-up, fixed rates of 500, 1,000 and 2,000 events/s, then a rising
rate (×1.5 until a step fails, then bisection). A step *passes* when every answer is 200, p99
(measured from each request's due time) ≤ 100 ms and the generator held the rate; a marginal
failure is re-tried once, and the highest passing rate is re-run 1.6× longer to confirm it (7 % lower
each time it does not hold): the *max sustained* rate. Then one more step at half of that service's
own max sustained rate (phase ``half``: its p99 at 50 % load; not for ``bridge-full-window``). Per
step: latency percentiles, the service's CPU seconds (``/proc/<pid>/stat`` utime+stime), the load
core's CPU (broker + generator); per service: peak RSS (VmHWM). Between the ceiling and the
passthrough, the generator is pointed at a Go ``net/http`` sink at 1.5-3× the ceiling's max to
show it is not the bottleneck, and vegeta cross-checks its numbers on the bridge. After the bridge,
every record of its topics is read back and matched to the request that sent it (delivery ids
encode step and index; the generator records every request's status); the passthrough's topic is
not among them.

A thread with real-time priority watches for VM pauses (``tools.StallDetector``); a step during
which the VM stalled ≥ 50 ms is re-run (``--stall-retries``) and shown as such.

Writes the results between the markers of ``BENCHMARKS.md`` (the rest of that file is kept), the
plot ``benchmarks/latency_vs_rate.png`` and the raw data ``benchmarks/results.json``, and prints
the ratios of max sustained events/s bridge/passthrough, bridge/ceiling and bridge/recipe (also in
``results.json`` under ``ratios``: null when either side has no max sustained rate). About 10-13
minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import logging
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from benchmarks import tools
from benchmarks.traffic import MIX, TrafficBuilder, parse_delivery_id

TOKEN: Final = "bench-verification-token"
KEY: Final = "bench-encrypt-key"
PATH: Final = "/webhook/event"
SERVICE_CORE: Final = 0
LOAD_CORE: Final = 1
FIXED_RATES: Final = (500, 1000, 2000)
P99_LIMIT_MS: Final = 100.0
MIN_SENT_SHARE: Final = 0.95  # the generator must have sent at least this share of the rate
TIMEOUT: Final = "10s"
MAX_CONNS: Final = 1000
#: Warm-up steps (rate/s, seconds) before a service's measured steps: connections, caches, the
#: broker's JIT for the service's produce path. Under any service's capacity.
WARMUP: Final = ((300, 3.0), (600, 4.0))
STALL_RERUN_MS: Final = 50.0
FOREIGN_RERUN_SHARE: Final = 0.15  # re-run a step when other processes used this share of a core
#: The dev broker's JVM flags are tuned for start-up (C1 only, a small heap that grows). Here: the
#: full JIT and the whole heap touched at start, so the broker spends less of the load core and
#: does not fault in fresh memory mid-step (which stalls this VM, see tools.StallDetector).
BROKER_JVM_OPTS: Final = (
    "-Xms512m",
    "-Xmx512m",
    "-XX:+AlwaysPreTouch",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
BRIDGE_TOPICS: Final = (
    "lark.vc.room.created_v1",
    "lark.vc.reserve_config.updated_v1",
    "lark.third_party_meeting_room_event",
    "lark.bridge.dead_letter",
)
RECIPE_PREFIX: Final = "recipe."
#: The passthrough's topic: not one of BRIDGE_TOPICS, so the broker-side check never reads it.
PASSTHROUGH_TOPIC: Final = "bench.passthrough"
#: Services whose max sustained rate the bridge's is divided by (keys of results.json "ratios").
RATIO_BASES: Final = ("passthrough", "ceiling", "recipe")
RESULTS_JSON: Final = tools.BENCH_DIR / "results.json"
PLOT_PNG: Final = tools.BENCH_DIR / "latency_vs_rate.png"
BENCHMARKS_MD: Final = tools.REPO / "BENCHMARKS.md"
BEGIN: Final = "<!-- bench:results:begin (written by python -m benchmarks.run; edits here are overwritten) -->"
END: Final = "<!-- bench:results:end -->"


@dataclass
class Step:
    """One load step: ``rate`` events/s for ``duration_s`` against ``service``."""

    service: str
    phase: str  # warmup | fixed | ramp | confirm | half | generator | vegeta
    step: int
    rate: int
    duration_s: float
    tool: str = "loadgen"
    requests: int = 0
    ok: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    p99_due_ms: float = 0.0  # = p99_ms (from the due time; what the pass criterion uses)
    p50_write_ms: float = 0.0  # from the write of the request (what vegeta and wrk report)
    p99_write_ms: float = 0.0
    lag_p99_ms: float = 0.0
    conns: int = 0
    sent_rate: float = 0.0
    wall_s: float = 0.0
    svc_cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    gen_cpu_s: float = 0.0
    records_expected: int = 0
    hwm_bytes: int | None = None  # the service's VmHWM right after the step
    foreign_cpu_s: float = 0.0  # CPU used meanwhile by processes that are not part of the benchmark
    stalls_ms: list[float] = field(default_factory=list)
    superseded: bool = False  # re-run (VM stall or marginal failure); not used in the results
    passed: bool = False

    @property
    def cpu_per_1k(self) -> float | None:
        """Service CPU seconds per 1,000 answered-200 events."""
        return self.svc_cpu_s / self.ok * 1000 if self.ok else None

    @property
    def error_share(self) -> float:
        return 1 - self.ok / self.requests if self.requests else 0.0

    @property
    def marginal(self) -> bool:
        """Failed on latency alone, not far off: worth one more try."""
        return not self.passed and self.ok == self.requests and self.p99_due_ms < 10 * P99_LIMIT_MS


@dataclass
class ServiceResult:
    name: str
    label: str
    steps: list[Step] = field(default_factory=list)
    max_sustained: int = 0
    peak_rss: int | None = None
    pinned: str = ""
    exit_code: int | None = None
    note: str = ""
    half_rate: int = 0  # round(max_sustained / 2): the rate of the "half" step (0: none)
    p99_at_half_ms: float | None = None  # p99 (from the due time) at half_rate

    def valid(self) -> list[Step]:
        """The steps that count (not superseded by a re-run)."""
        return [s for s in self.steps if not s.superseded]

    def fixed(self, rate: int) -> Step | None:
        return next((s for s in self.valid() if s.phase == "fixed" and s.rate == rate), None)

    def at_max(self) -> Step | None:
        cands = [
            s
            for s in self.valid()
            if s.passed and s.rate == self.max_sustained and s.phase in ("confirm", "ramp", "fixed")
        ]
        return max(cands, key=lambda s: (s.phase == "confirm", s.duration_s), default=None)

    def half(self) -> Step | None:
        """The step at half of the max sustained rate."""
        return next((s for s in self.valid() if s.phase == "half"), None)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_tag = secrets.token_hex(4)
        self.step_no = 0
        self.work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
        self.loadgen = tools.ensure_loadgen()
        self.sink = tools.ensure_sink()
        self.vegeta = tools.ensure_vegeta()
        self.broker: Any = None
        self.broker_rss: int | None = None
        self.results: dict[str, ServiceResult] = {}
        self.broker_check: dict[str, Any] = {}
        self.statuses: dict[int, array.array[int]] = {}  # step -> status of each request
        self.fanout: dict[int, list[int]] = {}  # step -> records each request fans out to
        self.stall_detectors = [tools.StallDetector(cpu=SERVICE_CORE), tools.StallDetector(cpu=LOAD_CORE)]
        self.fixed_rates = tuple(int(r) for r in args.fixed_rates.split(",")) if args.fixed_rates else FIXED_RATES

    # -- one step ---------------------------------------------------------------------------

    def attack(
        self,
        svc: tools.Service,
        res: ServiceResult,
        phase: str,
        rate: int,
        duration_s: float,
        *,
        retry_marginal: bool = False,
    ) -> Step:
        """One step; re-run (with new delivery ids) while the VM stalled during it (up to
        ``--stall-retries`` times), and once more when ``retry_marginal`` and it failed narrowly."""
        stall_runs = 0
        while True:
            step = self._attack_once(svc, res, phase, rate, duration_s)
            worst = max(step.stalls_ms, default=0.0)
            foreign = step.foreign_cpu_s / step.wall_s if step.wall_s else 0.0
            if worst >= STALL_RERUN_MS and stall_runs < self.args.stall_retries:
                stall_runs += 1
                why = f"VM stall of {worst:.0f} ms"
            elif foreign >= FOREIGN_RERUN_SHARE and stall_runs < self.args.stall_retries:
                stall_runs += 1
                why = f"other processes used {foreign:.0%} of a core"
            elif retry_marginal and step.marginal:
                retry_marginal = False
                why = "marginal failure"
            else:
                return step
            step.superseded = True
            print(f"    {why} during the step: re-running it", flush=True)
            time.sleep(1)

    def _new_step(
        self, svc: tools.Service, phase: str, rate: int, duration_s: float
    ) -> tuple[Step, int, TrafficBuilder]:
        self.step_no += 1
        step = Step(svc.name, phase, self.step_no, rate, duration_s)
        count = max(1, round(rate * duration_s))
        builder = TrafficBuilder(f"http://127.0.0.1:{svc.port}{PATH}", TOKEN, KEY, self.run_tag, seed=self.step_no)
        return step, count, builder

    def _measure(self, svc: tools.Service, step: Step, argv: list[str]) -> str:
        """Run the generator ``argv`` on the load core; fill CPU/stall fields; returns its stdout."""
        broker_pid = self.broker.pid if self.broker is not None else None
        ours = {os.getpid(), svc.pid} | ({broker_pid} if broker_pid else set())
        waited = tools.wait_quiet(ours)
        if waited > 3:
            print(f"    waited {waited:.0f}s for other processes on this machine to go quiet", flush=True)
        others0 = tools.process_ticks(ours)
        svc_cpu0 = tools.cpu_seconds(svc.pid)
        broker_cpu0 = tools.cpu_seconds(broker_pid) if broker_pid else 0.0
        t0 = time.monotonic()
        proc = subprocess.Popen(
            ["taskset", "-c", str(LOAD_CORE), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        t1 = time.monotonic()
        step.wall_s = t1 - t0
        step.svc_cpu_s = tools.cpu_seconds(svc.pid) - svc_cpu0
        step.broker_cpu_s = (tools.cpu_seconds(broker_pid) - broker_cpu0) if broker_pid else 0.0
        step.gen_cpu_s = rusage.ru_utime + rusage.ru_stime
        step.foreign_cpu_s = tools.foreign_cpu_s(others0, tools.process_ticks(ours))
        step.stalls_ms = sorted(round(g * 1000, 1) for d in self.stall_detectors for g in d.stalls(t0, t1))
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
        return out.decode()

    def _attack_once(self, svc: tools.Service, res: ServiceResult, phase: str, rate: int, duration_s: float) -> Step:
        step, count, builder = self._new_step(svc, phase, rate, duration_s)
        blob, records = builder.step_raw(step.step, count)
        reqs, status_file = self.work / "requests.bin", self.work / "status.bin"
        reqs.write_bytes(blob)
        del blob
        out = self._measure(
            svc,
            step,
            [
                str(self.loadgen),
                "-addr",
                f"127.0.0.1:{svc.port}",
                "-requests",
                str(reqs),
                "-rate",
                str(rate),
                "-duration",
                f"{duration_s}s",
                "-timeout",
                TIMEOUT,
                "-max-conns",
                str(MAX_CONNS),
                "-status-out",
                str(status_file),
            ],
        )
        rep = json.loads(out)
        statuses = array.array("h")
        statuses.frombytes(status_file.read_bytes())
        self.statuses[step.step], self.fanout[step.step] = statuses, records
        lat = rep["latency_ms"]
        step.requests = rep["requests"]
        step.codes = rep["status_codes"]
        step.ok = step.codes.get("200", 0)
        step.errors = rep["errors"]
        due = rep["latency_from_due_ms"]
        step.p50_ms, step.p95_ms, step.p99_ms, step.max_ms = due["p50"], due["p95"], due["p99"], due["max"]
        step.p99_due_ms = step.p99_ms
        step.p50_write_ms, step.p99_write_ms = lat["p50"], lat["p99"]
        step.lag_p99_ms = rep["send_lag_ms"]["p99"]
        step.conns = rep["conns_opened"]
        step.sent_rate = rep["sent_rate"]
        step.records_expected = sum(records[: step.requests])
        step.passed = (
            step.ok == step.requests > 0 and step.p99_due_ms <= P99_LIMIT_MS and step.sent_rate >= MIN_SENT_SHARE * rate
        )
        return self._done(svc, res, step)

    def attack_vegeta(self, svc: tools.Service, res: ServiceResult, rate: int, duration_s: float) -> Step:
        """The same kind of step driven by vegeta (cross-check of the generator's numbers)."""
        step, count, builder = self._new_step(svc, "vegeta", rate, duration_s)
        step.tool = "vegeta"
        traffic = builder.step(step.step, count + count // 50 + 20)  # never wrap around: ids stay unique
        targets, results = self.work / "targets.json", self.work / "results.bin"
        targets.write_bytes(b"\n".join(traffic.lines) + b"\n")
        self._measure(
            svc,
            step,
            [
                str(self.vegeta),
                "attack",
                "-format=json",
                f"-targets={targets}",
                f"-rate={rate}/1s",
                f"-duration={duration_s}s",
                f"-timeout={TIMEOUT}",
                f"-max-workers={MAX_CONNS}",
                "-max-body=0",
                f"-output={results}",
            ],
        )
        rep = tools.run_json([str(self.vegeta), "report", "-type=json", str(results)])
        lat = rep["latencies"]
        step.requests = rep["requests"]
        step.codes = dict(rep.get("status_codes") or {})
        step.ok = step.codes.get("200", 0)
        step.errors = dict.fromkeys(sorted(set(rep.get("errors") or []))[:5], 1)
        step.p50_ms, step.p95_ms, step.p99_ms, step.max_ms = (lat[k] / 1e6 for k in ("50th", "95th", "99th", "max"))
        step.p99_due_ms = step.p99_ms
        step.p50_write_ms, step.p99_write_ms = step.p50_ms, step.p99_ms
        step.sent_rate = rep["rate"]
        step.records_expected = sum(traffic.records[: step.requests])
        step.passed = step.ok == step.requests > 0 and step.p99_ms <= P99_LIMIT_MS
        return self._done(svc, res, step)

    def _done(self, svc: tools.Service, res: ServiceResult, step: Step) -> Step:
        step.hwm_bytes = tools.proc_status(svc.pid, "VmHWM")
        res.steps.append(step)
        errs = ",".join(f"{k}:{v}" for k, v in step.errors.items())
        print(
            f"  {svc.name:<19} {step.phase:<9} {step.rate:>6}/s  sent {step.sent_rate:8.1f}/s"
            f"  200s {step.ok:>6}/{step.requests:<6}"
            f" p50 {step.p50_ms:7.2f}  p95 {step.p95_ms:7.2f}  p99 {step.p99_ms:8.2f}"
            f" (from write {step.p99_write_ms:8.2f}) ms"
            f"  cpu {step.svc_cpu_s / step.wall_s:4.0%}  {'pass' if step.passed else 'FAIL'}"
            + (f"  codes {step.codes}" if len(step.codes) > 1 or step.errors else "")
            + (f" {errs}" if errs else "")
            + (f"  stalls {step.stalls_ms} ms" if step.stalls_ms else ""),
            flush=True,
        )
        tools.wait_idle(svc.pid)
        time.sleep(0.5)
        return step

    # -- a whole service ---------------------------------------------------------------------

    def measure(self, svc: tools.Service, *, vegeta_check: bool = False) -> ServiceResult:
        res = ServiceResult(svc.name, svc.label)
        self.results[svc.name] = res
        print(f"\n== {svc.name}: {svc.label}", flush=True)
        svc.start(self.work)
        res.pinned = tools.cpus_allowed(svc.pid)
        d = self.args.step_s
        try:
            self.warm_up(svc, res)
            fixed = [self.attack(svc, res, "fixed", r, d) for r in self.fixed_rates]
            if vegeta_check and not self.args.fixed_only:
                self.attack_vegeta(svc, res, 1000, d)
            if not self.args.fixed_only:
                res.max_sustained = self.ramp(svc, res, fixed)
            if res.max_sustained:  # p99 at 50 % of the service's own max sustained rate
                res.half_rate = max(1, round(res.max_sustained / 2))
                res.p99_at_half_ms = self.attack(svc, res, "half", res.half_rate, d).p99_ms
            res.peak_rss = tools.proc_status(svc.pid, "VmHWM")
        finally:
            res.exit_code = svc.stop()
        return res

    def warm_up(self, svc: tools.Service, res: ServiceResult) -> None:
        for rate, seconds in WARMUP:
            self.attack(svc, res, "warmup", rate, seconds)
        if self.broker is not None and self.broker.pid:
            tools.wait_idle(self.broker.pid, threshold=0.1, timeout_s=20)

    def warm_broker(self, records: int = 60_000) -> None:
        """Produce ``records`` ~1 KB records (idempotent, acks=all, like the bridge) so that the
        broker's JIT has compiled its produce path before anything is measured."""
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def produce() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap_servers)
            await admin.start()
            try:
                await admin.create_topics([NewTopic("bench.warmup", num_partitions=12, replication_factor=1)])
            finally:
                await admin.close()
            await asyncio.sleep(1)  # leaders of the new partitions
            producer = AIOKafkaProducer(
                bootstrap_servers=self.broker.bootstrap_servers, enable_idempotence=True, acks="all", linger_ms=0
            )
            await producer.start()
            try:
                value = b"x" * 1000
                for start in range(0, records, 500):
                    futs = [
                        await producer.send("bench.warmup", value, key=b"%d" % (i % 1000))
                        for i in range(start, start + 500)
                    ]
                    await asyncio.gather(*futs)
            finally:
                await producer.stop()

        t0 = time.monotonic()
        asyncio.run(produce())
        tools.wait_idle(self.broker.pid, threshold=0.1, timeout_s=30)
        print(f"broker warmed up with {records:,} records in {time.monotonic() - t0:.1f}s", flush=True)

    def ramp(self, svc: tools.Service, res: ServiceResult, fixed: list[Step]) -> int:
        d = self.args.step_s
        # Start from the highest fixed rate that passed (a lower one failing too is noise, e.g. a VM
        # stall; it stays reported as measured) and the lowest failing one above it.
        passing = [s.rate for s in fixed if s.passed]
        lo: int | None = max(passing) if passing else None
        hi: int | None = min((s.rate for s in fixed if not s.passed and s.rate > (lo or 0)), default=None)

        def rnd(x: float) -> int:
            unit = 10 if x < 1000 else 50
            return max(unit, round(x / unit) * unit)

        def ok(rate: int) -> bool:
            return self.attack(svc, res, "ramp", rate, d, retry_marginal=True).passed

        if lo is None:  # even the lowest fixed rate failed: climb from 50/s
            r = 50
            while r < (hi or FIXED_RATES[0]):
                if ok(r):
                    lo, r = r, rnd(r * 1.6)
                else:
                    hi = r
                    break
            if lo is None:
                return 0
            hi = hi or FIXED_RATES[0]
        elif hi is None:  # 2,000/s passed: ×1.5 until a step fails
            r = rnd(lo * 1.5)
            while hi is None and r <= 200_000:
                if ok(r):
                    lo, r = r, rnd(r * 1.5)
                else:
                    hi = r
        assert lo is not None
        assert hi is not None
        for _ in range(self.args.refine):
            mid = rnd(math.sqrt(lo * hi))
            if mid <= lo or mid >= hi:
                break
            if ok(mid):
                lo = mid
            else:
                hi = mid
        # Confirm the max with a longer step; step down 7 % at a time until one holds.
        for _ in range(8):
            if self.attack(svc, res, "confirm", lo, d * 1.6, retry_marginal=True).passed:
                return lo
            lo = rnd(lo * 0.93)
        return 0

    # -- the load generator check -------------------------------------------------------------

    def generator_check(self, ceiling_max: int) -> None:
        port = tools_free_port()
        sink = tools.Service(
            "generator-check",
            "Go net/http sink (load-generator check)",
            [str(self.sink), str(port)],
            port,
            ready_path="/",
        )
        res = ServiceResult(sink.name, sink.label)
        self.results[sink.name] = res
        print(
            f"\n== {sink.name}: does the generator on core {LOAD_CORE} send well past the ceiling's rate?", flush=True
        )
        sink.start(self.work)
        res.pinned = tools.cpus_allowed(sink.pid)
        try:
            for factor in (1.5, 2.0, 3.0):
                self.attack(sink, res, "generator", int(round(max(ceiling_max, 2000) * factor, -2)), 3)
        finally:
            res.exit_code = sink.stop()

    # -- services ----------------------------------------------------------------------------

    def bridge_env(self, port: int) -> dict[str, str]:
        return {
            "BRIDGE_LARK_VERIFICATION_TOKEN": TOKEN,
            "BRIDGE_LARK_ENCRYPT_KEY": KEY,
            "BRIDGE_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "BRIDGE_HTTP_HOST": "127.0.0.1",
            "BRIDGE_HTTP_PORT": str(port),
            "BRIDGE_LOG_LEVEL": "WARNING",
        }

    def bridge_partitions(self) -> int:
        """Partitions of the topics the bridge creates (``BRIDGE_KAFKA_TOPIC_PARTITIONS`` as the bridge
        reads it from :meth:`bridge_env`)."""
        from bridge.settings import load_settings

        return load_settings(self.bridge_env(8080)).kafka_topic_partitions  # the port plays no part

    def run(self) -> None:
        from bridge_devtools.broker import LocalBroker

        only = set(self.args.only.split(",")) if self.args.only else None

        def want(name: str) -> bool:
            return only is None or name in only

        self.broker = LocalBroker(jvm_opts=BROKER_JVM_OPTS)
        print(f"starting Kafka {self.broker.version} on core {LOAD_CORE} ...", flush=True)
        self.broker.start(timeout_s=180)
        try:
            self._create_topics()
            if any(want(n) for n in ("passthrough", "bridge", "bridge-full-window", "recipe")):
                self.warm_broker()
            py = sys.executable
            if want("ceiling"):
                port = tools_free_port()
                self.measure(
                    tools.Service(
                        "ceiling",
                        "minimal aiohttp app (read body, 200)",
                        [py, "-m", "benchmarks.ceiling", str(port)],
                        port,
                    )
                )
            if want("generator-check"):
                self.generator_check(self.results["ceiling"].max_sustained if "ceiling" in self.results else 8000)
            if want("passthrough"):
                port = tools_free_port()
                self.measure(
                    tools.Service(
                        "passthrough",
                        "ceiling app + the bridge's producer (publish raw body, 200 after the ack)",
                        [py, "-m", "benchmarks.passthrough", str(port)],
                        port,
                        {**self.bridge_env(port), "PASSTHROUGH_TOPIC": PASSTHROUGH_TOPIC},
                    )
                )
            if want("bridge"):
                port = tools_free_port()
                self.measure(
                    tools.Service(
                        "bridge",
                        "python -m bridge serve (encrypt key)",
                        [py, "-m", "bridge", "serve"],
                        port,
                        self.bridge_env(port),
                    ),
                    vegeta_check=True,
                )
            if want("bridge-full-window"):
                self.full_window()
            if want("recipe"):
                port = tools_free_port()
                env = {
                    "RECIPE_ENCRYPT_KEY": KEY,
                    "RECIPE_VERIFICATION_TOKEN": TOKEN,
                    "RECIPE_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
                    "RECIPE_TOPIC_PREFIX": RECIPE_PREFIX,
                }
                self.measure(
                    tools.Service(
                        "recipe",
                        "lark-oapi EventDispatcherHandler + Flask + kafka-python",
                        [py, "-m", "benchmarks.recipe", str(port)],
                        port,
                        env,
                    )
                )
            if "bridge" in self.results or "bridge-full-window" in self.results:
                print("\n== reading the bridge's records back from Kafka", flush=True)
                self.broker_check = asyncio.run(self._check_broker())
                bc = self.broker_check
                print(
                    f"  {bc['records_total']:,} records; {bc['ok_total']:,} answers 200, "
                    f"{bc['ok_missing']} of them without their record(s), {bc['fanout_mismatch']} with a wrong record "
                    f"count; {bc['published_not_ok']} published although not answered 200; "
                    f"{bc['duplicate_record_ids']} duplicate record ids; {bc['dead_letters']} dead letters",
                    flush=True,
                )
            self.broker_rss = self.broker.rss_bytes()
        finally:
            for d in self.stall_detectors:
                d.close()
            self.broker.stop()
            self.broker.cleanup()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                print(f"work dir kept: {self.work}")

    def full_window(self) -> None:
        """The bridge with 1,000,000 ids in its dedup window: peak RSS, latency at 1,000/s and at max."""
        port = tools_free_port()
        svc = tools.Service(
            "bridge-full-window",
            "bridge, dedup window pre-filled with 1,000,000 ids",
            [sys.executable, "-m", "benchmarks.bridge_prefilled"],
            port,
            self.bridge_env(port),
        )
        res = ServiceResult(svc.name, svc.label)
        self.results[svc.name] = res
        print(f"\n== {svc.name}: {svc.label}", flush=True)
        svc.start(self.work)
        res.pinned = tools.cpus_allowed(svc.pid)
        d = self.args.step_s
        try:
            self.warm_up(svc, res)
            self.attack(svc, res, "fixed", 1000, d)
            bridge_max = self.results["bridge"].max_sustained if "bridge" in self.results else 0
            if bridge_max:
                step = self.attack(svc, res, "confirm", bridge_max, d, retry_marginal=True)
                res.max_sustained = bridge_max if step.passed else 0
            res.peak_rss = tools.proc_status(svc.pid, "VmHWM")
            log = svc.log_tail(200)
            res.note = next(
                (ln.split("bridge_prefilled: ", 1)[1] for ln in log.splitlines() if "bridge_prefilled:" in ln), ""
            )
        finally:
            res.exit_code = svc.stop()

    def _create_topics(self) -> None:
        """The recipe's three topics and the passthrough's one, with the partitions of the bridge's
        topics (which the bridge creates itself at start)."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        partitions = self.bridge_partitions()

        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap_servers)
            await admin.start()
            try:
                names = [RECIPE_PREFIX + t for t in BRIDGE_TOPICS[:3]] + [PASSTHROUGH_TOPIC]
                await admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
            finally:
                await admin.close()

        asyncio.run(create())

    async def _check_broker(self) -> dict[str, Any]:
        """Read every record of the bridge's topics and match each to the request that sent it."""
        import msgspec
        from aiokafka import AIOKafkaConsumer, TopicPartition

        class Env(msgspec.Struct):
            id: str
            larkeventid: str | None = None

        dec = msgspec.json.Decoder(Env)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.broker.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 << 20,
        )
        await consumer.start()
        per_request: dict[tuple[int, int], int] = defaultdict(int)  # (step, index) -> records
        record_ids: set[str] = set()
        total = foreign = dead = 0
        try:
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(t, p) for t in BRIDGE_TOPICS for p in (consumer.partitions_for_topic(t) or ())]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            remaining = {tp for tp in parts if end[tp] > 0}
            deadline = time.monotonic() + 300
            while remaining and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000, max_records=20000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        total += 1
                        if tp.topic == "lark.bridge.dead_letter":
                            dead += 1
                            continue
                        env = dec.decode(m.value)
                        record_ids.add(env.id)
                        parsed = parse_delivery_id(env.larkeventid or "")
                        if parsed is None or parsed[0] != self.run_tag:
                            foreign += 1
                            continue
                        per_request[(parsed[1], parsed[2])] += 1
                    if msgs and msgs[-1].offset + 1 >= end[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        steps = []
        for name in ("bridge", "bridge-full-window"):
            for s in self.results.get(name, ServiceResult("", "")).steps:
                entry: dict[str, Any] = {
                    "service": name,
                    "step": s.step,
                    "phase": s.phase,
                    "tool": s.tool,
                    "rate": s.rate,
                    "requests": s.requests,
                    "ok": s.ok,
                }
                in_kafka = {i for (st, i) in per_request if st == s.step}
                entry["ids_in_kafka"] = len(in_kafka)
                entry["records_in_kafka"] = sum(per_request[(s.step, i)] for i in in_kafka)
                statuses = self.statuses.get(s.step)
                if statuses is not None:  # exact, per request
                    ok_idx = {i for i, v in enumerate(statuses) if v == 200}
                    fan = self.fanout[s.step]
                    entry["ok_missing"] = len(ok_idx - in_kafka)
                    entry["fanout_mismatch"] = sum(1 for i in ok_idx & in_kafka if per_request[(s.step, i)] != fan[i])
                    entry["published_not_ok"] = len(in_kafka - ok_idx)
                    entry["records_expected_ok"] = sum(fan[i] for i in ok_idx)
                    entry["good"] = entry["ok_missing"] == 0 and entry["fanout_mismatch"] == 0
                else:  # vegeta step: by count (vegeta does not say which request got which answer)
                    entry["ok_missing"] = max(0, s.ok - len(in_kafka))
                    entry["fanout_mismatch"] = (
                        0 if s.ok != s.requests or entry["records_in_kafka"] == s.records_expected else 1
                    )
                    entry["published_not_ok"] = max(0, len(in_kafka) - s.ok)
                    entry["records_expected_ok"] = s.records_expected if s.ok == s.requests else None
                    entry["good"] = entry["ok_missing"] == 0 and entry["fanout_mismatch"] == 0
                steps.append(entry)
        return {
            "records_total": total,
            "dead_letters": dead,
            "foreign": foreign,
            "duplicate_record_ids": (total - dead) - len(record_ids),
            "ok_total": sum(x["ok"] for x in steps),
            "ids_total": sum(x["ids_in_kafka"] for x in steps),
            "records_in_kafka_total": sum(x["records_in_kafka"] for x in steps),
            "ok_missing": sum(x["ok_missing"] for x in steps),
            "fanout_mismatch": sum(x["fanout_mismatch"] for x in steps),
            "published_not_ok": sum(x["published_not_ok"] for x in steps),
            "all_good": all(x["good"] for x in steps)
            and dead == 0
            and foreign == 0
            and total - dead == len(record_ids),
            "steps": steps,
        }


def tools_free_port() -> int:
    from bridge_devtools.broker import free_port

    return free_port()


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def versions(bench: Bench) -> dict[str, str]:
    from importlib.metadata import version

    out = {"Python": platform.python_version()}
    for pkg in (
        "aiohttp",
        "aiokafka",
        "msgspec",
        "cryptography",
        "lark-oapi",
        "Flask",
        "Werkzeug",
        "kafka-python",
        "matplotlib",
    ):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = "?"
    out["Kafka broker"] = bench.broker.version if bench.broker is not None else "?"
    out["Java"] = tools.tool_version(["java", "-version"])
    out["Go"] = (
        tools.tool_version(["go", "version"]) or tools.tool_version(["/usr/local/go/bin/go", "version"])
    ).replace("go version ", "")
    out["vegeta"] = tools.VEGETA_VERSION
    out["bridge"] = tools.git_revision()
    return out


def machine() -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": mem, "kernel": platform.release()}


def fmt_lat(s: Step | None) -> str:
    if s is None:
        return "—"
    txt = f"{s.p50_ms:.1f} / {s.p95_ms:.1f} / {s.p99_ms:.1f}"
    if s.error_share > 0:
        txt += f" ({s.error_share:.1%} not 200)"
    elif not s.passed:
        txt += " (fails: p99 > 100 ms)" if s.p99_due_ms > P99_LIMIT_MS else " (fails)"
    return txt


def mib(n: int | None) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "—"


def ratios(results: dict[str, ServiceResult]) -> dict[str, float | None]:
    """``{"bridge/<base>": bridge's max sustained events/s / base's}`` for each of :data:`RATIO_BASES`
    (the keys of ``results.json`` ``ratios``, always all three); None when either service was not
    measured or has no max sustained rate (``--fixed-only``, or below 50/s)."""
    top = results["bridge"].max_sustained if "bridge" in results else 0
    out: dict[str, float | None] = {}
    for base in RATIO_BASES:
        bottom = results[base].max_sustained if base in results else 0
        out[f"bridge/{base}"] = round(top / bottom, 4) if top and bottom else None
    return out


def ratio_text(results: dict[str, ServiceResult], key: str, value: float | None) -> str | None:
    """How a ratio of :func:`ratios` reads in the report; None when there is nothing to show."""
    base = results.get(key.split("/", 1)[1])
    bridge = results.get("bridge")
    if value is not None:
        return f"{value:.2f}×"
    if bridge is not None and bridge.max_sustained and base is not None:  # e.g. the recipe below 50/s
        return f"∞ ({base.name}: no max sustained rate)"
    return None


def plot(bench: Bench) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colors = {"ceiling": "tab:gray", "passthrough": "tab:orange", "bridge": "tab:blue", "recipe": "tab:red"}
    for name, c in colors.items():
        res = bench.results.get(name)
        if res is None:
            continue
        by_rate: dict[int, Step] = {}
        for s in res.valid():
            if s.phase in ("fixed", "ramp", "confirm", "half") and (s.rate not in by_rate or s.phase == "confirm"):
                by_rate[s.rate] = s
        pts = sorted(by_rate.values(), key=lambda s: s.rate)
        xs = [s.rate for s in pts]
        ax.plot(xs, [s.p99_ms for s in pts], "-o", color=c, label=f"{name} p99", ms=4)
        ax.plot(xs, [s.p50_ms for s in pts], "--", color=c, alpha=0.7, label=f"{name} p50")
        bad = [s for s in pts if not s.passed]
        ax.plot([s.rate for s in bad], [s.p99_ms for s in bad], "x", color="black", ms=8, mew=1.5)
        if res.max_sustained:
            ax.axvline(res.max_sustained, color=c, lw=0.8, alpha=0.5)
    ax.axhline(P99_LIMIT_MS, color="k", lw=0.8, ls=":")
    ax.axhline(25, color="tab:green", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo = ax.get_xlim()[0]
    ax.text(lo * 1.05, P99_LIMIT_MS * 1.1, "100 ms: limit of 'sustained'", fontsize=8)
    ax.text(lo * 1.05, 25 * 1.1, "25 ms: bridge p99 target at 1,000/s", fontsize=8, color="tab:green")
    ax.set_xlabel("offered rate, events/s (open loop; vertical lines: max sustained)")
    ax.set_ylabel("latency, ms")
    ax.set_title("Latency from each request's due time vs. rate, one core per service (x: step failed)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(PLOT_PNG)
    plt.close(fig)


def report_md(bench: Bench, ver: dict[str, str], mach: dict[str, str], elapsed: float, command: str) -> str:
    by_name = bench.results
    ceiling, passthrough, bridge, recipe, full = (
        by_name.get(n) for n in ("ceiling", "passthrough", "bridge", "recipe", "bridge-full-window")
    )
    md: list[str] = [BEGIN, ""]
    md += [
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} with `{command}` in {elapsed / 60:.1f} min "
        f"(run tag `{bench.run_tag}`).",
        "",
    ]
    md += [
        f"**Machine**: {mach['cpu']} (a VM), {mach['cores']} cores, {mach['memory']} RAM, Linux {mach['kernel']}. "
        f"The service under test on core {SERVICE_CORE} (`taskset -c {SERVICE_CORE}`); the Kafka broker, the load "
        f"generator and the runner on core {LOAD_CORE}.",
        "",
    ]
    md += ["**Versions**: " + ", ".join(f"{k} {v}" for k, v in ver.items()) + ".", ""]
    mix = ", ".join(f"{w} % `{k}`" for k, w in MIX)
    md += [
        f"**Traffic**: platform-exact requests (AES-256-CBC encrypted, signed, timestamps of the step) built by "
        f"`bridge_devtools.platform.Platform` from the documented samples: {mix}; 1,000 rooms; a third-party "
        f"event lists 1–3 rooms (1–3 records); every delivery id unique. Open loop (`benchmarks/loadgen`), "
        f"{bench.args.step_s:g} s per step. A step passes when every answer is 200, p99 ≤ {P99_LIMIT_MS:.0f} ms "
        f"(counted from each request's due time) and the generator sent ≥ {MIN_SENT_SHARE:.0%} of the rate. "
        "Latencies are measured from each request's due time (its place in the open-loop schedule) to the end of "
        "its response, so a stall of the service, or requests waiting for a connection, count in full; this "
        "includes up to ~1 ms of the generator's own timer lag (the every-step table also shows p99 from the "
        "write of the request).",
        "",
    ]

    md += ["### Summary", ""]
    md += [
        "| Service | Max sustained events/s | p50 / p95 / p99 ms @ 500/s | @ 1,000/s | @ 2,000/s "
        "| p99 ms @ 50 % of its max | CPU s per 1,000 events @ 1,000/s · @ max | Peak RSS (VmHWM) |",
        "|---|---:|---|---|---|---|---|---:|",
    ]
    for res in (ceiling, passthrough, bridge, full, recipe):
        if res is None:
            continue
        m = res.at_max()
        c1 = res.fixed(1000)
        cpu = " · ".join(
            f"{s.cpu_per_1k:.3f}" if s is not None and s.cpu_per_1k is not None and s.passed else "—" for s in (c1, m)
        )
        if res.name == "bridge-full-window":
            mx = f"{res.max_sustained:,} (held)" if res.max_sustained else "—"
        else:
            mx = f"**{res.max_sustained:,}**" if res.max_sustained else "< 50"
        h = res.half()
        half = (
            f"{h.p99_ms:.1f} @ {h.rate:,}/s"
            + ("" if h.passed else f" ({h.error_share:.1%} not 200)" if h.error_share else " (fails)")
            if h is not None
            else "—"
        )
        md.append(
            f"| **{res.name}** — {res.label} | {mx} | {fmt_lat(res.fixed(500))} | {fmt_lat(c1)} | "
            f"{fmt_lat(res.fixed(2000))} | {half} | {cpu} | {mib(res.peak_rss)} |"
        )
    md.append("")
    if full is not None:
        f1000 = full.fixed(1000)
        at_max = next((s for s in full.valid() if s.phase == "confirm"), None)
        md += [
            f"`bridge-full-window`: {full.note or 'dedup window pre-filled'}; it runs only the 1,000/s step and one "
            f'step at the bridge\'s max sustained rate ("held" = that step passed too). Its VmHWM was '
            f"{mib(f1000.hwm_bytes if f1000 else None)} after the 1,000/s step"
            + (
                f" and {mib(at_max.hwm_bytes)} after the step at {at_max.rate:,}/s"
                f"{'' if at_max.passed else ' (which did not hold: requests queued up to the 2 s publish timeout)'}"
                if at_max is not None
                else ""
            )
            + ".",
            "",
        ]

    shown = [(k, t) for k, v in ratios(by_name).items() if (t := ratio_text(by_name, k, v)) is not None]
    if shown:
        md += (
            ["| Ratio of max sustained events/s | Value |", "|---|---:|"]
            + [f"| {k.replace('/', ' / ')} | {t} |" for k, t in shown]
            + [""]
        )
        if passthrough is not None and passthrough.max_sustained:
            md += [
                "bridge / passthrough: the passthrough is the ceiling's app publishing each raw body as one record "
                "with the bridge's producer (`benchmarks/passthrough.py`), i.e. what aiohttp + aiokafka cost by "
                "themselves; the rest of the bridge's cost is its own work (verification, decryption, decoding, "
                "dedup, envelope, 1-3 records per event).",
                "",
            ]

    if bridge:
        md += ["### Targets (the bridge, one core)", "", "| Target | Measured | Met? |", "|---|---|:---:|"]
        if ceiling and ceiling.max_sustained:
            r = bridge.max_sustained / ceiling.max_sustained
            md.append(
                f"| ≥ 60 % of the ceiling's max events/s | {r:.0%} "
                f"({bridge.max_sustained:,} vs {ceiling.max_sustained:,}) "
                f"| {'yes' if r >= 0.6 else '**no**'} |"
            )
        s = bridge.fixed(1000)
        if s:
            ok = s.p99_ms <= 25 and s.ok == s.requests
            md.append(
                f"| p99 ≤ 25 ms at 1,000 events/s, broker acks included | {s.p99_ms:.1f} ms"
                f"{'' if s.ok == s.requests else f' ({s.error_share:.1%} not 200)'} | {'yes' if ok else '**no**'} |"
            )
        if recipe:
            r = bridge.max_sustained / recipe.max_sustained if recipe.max_sustained else math.inf
            md.append(
                f"| ≥ 10× the recipe's max events/s | {r:.1f}× ({bridge.max_sustained:,} vs {recipe.max_sustained:,}) "
                f"| {'yes' if r >= 10 else '**no**'} |"
            )
        if full and full.peak_rss:
            md.append(
                f"| peak RSS ≤ 200 MB with 1,000,000 ids in the dedup window | {full.peak_rss / 1e6:.0f} MB "
                f"({mib(full.peak_rss)}) | {'yes' if full.peak_rss <= 200e6 else '**no**'} |"
            )
        md.append("")

    bc = bench.broker_check
    if bc:
        md += ["### Broker-side check (the bridge)", ""]
        md += [
            f"After the run every record of the bridge's topics was read back ({bc['records_total']:,} records, "
            f"{bc['dead_letters']} dead letters, {bc['foreign']} not from this run, {bc['duplicate_record_ids']} "
            f"duplicate CloudEvents ids) and matched to the request that sent it: the delivery id encodes step and "
            f"index, and the generator records each request's status. Of {bc['ok_total']:,} answers 200, "
            f"**{bc['ok_missing']} lack their record** and {bc['fanout_mismatch']} have a wrong number of records "
            f"(a third-party event must have one per listed room: {bc['records_in_kafka_total']:,} records for "
            f"{bc['ids_total']:,} delivery ids). {bc['published_not_ok']} requests were published but not "
            f"answered 200 (overload steps: the answer was a 503 or the client's 10 s timeout came first; "
            f"the platform would retry them and the dedup window would answer 200 without a second record). "
            "**Result: "
            + ("every 200 has its record(s)" if bc["all_good"] else "MISMATCH — see benchmarks/results.json")
            + ".**",
            "",
        ]
        md += [
            "| Step | Service | Phase | Rate/s | Requests | 200s | 200s without record "
            "| Records for the 200s (expected) | Published, not 200 |",
            "|---:|---|---|---:|---:|---:|---:|---|---:|",
        ]
        for x in bc["steps"]:
            exp = x["records_expected_ok"]
            recs = f"{x['records_in_kafka']:,}" + (
                f" ({exp:,})" if exp is not None and x["published_not_ok"] == 0 else ""
            )
            md.append(
                f"| {x['step']} | {x['service']} | {x['phase']}{' (vegeta)' if x['tool'] == 'vegeta' else ''} | "
                f"{x['rate']:,} | {x['requests']:,} | {x['ok']:,} | {x['ok_missing']} | {recs} | "
                f"{x['published_not_ok']} |"
            )
        md.append("")

    gen = by_name.get("generator-check")
    if gen is not None and gen.valid():
        md += ["### Load generator check", ""]
        if ceiling and ceiling.max_sustained:
            best = max((s for s in gen.valid() if s.passed), key=lambda s: s.rate, default=None)
            if best is not None:
                md += [
                    f"`benchmarks/loadgen` (core {LOAD_CORE}) against a Go `net/http` sink on core {SERVICE_CORE} "
                    f"(`benchmarks/sink/main.go`) with the same kind of requests: it held **{best.sent_rate:,.0f} "
                    f"requests/s ({best.sent_rate / ceiling.max_sustained:.1f}× the ceiling's max) with p99 "
                    f"{best.p99_ms:.1f} ms**, using {best.gen_cpu_s / best.wall_s:.0%} of its core.",
                    "",
                ]
        md += [
            "| Requested/s | Sent/s | 200s | p50 / p95 / p99 ms | p99 from the write | generator CPU share | Pass |",
            "|---:|---:|---:|---|---:|---:|:---:|",
        ]
        for s in gen.valid():
            md.append(
                f"| {s.rate:,} | {s.sent_rate:,.0f} | {s.ok:,}/{s.requests:,} | {fmt_lat(s)} | "
                f"{s.p99_write_ms:.1f} ms | "
                f"{s.gen_cpu_s / s.wall_s:.0%} | {'yes' if s.passed else 'no'} |"
            )
        md.append("")
        vs = [s for s in (bridge.valid() if bridge else []) if s.tool == "vegeta"]
        lg = bridge.fixed(1000) if bridge else None
        if vs and lg:
            v = vs[0]
            md += [
                f"Cross-check with vegeta {tools.VEGETA_VERSION} on the bridge at 1,000/s (same kind of requests, "
                f"separate step): p50 / p99 {v.p50_ms:.1f} / {v.p99_ms:.1f} ms "
                f"({v.ok:,}/{v.requests:,} 200) vs. loadgen {lg.p50_write_ms:.1f} / {lg.p99_write_ms:.1f} ms, both "
                f"measured from the request's start (loadgen from the due time: {lg.p50_ms:.1f} / {lg.p99_ms:.1f} ms); "
                f"vegeta used {v.gen_cpu_s / max(1, v.requests) * 1e6:.0f} µs of CPU per request, loadgen "
                f"{lg.gen_cpu_s / max(1, lg.requests) * 1e6:.0f} µs (both including reading their request files).",
                "",
            ]

    md += ["### Latency vs. rate", "", "![latency vs rate](benchmarks/latency_vs_rate.png)", ""]
    md += [
        "### Every step",
        "",
        "CPU = the service's utime+stime over the step (incl. the wait for the last answers) as a share of the "
        "step's wall time, and per 1,000 answered-200 events; load core = broker + generator CPU share of core 1; "
        "others = CPU share used meanwhile by processes outside the benchmark (this machine is shared: a step is "
        "re-run when they used ≥ 15 % of a core, and each step waits for them to go quiet first); "
        "VmHWM = the service's peak RSS so far; "
        "VM stalls = late wake-ups of an idle real-time thread (the step is re-run when one is ≥ 50 ms); "
        '"re-run" rows are not used anywhere above.',
        "",
        "| # | Service | Phase | Rate/s | Sent/s | 200s / requests | p50 | p95 | p99 | max | p99 from write (ms) | "
        "conns | CPU | CPU s/1k | load core | others | VmHWM | VM stalls (ms) | Pass |",
        "|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|:---:|",
    ]
    for res in by_name.values():
        for s in res.steps:
            cpk = f"{s.cpu_per_1k:.3f}" if s.cpu_per_1k is not None else "—"
            load = (s.broker_cpu_s + s.gen_cpu_s) / s.wall_s if s.wall_s else 0.0
            others = s.foreign_cpu_s / s.wall_s if s.wall_s else 0.0
            stalls = ", ".join(f"{x:.0f}" for x in s.stalls_ms)
            md.append(
                f"| {s.step} | {s.service} | {s.phase}{' (vegeta)' if s.tool == 'vegeta' else ''} | {s.rate:,} | "
                f"{s.sent_rate:,.0f} | {s.ok:,} / {s.requests:,} | {s.p50_ms:.1f} | {s.p95_ms:.1f} | {s.p99_ms:.1f} | "
                f"{s.max_ms:.0f} | {s.p99_write_ms:.1f} | {s.conns or '—'} | {s.svc_cpu_s / s.wall_s:.0%} | {cpk} | "
                f"{load:.0%} | {others:.0%} | {mib(s.hwm_bytes)} | {stalls} | "
                f"{'re-run' if s.superseded else 'yes' if s.passed else 'no'} |"
            )
    md += [
        "",
        "Pinning as seen in `/proc/<pid>/status` Cpus_allowed_list: "
        + ", ".join(f"{r.name} → {r.pinned}" for r in by_name.values())
        + f"; runner, broker and generator → {LOAD_CORE}.",
        "",
    ]
    if bench.broker_rss:
        md += [f"Broker RSS at the end: {mib(bench.broker_rss)} (JVM flags: `{' '.join(BROKER_JVM_OPTS)}`).", ""]
    md += [END]
    return "\n".join(md)


def write_md(section: str) -> None:
    if BENCHMARKS_MD.exists():
        text = BENCHMARKS_MD.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            BENCHMARKS_MD.write_text(head + section + tail)
            return
        BENCHMARKS_MD.write_text(text.rstrip() + "\n\n" + section + "\n")
        return
    BENCHMARKS_MD.write_text(
        "# Benchmarks\n\nRun with `make bench` (`.venv/bin/python -m benchmarks.run`).\n\n" + section + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--step-s", type=float, default=5.0, help="seconds per load step (default 5)")
    parser.add_argument(
        "--refine", type=int, default=3, help="bisection steps after the first failing rate (default 3)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset: ceiling,generator-check,passthrough,bridge,bridge-full-window,recipe",
    )
    parser.add_argument(
        "--stall-retries",
        type=int,
        default=2,
        help="re-run a step up to N times when the VM stalled >= 50 ms during it (default 2)",
    )
    parser.add_argument("--fixed-only", action="store_true", help="only the fixed-rate steps (no search for the max)")
    parser.add_argument("--fixed-rates", default="", help="comma-separated fixed rates (default 500,1000,2000)")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md, the plot, results.json")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (requests, service logs)")
    args = parser.parse_args(argv)

    if (os.cpu_count() or 1) < 2 or not {SERVICE_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        print(f"needs cores {SERVICE_CORE} and {LOAD_CORE}", file=sys.stderr)
        return 2
    tools.ensure_python_deps()
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # retries while new partitions get leaders
    os.sched_setaffinity(0, {LOAD_CORE})  # the runner, and what it starts without taskset (the broker)
    command = (
        "make bench"
        if os.environ.get("MAKELEVEL")
        else ("python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    )
    bench = Bench(args)
    t0 = time.monotonic()
    bench.run()
    elapsed = time.monotonic() - t0
    ver, mach = versions(bench), machine()

    by_name = bench.results
    print("\n== summary")
    for res in by_name.values():
        if res.name == "generator-check":
            continue
        print(
            f"  {res.name:<19} max sustained {res.max_sustained:>6,}/s  peak RSS {mib(res.peak_rss):>8}  "
            f"p50/p95/p99 @1000/s: {fmt_lat(res.fixed(1000))} ms"
            + (
                f"  p99 @{res.half_rate:,}/s (50 % of max): {res.p99_at_half_ms:.1f} ms"
                if res.p99_at_half_ms is not None
                else ""
            )
        )
    ratio_values = ratios(by_name)
    for key, value in ratio_values.items():
        text = ratio_text(by_name, key, value)
        if text is not None:
            print(f"  {key:<18} = {text}")
    if bench.broker_check:
        print(f"  broker check: {'every 200 has its record(s)' if bench.broker_check['all_good'] else 'MISMATCH'}")
    if not args.no_write:
        raw = {
            "run_tag": bench.run_tag,
            "command": command,
            "elapsed_s": elapsed,
            "versions": ver,
            "machine": mach,
            "broker_rss": bench.broker_rss,
            "ratios": ratio_values,
            "services": {
                n: {**{k: v for k, v in asdict(x).items() if k != "steps"}, "steps": [asdict(s) for s in x.steps]}
                for n, x in by_name.items()
            },
            "broker_check": bench.broker_check,
        }
        RESULTS_JSON.write_text(json.dumps(raw, indent=1) + "\n")
        plot(bench)
        write_md(report_md(bench, ver, mach, elapsed, command))
        print(
            f"wrote {BENCHMARKS_MD.relative_to(tools.REPO)}, {PLOT_PNG.relative_to(tools.REPO)}, "
            f"{RESULTS_JSON.relative_to(tools.REPO)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
