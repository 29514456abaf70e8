"""``python -m benchmarks.run`` (``make bench``): the bridge vs. its floor, the HTTP ceiling and the docs' recipe.

One core each. The runner pins itself, the local Kafka broker it starts and the load
generator to core 1 (``taskset -c 1``) and runs the services under test one at a time on core 0
(``taskset -c 0``):

1. ``ceiling`` — a minimal aiohttp app that reads the body and answers 200 (``benchmarks/ceiling.py``);
2. ``passthrough`` — the ceiling's app whose handler publishes the raw body with the bridge's own
   producer (``bridge.kafka.build_producer``, same ``BRIDGE_*`` environment: idempotent, acks=all)
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
rate (×1.5 until a step fails, then bisection; ``benchmarks/search.py``). A step *passes* when every answer is 200, p99
(measured from each request's due time) ≤ 100 ms and the generator held the rate; a marginal
failure is re-tried once, and the highest passing rate is re-run 1.6× longer to confirm it (7 % lower
each time it does not hold): the *max sustained* rate. Then one more step at half of that service's
own max sustained rate (phase ``half``: its p99 at 50 % load; not for ``bridge-full-window``). Per
step: latency percentiles, the service's CPU seconds (``/proc/<pid>/stat`` utime+stime), the load
core's CPU (broker + generator); per service: peak RSS (VmHWM). Between the ceiling and the
passthrough, the generator is pointed at a Go ``net/http`` sink at 1.5-3× the ceiling's max to
show it is not the bottleneck, and vegeta cross-checks its numbers on the bridge. After the bridge,
every record of its topics is read back and matched to the request that sent it (event ids
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
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from benchmarks import broker_check, report, tools
from benchmarks.results import (
    FIXED_RATES,
    LOAD_CORE,
    MIN_SENT_SHARE,
    P99_LIMIT_MS,
    SERVICE_CORE,
    ServiceResult,
    Step,
    ratios,
)
from benchmarks.search import max_sustained
from benchmarks.traffic import TrafficBuilder

__all__ = ["BRIDGE_TOPICS", "BROKER_JVM_OPTS", "LOAD_CORE", "SERVICE_CORE", "Bench", "ServiceResult", "Step"]

TOKEN: Final = "bench-verification-token"
KEY: Final = "bench-encrypt-key"
PATH: Final = "/webhook/event"
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
RESULTS_JSON: Final = tools.BENCH_DIR / "results.json"


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
        self.broker_jvm_opts: tuple[str, ...] = BROKER_JVM_OPTS
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
        """One step; re-run (with new event ids) while the VM stalled during it (up to
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
        """The max sustained rate (``benchmarks.search``), from the fixed steps' results."""
        d = self.args.step_s
        return max_sustained(
            [(s.rate, s.passed) for s in fixed],
            lambda rate: self.attack(svc, res, "ramp", rate, d, retry_marginal=True).passed,
            lambda rate: self.attack(svc, res, "confirm", rate, d * 1.6, retry_marginal=True).passed,
            refine=self.args.refine,
        )

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
            # A step's events are built and signed when the step starts and sent over its seconds:
            # their create time would make the later ones look like retries. The platform sends a
            # first attempt at once, so the bench measures first attempts (no retry barrier).
            "BRIDGE_DEDUP_BARRIER_AGE_S": "3600",
            **dict(kv.split("=", 1) for kv in getattr(self.args, "bridge_env", None) or ()),
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
            if any(n in self.results for n in ("passthrough", "bridge", "bridge-full-window", "recipe")):
                print("\n== reading every publishing service's records back from Kafka", flush=True)
                self.broker_check = asyncio.run(self.check_broker())
                for name, bc in self.broker_check["services"].items():
                    print(
                        f"  {name}: {bc['records_total']:,} records; {bc['ok_total']:,} answers 200, "
                        f"{bc['ok_missing']} of them without their record(s), {bc['fanout_mismatch']} with a wrong "
                        f"record count; {bc['published_not_ok']} published although not answered 200; "
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
        """The bridge with 1,000,000 ids in its dedup window: peak RSS, latency at half of the bridge's
        max and at its max (1,000/s when the bridge was not measured). ``peak_rss_sustained`` is the
        VmHWM after the last step of an unbroken run of passing steps: past its capacity any service
        queues requests (and their bodies) until they time out, which is load, not the window."""
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
            bridge_max = self.results["bridge"].max_sustained if "bridge" in self.results else 0
            half = self.attack(svc, res, "half", max(1, round(bridge_max / 2)) if bridge_max else 1000, d)
            if half.passed:
                res.peak_rss_sustained = half.hwm_bytes
            if bridge_max:
                res.half_rate, res.p99_at_half_ms = half.rate, half.p99_ms
                step = self.attack(svc, res, "confirm", bridge_max, d, retry_marginal=True)
                res.max_sustained = bridge_max if step.passed else 0
                if step.passed and half.passed:
                    res.peak_rss_sustained = step.hwm_bytes
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

    async def check_broker(self) -> dict[str, Any]:
        """Every publishing service's records matched to its requests (``benchmarks.broker_check``)."""
        checked = (
            broker_check.Checked(
                ("passthrough",), (PASSTHROUGH_TOPIC,), broker_check.passthrough_record(KEY), fanout=False
            ),
            broker_check.Checked(
                ("bridge", "bridge-full-window"),
                BRIDGE_TOPICS,
                broker_check.bridge_record,
                dead_letter_topic="lark.bridge.dead_letter",
            ),
            broker_check.Checked(
                ("recipe",), tuple(RECIPE_PREFIX + t for t in BRIDGE_TOPICS[:3]), broker_check.recipe_record
            ),
        )
        return await broker_check.check(
            self.broker.bootstrap_servers, self.run_tag, checked, self.results, self.statuses, self.fanout
        )

    @property
    def step_s(self) -> float:
        """Seconds per load step (``--step-s``)."""
        return float(self.args.step_s)


def tools_free_port() -> int:
    from bridge_devtools.broker import free_port

    return free_port()


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
    parser.add_argument(
        "--bridge-env",
        action="append",
        metavar="NAME=VALUE",
        help="a BRIDGE_* setting of the bridge under test, e.g. BRIDGE_KAFKA_TRANSACTIONS=true; repeatable",
    )
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
    ver, mach = report.versions(bench), report.machine()

    by_name = bench.results
    print("\n== summary")
    for res in by_name.values():
        if res.name == "generator-check":
            continue
        print(
            f"  {res.name:<19} max sustained {res.max_sustained:>6,}/s  peak RSS {report.mib(res.peak_rss):>8}  "
            f"p50/p95/p99 @1000/s: {report.fmt_lat(res.fixed(1000))} ms"
            + (
                f"  p99 @{res.half_rate:,}/s (50 % of max): {res.p99_at_half_ms:.1f} ms"
                if res.p99_at_half_ms is not None
                else ""
            )
        )
    ratio_values = ratios(by_name)
    for key, value in ratio_values.items():
        text = report.ratio_text(by_name, key, value)
        if text is not None:
            print(f"  {key:<18} = {text}")
    if bench.broker_check:
        good = bench.broker_check["all_good"]
        print(f"  broker check: {'every 200 has its record(s), none twice' if good else 'MISMATCH'}")
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
        report.plot(bench)
        report.write_md(report.report_md(bench, ver, mach, elapsed, command))
        print(
            f"wrote {report.BENCHMARKS_MD.relative_to(tools.REPO)}, {report.PLOT_PNG.relative_to(tools.REPO)}, "
            f"{RESULTS_JSON.relative_to(tools.REPO)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
