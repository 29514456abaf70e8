"""``python -m benchmarks.run`` (``make bench``): the bridge vs. the HTTP ceiling vs. the docs' recipe.

One core each (issue #7). The runner pins itself, the local Kafka broker it starts and the load
generator (vegeta) to core 1 and runs the services under test one at a time with
``taskset -c 0``:

1. ``ceiling`` — a minimal aiohttp app that reads the body and answers 200 (``benchmarks/ceiling.py``);
2. ``bridge``  — ``python -m bridge serve`` with an encrypt key, log level WARNING;
3. ``bridge-full-window`` — the same bridge with its dedup window pre-filled with 1,000,000 ids
   (``benchmarks/bridge_prefilled.py``), for the peak-RSS target;
4. ``recipe``  — the SDK's ``EventDispatcherHandler`` in Flask + kafka-python ``send().get()``
   (``benchmarks/recipe.py``).

Each is driven open-loop with pre-built, platform-exact requests (``benchmarks/traffic.py``): a
warm-up, fixed rates of 500, 1,000 and 2,000 events/s, then a rising rate (×1.5 until a step
fails, then bisection) where a step *passes* when every answer is 200, p99 ≤ 100 ms and vegeta
kept the requested rate; the highest passing rate is re-run once longer to confirm it (the *max
sustained* rate). Per step: vegeta's latency percentiles, the service's CPU seconds
(``/proc/<pid>/stat`` utime+stime), the busy share of both cores; per service: peak RSS (VmHWM).
Before the services, vegeta is pointed at a Go ``net/http`` sink on core 0 at rates well above
the ceiling, to show the generator is not the bottleneck. After the bridge, every record in its
topics is read back and matched to the load step that sent it (delivery ids encode the step).

Writes the results between the markers of ``BENCHMARKS.md`` (the rest of that file is kept), the
plot ``benchmarks/latency_vs_rate.png`` and the raw data ``benchmarks/results.json``, and prints
the ratios bridge/ceiling and bridge/recipe. Takes about 8 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
MIN_SENT_SHARE: Final = 0.95  # vegeta must have sent at least this share of the requested rate
VEGETA_TIMEOUT: Final = "10s"
VEGETA_MAX_WORKERS: Final = 1000
BRIDGE_TOPICS: Final = (
    "lark.vc.room.created_v1",
    "lark.vc.reserve_config.updated_v1",
    "lark.third_party_meeting_room_event",
    "lark.bridge.dead_letter",
)
RECIPE_PREFIX: Final = "recipe."
RESULTS_JSON: Final = tools.BENCH_DIR / "results.json"
PLOT_PNG: Final = tools.BENCH_DIR / "latency_vs_rate.png"
BENCHMARKS_MD: Final = tools.REPO / "BENCHMARKS.md"
BEGIN: Final = "<!-- bench:results:begin (written by python -m benchmarks.run; edits here are overwritten) -->"
END: Final = "<!-- bench:results:end -->"


@dataclass
class Step:
    """One load step: ``rate`` events/s for ``duration_s`` against ``service``."""

    service: str
    phase: str  # warmup | fixed | ramp | confirm | generator
    step: int
    rate: int
    duration_s: float
    requests: int = 0
    ok: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    sent_rate: float = 0.0
    throughput: float = 0.0
    svc_cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    vegeta_cpu_s: float = 0.0
    core0_busy: float = 0.0
    core1_busy: float = 0.0
    records_expected: int = 0
    passed: bool = False

    @property
    def cpu_per_1k(self) -> float | None:
        """Service CPU seconds per 1,000 answered-200 events."""
        return self.svc_cpu_s / self.ok * 1000 if self.ok else None

    @property
    def error_share(self) -> float:
        return 1 - self.ok / self.requests if self.requests else 0.0


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

    def fixed(self, rate: int) -> Step | None:
        return next((s for s in self.steps if s.phase == "fixed" and s.rate == rate), None)

    def at_max(self) -> Step | None:
        cands = [s for s in self.steps if s.passed and s.rate == self.max_sustained and s.phase in ("confirm", "ramp", "fixed")]
        return max(cands, key=lambda s: (s.phase == "confirm", s.duration_s), default=None)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_tag = secrets.token_hex(4)
        self.step_no = 0
        self.work = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
        self.vegeta = tools.ensure_vegeta()
        self.sink = tools.ensure_sink()
        self.broker: Any = None
        self.results: dict[str, ServiceResult] = {}
        self.broker_check: dict[str, Any] = {}
        self.started = time.time()

    # -- one step ---------------------------------------------------------------------------

    def attack(self, svc: tools.Service, res: ServiceResult, phase: str, rate: int, duration_s: float) -> Step:
        self.step_no += 1
        step = Step(svc.name, phase, self.step_no, rate, duration_s)
        count = max(1, round(rate * duration_s))
        builder = TrafficBuilder(f"http://127.0.0.1:{svc.port}{PATH}", TOKEN, KEY, self.run_tag, seed=self.step_no)
        traffic = builder.step(self.step_no, count + count // 50 + 20)  # never wrap around: ids stay unique
        targets = self.work / "targets.json"
        results = self.work / "results.bin"
        with open(targets, "wb") as f:
            f.write(b"\n".join(traffic.lines) + b"\n")
        del traffic.lines
        broker_pid = self.broker.pid if self.broker is not None else None
        svc_cpu0 = tools.cpu_seconds(svc.pid)
        broker_cpu0 = tools.cpu_seconds(broker_pid) if broker_pid else 0.0
        ticks0 = tools.core_ticks()
        proc = subprocess.Popen(
            ["taskset", "-c", str(LOAD_CORE), str(self.vegeta), "attack", "-format=json", f"-targets={targets}",
             f"-rate={rate}/1s", f"-duration={duration_s}s", f"-timeout={VEGETA_TIMEOUT}",
             f"-max-workers={VEGETA_MAX_WORKERS}", f"-output={results}", f"-name={svc.name}-{phase}-{rate}"],
            stdin=subprocess.DEVNULL,
        )
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        ticks1 = tools.core_ticks()
        step.svc_cpu_s = tools.cpu_seconds(svc.pid) - svc_cpu0
        step.broker_cpu_s = (tools.cpu_seconds(broker_pid) - broker_cpu0) if broker_pid else 0.0
        step.vegeta_cpu_s = rusage.ru_utime + rusage.ru_stime
        busy = tools.core_busy(ticks0, ticks1)
        step.core0_busy, step.core1_busy = busy.get("cpu0", 0.0), busy.get("cpu1", 0.0)
        if proc.returncode != 0:
            raise RuntimeError(f"vegeta attack failed with {proc.returncode}")
        rep = tools.run_json([str(self.vegeta), "report", "-type=json", str(results)])
        lat = rep["latencies"]
        step.requests = rep["requests"]
        step.codes = {k: v for k, v in (rep.get("status_codes") or {}).items()}
        step.ok = step.codes.get("200", 0)
        step.errors = sorted(set(rep.get("errors") or []))[:5]
        step.p50_ms, step.p95_ms, step.p99_ms, step.max_ms = (lat[k] / 1e6 for k in ("50th", "95th", "99th", "max"))
        step.sent_rate, step.throughput = rep["rate"], rep["throughput"]
        step.records_expected = sum(traffic.records[: step.requests])
        step.passed = (
            step.ok == step.requests > 0
            and step.p99_ms <= P99_LIMIT_MS
            and step.sent_rate >= MIN_SENT_SHARE * rate
        )
        res.steps.append(step)
        print(
            f"  {svc.name:<19} {phase:<9} {rate:>6}/s  sent {step.sent_rate:8.1f}/s  200s {step.ok:>6}/{step.requests:<6}"
            f" p50 {step.p50_ms:7.2f}  p95 {step.p95_ms:7.2f}  p99 {step.p99_ms:8.2f} ms"
            f"  cpu {step.svc_cpu_s:5.2f}s  core0 {step.core0_busy:4.0%} core1 {step.core1_busy:4.0%}"
            f"  {'pass' if step.passed else 'FAIL'}" + (f"  {step.errors[0][:60]}" if step.errors else ""),
            flush=True,
        )
        tools.wait_idle(svc.pid)
        time.sleep(0.5)
        return step

    # -- a whole service ---------------------------------------------------------------------

    def measure(self, svc: tools.Service, *, ramp: bool = True) -> ServiceResult:
        res = ServiceResult(svc.name, svc.label)
        self.results[svc.name] = res
        print(f"\n== {svc.name}: {svc.label}", flush=True)
        svc.start(self.work)
        res.pinned = tools.cpus_allowed(svc.pid)
        d = self.args.step_s
        try:
            self.attack(svc, res, "warmup", 200, 2)
            fixed = [self.attack(svc, res, "fixed", r, d) for r in FIXED_RATES]
            if ramp:
                res.max_sustained = self.ramp(svc, res, fixed)
            res.peak_rss = tools.proc_status(svc.pid, "VmHWM")
        finally:
            res.exit_code = svc.stop()
        return res

    def ramp(self, svc: tools.Service, res: ServiceResult, fixed: list[Step]) -> int:
        d = self.args.step_s
        first_fail = next((s.rate for s in fixed if not s.passed), None)
        passing = [s.rate for s in fixed if s.passed and (first_fail is None or s.rate < first_fail)]
        lo: int | None = max(passing) if passing else None
        hi: int | None = first_fail

        def rnd(x: float) -> int:
            unit = 10 if x < 1000 else 50
            return max(unit, int(round(x / unit)) * unit)

        if lo is None:  # even the lowest fixed rate failed: climb from 50/s
            r = 50
            while r < (hi or FIXED_RATES[0]):
                if self.attack(svc, res, "ramp", r, d).passed:
                    lo, r = r, rnd(r * 1.6)
                else:
                    hi = r
                    break
            if lo is None:
                return 0
        elif hi is None:  # 2,000/s passed: ×1.5 until a step fails
            r = rnd(lo * 1.5)
            while hi is None and r <= 200_000:
                if self.attack(svc, res, "ramp", r, d).passed:
                    lo, r = r, rnd(r * 1.5)
                else:
                    hi = r
        assert lo is not None and hi is not None
        for _ in range(self.args.refine):
            mid = rnd(math.sqrt(lo * hi))
            if mid <= lo or mid >= hi:
                break
            if self.attack(svc, res, "ramp", mid, d).passed:
                lo = mid
            else:
                hi = mid
        # Confirm the max with a longer step; step down 5 % at a time if it does not hold.
        for _ in range(3):
            if self.attack(svc, res, "confirm", lo, d * 1.6).passed:
                return lo
            lo = rnd(lo * 0.95)
        return lo

    # -- the load generator check -------------------------------------------------------------

    def generator_check(self, ceiling_max: int) -> None:
        port = tools_free_port()
        sink = tools.Service("generator-check", "Go net/http sink (load-generator check)",
                             [str(self.sink), str(port)], port, ready_path="/")
        res = ServiceResult(sink.name, sink.label)
        self.results[sink.name] = res
        print(f"\n== {sink.name}: can vegeta on core {LOAD_CORE} send well past the ceiling's rate?", flush=True)
        sink.start(self.work)
        res.pinned = tools.cpus_allowed(sink.pid)
        try:
            for factor in (1.5, 2.0, 3.0):
                self.attack(sink, res, "generator", int(round(ceiling_max * factor, -2)), 3)
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

    def run(self) -> None:
        from bridge.devtools.broker import LocalBroker

        only = set(self.args.only.split(",")) if self.args.only else None
        want = lambda name: only is None or name in only  # noqa: E731
        self.broker = LocalBroker()
        print(f"starting Kafka {self.broker.version} on core {LOAD_CORE} ...", flush=True)
        self.broker.start(timeout_s=180)
        try:
            self._create_recipe_topics()
            py = sys.executable
            if want("ceiling"):
                port = tools_free_port()
                self.measure(tools.Service("ceiling", "minimal aiohttp app (read body, 200)",
                                           [py, "-m", "benchmarks.ceiling", str(port)], port))
                if want("generator-check"):
                    self.generator_check(self.results["ceiling"].max_sustained)
            if want("bridge"):
                port = tools_free_port()
                self.measure(tools.Service("bridge", "python -m bridge serve (encrypt key)",
                                           [py, "-m", "bridge", "serve"], port, self.bridge_env(port)))
            if want("bridge-full-window"):
                self.full_window()
            if want("recipe"):
                port = tools_free_port()
                env = {"RECIPE_ENCRYPT_KEY": KEY, "RECIPE_VERIFICATION_TOKEN": TOKEN,
                       "RECIPE_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers, "RECIPE_TOPIC_PREFIX": RECIPE_PREFIX}
                self.measure(tools.Service("recipe", "lark-oapi EventDispatcherHandler + Flask + kafka-python",
                                           [py, "-m", "benchmarks.recipe", str(port)], port, env))
            if "bridge" in self.results or "bridge-full-window" in self.results:
                print("\n== reading the bridge's records back from Kafka", flush=True)
                self.broker_check = asyncio.run(self._check_broker())
            self.broker_rss = self.broker.rss_bytes()
        finally:
            self.broker.stop()
            self.broker.cleanup()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                print(f"work dir kept: {self.work}")

    def full_window(self) -> None:
        """The bridge with 1,000,000 ids in its dedup window: peak RSS, and latency at 1,000/s and max."""
        port = tools_free_port()
        env = self.bridge_env(port)
        svc = tools.Service("bridge-full-window", "bridge, dedup window pre-filled with 1,000,000 ids",
                            [sys.executable, "-m", "benchmarks.bridge_prefilled"], port, env)
        res = ServiceResult(svc.name, svc.label)
        self.results[svc.name] = res
        print(f"\n== {svc.name}: {svc.label}", flush=True)
        svc.start(self.work)
        res.pinned = tools.cpus_allowed(svc.pid)
        d = self.args.step_s
        try:
            self.attack(svc, res, "warmup", 200, 2)
            self.attack(svc, res, "fixed", 1000, d)
            bridge_max = self.results.get("bridge", ServiceResult("", "")).max_sustained
            if bridge_max:
                step = self.attack(svc, res, "confirm", bridge_max, d)
                res.max_sustained = bridge_max if step.passed else 0
            res.peak_rss = tools.proc_status(svc.pid, "VmHWM")
            log = svc.log_tail(200)
            res.note = next((ln.split("bridge_prefilled: ", 1)[1] for ln in log.splitlines() if "bridge_prefilled:" in ln), "")
        finally:
            res.exit_code = svc.stop()

    def _create_recipe_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap_servers)
            await admin.start()
            try:
                names = [RECIPE_PREFIX + t for t in BRIDGE_TOPICS[:3]]
                await admin.create_topics([NewTopic(n, num_partitions=12, replication_factor=1) for n in names])
            finally:
                await admin.close()

        asyncio.run(create())

    async def _check_broker(self) -> dict[str, Any]:
        """Read every record of the bridge's topics; match them to the steps that sent them."""
        import msgspec
        from aiokafka import AIOKafkaConsumer, TopicPartition

        class Env(msgspec.Struct):
            id: str
            larkeventid: str | None = None

        dec = msgspec.json.Decoder(Env)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
        await consumer.start()
        ids: dict[int, set[str]] = defaultdict(set)
        records: dict[int, int] = defaultdict(int)
        record_ids: set[str] = set()
        total = foreign = dead = 0
        try:
            parts = [TopicPartition(t, p) for t in BRIDGE_TOPICS for p in (consumer.partitions_for_topic(t) or await self._parts(consumer, t))]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            remaining = {tp for tp in parts if end[tp] > 0}
            deadline = time.monotonic() + 180
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
                        ids[parsed[1]].add(env.larkeventid or "")
                        records[parsed[1]] += 1
                    if msgs and msgs[-1].offset + 1 >= end[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        steps = []
        for name in ("bridge", "bridge-full-window"):
            for s in self.results.get(name, ServiceResult("", "")).steps:
                distinct = len(ids.get(s.step, ()))
                all_ok = s.ok == s.requests
                good = (distinct == s.requests and records[s.step] == s.records_expected) if all_ok else (s.ok <= distinct <= s.requests)
                steps.append({"service": name, "step": s.step, "phase": s.phase, "rate": s.rate, "requests": s.requests,
                              "ok": s.ok, "distinct_ids_in_kafka": distinct, "records_in_kafka": records[s.step],
                              "records_expected": s.records_expected if all_ok else None, "good": good})
        return {
            "records_total": total, "dead_letters": dead, "foreign": foreign,
            "duplicate_record_ids": (total - dead - foreign) - len(record_ids) if not foreign else None,
            "ok_total": sum(x["ok"] for x in steps), "distinct_total": sum(x["distinct_ids_in_kafka"] for x in steps),
            "records_in_kafka_total": sum(x["records_in_kafka"] for x in steps),
            "all_good": all(x["good"] for x in steps) and dead == 0, "steps": steps,
        }

    @staticmethod
    async def _parts(consumer: Any, topic: str) -> set[int]:
        await consumer._client.force_metadata_update()  # noqa: SLF001
        return consumer.partitions_for_topic(topic) or set()


def tools_free_port() -> int:
    from bridge.devtools.broker import free_port

    return free_port()


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def versions(bench: Bench) -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("aiohttp", "aiokafka", "msgspec", "cryptography", "lark-oapi", "flask", "werkzeug",
                "kafka-python", "matplotlib"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            out[pkg] = "?"
    out["kafka broker"] = bench.broker.version if bench.broker is not None else "?"
    out["java"] = tools.tool_version(["java", "-version"])
    out["vegeta"] = tools.VEGETA_VERSION + " (" + tools.tool_version([str(bench.vegeta), "-version"]).replace("Version: ", "") + ")"
    out["go"] = tools.tool_version(["go", "version"]) or tools.tool_version(["/usr/local/go/bin/go", "version"])
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
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": mem, "kernel": platform.release(),
            "os": platform.platform()}


def fmt_lat(s: Step | None) -> str:
    if s is None:
        return "—"
    txt = f"{s.p50_ms:.1f} / {s.p95_ms:.1f} / {s.p99_ms:.1f}"
    if s.error_share > 0:
        txt += f" ({s.error_share:.0%} not 200)"
    return txt


def mib(n: int | None) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "—"


def plot(bench: Bench) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colors = {"ceiling": "tab:gray", "bridge": "tab:blue", "bridge-full-window": "tab:cyan", "recipe": "tab:red"}
    for name in ("ceiling", "bridge", "recipe"):
        res = bench.results.get(name)
        if res is None:
            continue
        by_rate: dict[int, Step] = {}
        for s in res.steps:
            if s.phase in ("fixed", "ramp", "confirm") and (s.rate not in by_rate or s.phase == "confirm"):
                by_rate[s.rate] = s
        pts = sorted(by_rate.values(), key=lambda s: s.rate)
        xs = [s.rate for s in pts]
        c = colors[name]
        ax.plot(xs, [s.p99_ms for s in pts], "-o", color=c, label=f"{name} p99", ms=4)
        ax.plot(xs, [s.p50_ms for s in pts], "--", color=c, alpha=0.7, label=f"{name} p50")
        bad = [s for s in pts if not s.passed]
        ax.plot([s.rate for s in bad], [s.p99_ms for s in bad], "x", color="black", ms=7)
    ax.axhline(P99_LIMIT_MS, color="k", lw=0.8, ls=":")
    ax.text(ax.get_xlim()[0] if False else 60, P99_LIMIT_MS * 1.08, "100 ms (max-sustained limit)", fontsize=8)
    ax.axhline(25, color="tab:green", lw=0.8, ls=":")
    ax.text(60, 25 * 1.08, "25 ms (bridge p99 target at 1,000/s)", fontsize=8, color="tab:green")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (events/s, open loop)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency vs. rate, one core per service (x = step failed: errors, p99 > 100 ms or rate not held)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(PLOT_PNG)
    plt.close(fig)


def report_md(bench: Bench, ver: dict[str, str], mach: dict[str, str], elapsed: float, command: str) -> str:
    R = bench.results
    ceiling, bridge, recipe, full = (R.get(n) for n in ("ceiling", "bridge", "recipe", "bridge-full-window"))
    L: list[str] = [BEGIN, ""]
    L += [f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} with `{command}` in {elapsed / 60:.1f} min "
          f"(run tag `{bench.run_tag}`).", ""]
    L += [f"**Machine**: {mach['cpu']}, {mach['cores']} cores, {mach['memory']} RAM, Linux {mach['kernel']}. "
          f"Services on core {SERVICE_CORE} (`taskset -c {SERVICE_CORE}`); Kafka broker, vegeta and the runner on "
          f"core {LOAD_CORE}.", ""]
    L += ["**Versions**: " + ", ".join(f"{k} {v}" for k, v in ver.items()) + ".", ""]
    mix = ", ".join(f"{w} % {k}" for k, w in MIX)
    L += [f"**Traffic**: platform-exact requests (AES-256-CBC encrypted, signed, fresh timestamps) built by "
          f"`bridge.devtools.platform.Platform` from the documented samples: {mix}; 1,000 rooms; a "
          f"third-party event lists 1–3 rooms (1–3 records); every delivery id unique. Open-loop "
          f"(vegeta `-rate`), {bench.args.step_s:g} s per step; a step passes when every answer is 200, "
          f"p99 ≤ {P99_LIMIT_MS:.0f} ms and vegeta sent ≥ {MIN_SENT_SHARE:.0%} of the rate.", ""]

    L += ["### Results", ""]
    L += ["| Service | Max sustained events/s | p50 / p95 / p99 ms @ 500/s | @ 1,000/s | @ 2,000/s "
          "| CPU s per 1,000 events (@ 1,000/s · @ max) | Peak RSS (VmHWM) |",
          "|---|---:|---|---|---|---|---:|"]
    for res in (ceiling, bridge, full, recipe):
        if res is None:
            continue
        m = res.at_max()
        c1 = res.fixed(1000)
        cpu = " · ".join(f"{s.cpu_per_1k:.3f}" if s is not None and s.cpu_per_1k is not None and s.passed else "—"
                         for s in (c1, m))
        mx = f"{res.max_sustained:,}" if res.max_sustained else ("—" if res.name == "bridge-full-window" else "< 50")
        L.append(f"| **{res.name}** — {res.label} | {mx} | {fmt_lat(res.fixed(500))} | {fmt_lat(c1)} | "
                 f"{fmt_lat(res.fixed(2000))} | {cpu} | {mib(res.peak_rss)} |")
    L.append("")
    if full is not None and full.note:
        L += [f"`bridge-full-window`: {full.note}; it runs only the 1,000/s step and one step at the bridge's max "
              f"sustained rate (a pass there is shown as its max).", ""]

    ratios = []
    if bridge and ceiling and ceiling.max_sustained:
        ratios.append(("bridge / ceiling (max events/s)", bridge.max_sustained / ceiling.max_sustained))
    if bridge and recipe:
        ratios.append(("bridge / recipe (max events/s)", bridge.max_sustained / recipe.max_sustained
                       if recipe.max_sustained else math.inf))
    if ratios:
        L += ["| Ratio | Value |", "|---|---:|"] + [f"| {n} | {v:.2f}× |" for n, v in ratios] + [""]

    if bridge:
        L += ["### Targets (the bridge, one core)", "", "| Target | Measured | Met? |", "|---|---|:---:|"]
        if ceiling and ceiling.max_sustained:
            r = bridge.max_sustained / ceiling.max_sustained
            L.append(f"| ≥ 60 % of the ceiling's max events/s | {r:.0%} ({bridge.max_sustained:,} vs {ceiling.max_sustained:,}) | {'yes' if r >= 0.6 else '**no**'} |")
        s = bridge.fixed(1000)
        if s:
            ok = s.p99_ms <= 25 and s.ok == s.requests
            L.append(f"| p99 ≤ 25 ms at 1,000 events/s, broker acks included | {s.p99_ms:.1f} ms"
                     f"{'' if s.ok == s.requests else f' ({s.error_share:.1%} not 200)'} | {'yes' if ok else '**no**'} |")
        if recipe:
            r = bridge.max_sustained / recipe.max_sustained if recipe.max_sustained else math.inf
            L.append(f"| ≥ 10× the recipe's max events/s | {r:.1f}× ({bridge.max_sustained:,} vs {recipe.max_sustained:,}) | {'yes' if r >= 10 else '**no**'} |")
        if full and full.peak_rss:
            L.append(f"| peak RSS ≤ 200 MB with 1,000,000 ids in the dedup window | {full.peak_rss / 1e6:.0f} MB "
                     f"({mib(full.peak_rss)}) | {'yes' if full.peak_rss <= 200e6 else '**no**'} |")
        L.append("")

    bc = bench.broker_check
    if bc:
        L += ["### Broker-side check (the bridge)", ""]
        L += [f"Every record of the bridge's topics read back after the run: {bc['records_total']:,} records, "
              f"{bc['dead_letters']} dead letters, {bc['foreign']} not from this run, "
              f"{bc['duplicate_record_ids']} duplicate CloudEvents ids. Across the "
              f"{len(bc['steps'])} bridge steps: {bc['ok_total']:,} answers 200, {bc['distinct_total']:,} distinct "
              f"delivery ids in Kafka ({bc['records_in_kafka_total']:,} records: third-party events fan out to one "
              f"record per room). Per step, a step whose answers were all 200 must have exactly its requests' ids "
              f"and exactly the records they fan out to; a step with other answers (overload: 503 or client "
              f"timeout) must have at least as many ids as 200s (a request that timed out may still have been "
              f"published, as documented). **Result: {'every 200 has its record(s)' if bc['all_good'] else 'MISMATCH — see results.json'}.**", ""]
        L += ["| Step | Service | Phase | Rate | Requests | 200s | Distinct ids in Kafka | Records (expected) | OK |",
              "|---:|---|---|---:|---:|---:|---:|---|:---:|"]
        for x in bc["steps"]:
            exp = f"{x['records_in_kafka']:,} ({x['records_expected']:,})" if x["records_expected"] is not None else f"{x['records_in_kafka']:,}"
            L.append(f"| {x['step']} | {x['service']} | {x['phase']} | {x['rate']:,} | {x['requests']:,} | {x['ok']:,} | "
                     f"{x['distinct_ids_in_kafka']:,} | {exp} | {'yes' if x['good'] else '**no**'} |")
        L.append("")

    gen = R.get("generator-check")
    if gen is not None and gen.steps:
        best = max(gen.steps, key=lambda s: s.sent_rate)
        L += ["### Load generator check", ""]
        L += [f"vegeta (core {LOAD_CORE}) against a Go `net/http` sink on core {SERVICE_CORE} "
              f"(`benchmarks/sink/main.go`), same targets: it sent {best.sent_rate:,.0f} requests/s "
              f"({best.sent_rate / ceiling.max_sustained:.1f}× the ceiling's max) with p99 {best.p99_ms:.1f} ms, "
              f"core {LOAD_CORE} {best.core1_busy:.0%} busy." if ceiling and ceiling.max_sustained else "", ""]
        L += ["| Requested/s | Sent/s | 200s | p50 / p95 / p99 ms | vegeta CPU µs/request | core 1 busy |",
              "|---:|---:|---:|---|---:|---:|"]
        for s in gen.steps:
            L.append(f"| {s.rate:,} | {s.sent_rate:,.0f} | {s.ok:,}/{s.requests:,} | {fmt_lat(s)} | "
                     f"{s.vegeta_cpu_s / max(1, s.requests) * 1e6:.0f} | {s.core1_busy:.0%} |")
        L.append("")

    L += ["### Latency vs. rate", "", "![latency vs rate](benchmarks/latency_vs_rate.png)", ""]
    L += ["### Every step", "",
          "CPU = the service's utime+stime over the step (incl. the wait for the last answers); core 0/1 = "
          "busy share of each core over the step (core 1 = broker + vegeta + runner).", "",
          "| # | Service | Phase | Rate/s | Sent/s | 200s / requests | p50 | p95 | p99 | max (ms) | "
          "CPU s | CPU s/1k | broker CPU s | core 0 | core 1 | Pass |",
          "|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for res in R.values():
        for s in res.steps:
            cpk = f"{s.cpu_per_1k:.3f}" if s.cpu_per_1k is not None else "—"
            L.append(f"| {s.step} | {s.service} | {s.phase} | {s.rate:,} | {s.sent_rate:,.0f} | {s.ok:,} / {s.requests:,} | "
                     f"{s.p50_ms:.1f} | {s.p95_ms:.1f} | {s.p99_ms:.1f} | {s.max_ms:.0f} | {s.svc_cpu_s:.2f} | {cpk} | "
                     f"{s.broker_cpu_s:.2f} | {s.core0_busy:.0%} | {s.core1_busy:.0%} | {'yes' if s.passed else 'no'} |")
    L += ["", "Pinning as seen in `/proc/<pid>/status` Cpus_allowed_list: " +
          ", ".join(f"{r.name} → {r.pinned}" for r in R.values()) + f"; runner/broker/vegeta → {LOAD_CORE}.", ""]
    L += [END]
    return "\n".join(L)


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
    BENCHMARKS_MD.write_text("# Benchmarks\n\nRun with `make bench` (`.venv/bin/python -m benchmarks.run`).\n\n"
                             + section + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step-s", type=float, default=5.0, help="seconds per load step (default 5)")
    parser.add_argument("--refine", type=int, default=3, help="bisection steps after the first failing rate (default 3)")
    parser.add_argument("--only", default="", help="comma-separated subset: ceiling,generator-check,bridge,bridge-full-window,recipe")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md / the plot / results.json")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (targets, results, service logs)")
    args = parser.parse_args(argv)

    if len(os.sched_getaffinity(0) | {SERVICE_CORE, LOAD_CORE}) < 2 or (os.cpu_count() or 1) < 2:
        print("needs at least 2 cores", file=sys.stderr)
        return 2
    tools.ensure_python_deps()
    os.sched_setaffinity(0, {LOAD_CORE})  # the runner, and what it starts without taskset (the broker)
    command = "make bench" if os.environ.get("MAKELEVEL") else "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    bench = Bench(args)
    t0 = time.monotonic()
    bench.run()
    elapsed = time.monotonic() - t0
    ver, mach = versions(bench), machine()

    R = bench.results
    print("\n== summary")
    for res in R.values():
        if res.name == "generator-check":
            continue
        print(f"  {res.name:<19} max sustained {res.max_sustained:>6,}/s  peak RSS {mib(res.peak_rss):>8}  "
              f"@1000/s: {fmt_lat(res.fixed(1000))}")
    b, c, r = R.get("bridge"), R.get("ceiling"), R.get("recipe")
    if b and c and c.max_sustained:
        print(f"  bridge/ceiling = {b.max_sustained / c.max_sustained:.2f}")
    if b and r:
        print(f"  bridge/recipe  = {b.max_sustained / r.max_sustained:.2f}" if r.max_sustained else "  bridge/recipe  = inf (recipe sustained < 50/s)")
    if bench.broker_check:
        print(f"  broker check: {'every 200 has its record(s)' if bench.broker_check['all_good'] else 'MISMATCH'}"
              f" ({bench.broker_check['ok_total']:,} 200s, {bench.broker_check['distinct_total']:,} distinct ids in Kafka)")
    if not args.no_write:
        raw = {"run_tag": bench.run_tag, "command": command, "elapsed_s": elapsed, "versions": ver, "machine": mach,
               "broker_rss": getattr(bench, "broker_rss", None),
               "services": {n: {**{k: v for k, v in asdict(x).items() if k != "steps"},
                                "steps": [asdict(s) for s in x.steps]} for n, x in R.items()},
               "broker_check": bench.broker_check}
        RESULTS_JSON.write_text(json.dumps(raw, indent=1))
        plot(bench)
        write_md(report_md(bench, ver, mach, elapsed, command))
        print(f"wrote {BENCHMARKS_MD.relative_to(tools.REPO)}, {PLOT_PNG.relative_to(tools.REPO)}, "
              f"{RESULTS_JSON.relative_to(tools.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
