"""``python -m benchmarks.profile``: where the bridge's CPU goes, sampled with py-spy under load.

Same set-up as ``benchmarks.run`` (local broker, vegeta and py-spy on core 1, ``python -m bridge
serve`` on core 0 with an encrypt key, platform-exact traffic). For each ``--rates`` value the
bridge is driven open-loop for ``--seconds`` while ``py-spy record --nonblocking`` samples it at
``--hz`` (without stopping it: stopping the bridge for every sample, py-spy's default, costs so
much that it falls over at 2,400/s; the price is an occasional inconsistent stack, shown as
"(unresolved frame)"); the collapsed stacks are summarised as

* *stages*: each on-CPU sample goes to the first stage (in :data:`STAGES` order) with a frame in
  its stack, so library work is charged to the bridge stage that called it and the stages sum
  to 100 %;
* *packages*: share of samples whose leaf (innermost Python) frame is in the package (self time);
* *functions*: the top self-time functions.

Writes the tables between the profile markers of ``BENCHMARKS.md`` (``--no-write`` to skip) and
the raw collapsed stacks to ``benchmarks/profile-<rate>.txt`` (``--keep-raw``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from benchmarks import report, tools
from benchmarks import run as bench_run

BEGIN: Final = "<!-- bench:profile:begin (written by python -m benchmarks.profile; edits here are overwritten) -->"
END: Final = "<!-- bench:profile:end -->"

#: (stage, regex over one frame "Qualified.function (path)"), in priority order: a sample goes to the
#: first stage with a matching frame anywhere in its stack, so the stages partition the samples
#: (they sum to 100 %) and library work is charged to the bridge stage that called it.
STAGES: Final = (
    ("bridge: per-request log line (structlog/logging; filtered at WARNING)", r"\((structlog|logging)/"),
    ("bridge: Prometheus metrics", r"\(prometheus_client/"),
    ("bridge: request id", r"^(uuid4|RequestIds\.__call__) \("),
    ("bridge verify: AES-256-CBC decrypt + unpad", r"^(decrypt|_decrypt) \(bridge/verify\.py"),
    (
        "bridge verify: signature (SHA-256, constant-time compare)",
        r"^(sign|Verifier\._check_signature) \(bridge/verify\.py",
    ),
    ("bridge verify: outer JSON parse, decrypted JSON parse, token", r"\(bridge/verify\.py"),
    ("bridge decode: typed msgspec decode of the event", r"\(bridge/decode\.py"),
    ("bridge normalize: CloudEvents records, JSON encode", r"\((bridge/normalize|bridge/envelope)\.py"),
    ("bridge dedup ledger", r"\(bridge/dedup\.py"),
    ("bridge publish: aiokafka send() (accumulator) from the handler", r"\(bridge/publish\.py"),
    ("bridge delivery: task, shield, wait_for, outcome", r"\(bridge/delivery\.py"),
    ("bridge handler + middleware (rest: read body, answer)", r"\(bridge/(app|ingress/webhook)\.py"),
    (
        "dedup feed: tail consumer (aiokafka fetcher, record parsing, ledger marks)",
        r"\((aiokafka/consumer/|bridge/dedup_feed\.py)",
    ),
    ("aiokafka background: sender task, record batches, protocol, socket I/O", r"\(aiokafka/"),
    ("aiohttp: HTTP parsing, request objects, response writing", r"\(aiohttp/"),
    ("event loop: epoll", r"^EpollSelector\.select \("),
    # uvloop's loop is C: a sample taken in it (its scheduling, epoll, socket reads and writes) has
    # no Python frame above the runner's
    ("event loop: uvloop's C code (scheduling, epoll, socket I/O)", r"^(Runner\.)?run \(asyncio/runners\.py"),
    ("event loop: asyncio scheduling (handles, tasks, futures, transports)", r"\(asyncio/"),
)
PACKAGES: Final = (
    ("bridge", r"bridge/"),
    ("aiohttp", r"aiohttp/"),
    ("aiokafka", r"aiokafka/"),
    ("asyncio", r"asyncio/"),
    ("cryptography", r"cryptography/"),
    ("msgspec", r"msgspec/"),
    ("structlog", r"structlog/"),
    ("logging", r"logging/"),
    ("prometheus_client", r"prometheus_client/"),
    ("uuid", r"\(uuid\.py"),
    ("multidict/yarl", r"(multidict|yarl)/"),
    ("selectors/socket", r"\((selectors|socket|ssl)\.py"),
)


def parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        frames, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        stacks.append(([f.strip() for f in frames.split(";")], n))
    return stacks


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((.*):(\d+)\)$", frame)
    if not m:
        return frame
    func, path, _ = m.groups()
    path = re.sub(r"^.*?site-packages/", "", path)
    path = re.sub(r"^.*?/lib/python3\.\d+/", "", path)
    path = re.sub(r"^.*?/(bridge|benchmarks)/", r"\1/", path)
    return f"{func} ({path})"


def summarise(stacks: list[tuple[list[str], int]]) -> dict[str, list[tuple[str, float]]]:
    total = sum(n for _, n in stacks) or 1
    norm = [
        ([_short(f) for f in frames if not f.startswith("<module>") or len(frames) == 1], n) for frames, n in stacks
    ]
    compiled = [(name, re.compile(rx)) for name, rx in STAGES]
    stage_hits: Counter[str] = Counter()
    for frames, n in norm:
        for name, r in compiled:
            if name.startswith("event loop: uvloop"):  # the leaf only (see STAGES)
                if frames and r.search(frames[-1]):
                    stage_hits[name] += n
                    break
                continue
            if any(r.search(f) for f in frames):
                stage_hits[name] += n
                break
        else:
            stage_hits["other (interpreter, stdlib, GC)"] += n
    stages = [(name, stage_hits[name] / total) for name, _ in STAGES]
    stages.append(("other (interpreter, stdlib, GC)", stage_hits["other (interpreter, stdlib, GC)"] / total))
    pkgs: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    for frames, n in norm:
        leaf = frames[-1] if frames and frames[-1] else "(unresolved frame)"
        funcs[leaf] += n
        for name, rx in PACKAGES:
            if re.search(rx, leaf):
                pkgs[name] += n
                break
        else:
            pkgs["other (interpreter, stdlib)"] += n
    return {
        "stages": stages,
        "packages": [(k, v / total) for k, v in pkgs.most_common()],
        "functions": [(k, v / total) for k, v in funcs.most_common(25)],
        "samples": [("samples", float(total))],
    }


def profile_rate(
    bench: bench_run.Bench,
    svc: tools.Service,
    res: bench_run.ServiceResult,
    rate: int,
    seconds: float,
    hz: int,
    out: Path,
) -> bench_run.Step:
    pyspy = Path(sys.executable).with_name("py-spy")
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(bench_run.LOAD_CORE),
            str(pyspy),
            "record",
            "--pid",
            str(svc.pid),
            "--rate",
            str(hz),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--duration",
            str(int(seconds)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    step = bench._attack_once(svc, res, "profile", rate, seconds)
    try:
        proc.wait(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    if not out.exists():
        raise RuntimeError(f"py-spy wrote nothing: {proc.stderr.read().decode() if proc.stderr else ''}")
    return step


def _us(step: bench_run.Step, share: float) -> float:
    """CPU µs per answered-200 event of ``share`` of the bridge's CPU during ``step``."""
    return share * (step.cpu_per_1k or 0.0) * 1000


def as_json(results: list[tuple[int, bench_run.Step, dict[str, list[tuple[str, float]]]]]) -> dict[str, Any]:
    """``{rate: {cpu_us_per_event, us_per_event: {stage: µs}, shares: {stage: share}}}``: what
    ``--baseline`` reads back for a before/after table."""
    return {
        str(r): {
            "cpu_us_per_event": _us(step, 1.0),
            "us_per_event": {name: _us(step, share) for name, share in summ["stages"]},
            "shares": dict(summ["stages"]),
        }
        for r, step, summ in results
    }


def render(
    results: list[tuple[int, bench_run.Step, dict[str, list[tuple[str, float]]]]],
    command: str,
    baseline: dict[str, Any] | None = None,
    baseline_name: str = "",
) -> str:
    md = [
        BEGIN,
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} with `{command}` (py-spy "
        f"{tools.tool_version([str(Path(sys.executable).with_name('py-spy')), '--version']).replace('py-spy ', '')}, "
        "`--nonblocking`; on-CPU samples of the "
        "bridge process only; the bridge on core 0, the load generator, py-spy and the broker on core 1).",
        "",
    ]
    rates = [r for r, _, _ in results]
    head = "| | " + " | ".join(f"@ {r:,}/s" for r in rates) + " |"
    sep = "|---|" + "---:|" * len(rates)
    md += [
        "Load during the samples: "
        + "; ".join(
            f"{r:,}/s → p50 {s.p50_ms:.1f} / p99 {s.p99_ms:.1f} ms, "
            f"bridge CPU {s.svc_cpu_s / s.wall_s:.0%} of its core, "
            f"{s.cpu_per_1k:.3f} CPU s per 1,000 events"
            for r, s, _ in results
            if s.cpu_per_1k is not None
        )
        + ".",
        "",
    ]
    md += [
        "**Where the bridge's CPU goes** (share of on-CPU samples; each sample charged to the first matching "
        "stage, so library calls count for the bridge stage that made them; sums to 100 %)",
        "",
        head,
        sep,
    ]
    for i, (name, _) in enumerate(results[0][2]["stages"]):
        md.append(f"| {name} | " + " | ".join(f"{s['stages'][i][1]:.1%}" for _, _, s in results) + " |")
    md += [
        "",
        "**CPU µs per event by stage** (the shares above × the bridge's CPU seconds per answered event"
        + (f"; before → after, the baseline from `{baseline_name}`" if baseline else "")
        + ")",
        "",
        head,
        sep,
    ]
    for i, (name, _) in enumerate(results[0][2]["stages"]):
        cells = []
        for r, step, summ in results:
            now = _us(step, summ["stages"][i][1])
            before = (baseline or {}).get(str(r), {}).get("us_per_event", {}).get(name)
            cells.append(f"{before:.0f} → {now:.0f}" if before is not None else f"{now:.0f}")
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = []
    for r, step, _ in results:
        now = _us(step, 1.0)
        before = (baseline or {}).get(str(r), {}).get("cpu_us_per_event")
        totals.append(f"**{before:.0f} → {now:.0f}**" if before is not None else f"**{now:.0f}**")
    md.append("| **total** | " + " | ".join(totals) + " |")
    md += ["", "**Self time by package** (innermost Python frame)", "", head, sep]
    names = list(dict.fromkeys(k for _, _, s in results for k, _ in s["packages"]))
    for k in names:
        md.append(f"| {k} | " + " | ".join(f"{dict(s['packages']).get(k, 0.0):.1%}" for _, _, s in results) + " |")
    for r, _, s in results:
        md += ["", f"**Top self-time functions @ {r:,}/s**", "", "| Function | Self |", "|---|---:|"]
        md += [f"| `{k}` | {v:.1%} |" for k, v in s["functions"][:15]]
    md += ["", END]
    return "\n".join(md)


def write_md(section: str) -> None:
    path = report.BENCHMARKS_MD
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        path.write_text(head + section + tail)
    else:
        path.write_text(text.rstrip() + "\n\n" + section + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="1000,2000", help="comma-separated events/s (default 1000,2000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds sampled per rate (default 10)")
    parser.add_argument("--hz", type=int, default=250, help="py-spy sampling rate (default 250)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep-raw", action="store_true", help="keep the collapsed stacks in benchmarks/")
    parser.add_argument("--json", type=Path, help="also write the per-stage numbers to this JSON file")
    parser.add_argument(
        "--baseline", type=Path, help="a --json file of an earlier run: the µs table shows before → after"
    )
    parser.add_argument("--env", action="append", default=[], help="extra BRIDGE_*=value for the bridge (repeatable)")
    args = parser.parse_args(argv)
    tools.ensure_python_deps()
    os.sched_setaffinity(0, {bench_run.LOAD_CORE})
    ns = argparse.Namespace(
        step_s=5.0, refine=0, only="", no_write=True, keep=False, stall_retries=1, fixed_only=True, fixed_rates=""
    )
    bench = bench_run.Bench(ns)
    from bridge_devtools.broker import LocalBroker

    bench.broker = LocalBroker(jvm_opts=bench_run.BROKER_JVM_OPTS)
    bench.broker.start(timeout_s=180)
    bench.warm_broker()
    results = []
    try:
        port = bench_run.tools_free_port()
        env = bench.bridge_env(port)
        env.update(dict(e.split("=", 1) for e in args.env))
        svc = tools.Service("bridge", "python -m bridge serve", [sys.executable, "-m", "bridge", "serve"], port, env)
        res = bench_run.ServiceResult(svc.name, svc.label)
        svc.start(bench.work)
        try:
            bench.warm_up(svc, res)
            for rate in (int(r) for r in args.rates.split(",")):
                out = bench.work / f"profile-{rate}.txt"
                step = profile_rate(bench, svc, res, rate, args.seconds, args.hz, out)
                summary = summarise(parse_collapsed(out))
                results.append((rate, step, summary))
                if args.keep_raw:
                    (tools.BENCH_DIR / out.name).write_text(out.read_text())
        finally:
            svc.stop()
    finally:
        for d in bench.stall_detectors:
            d.close()
        bench.broker.stop()
        bench.broker.cleanup()
    command = "python -m benchmarks.profile " + " ".join(argv if argv is not None else sys.argv[1:])
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    section = render(results, command.strip(), baseline, str(args.baseline or ""))
    if args.json:
        args.json.write_text(json.dumps(as_json(results), indent=1) + "\n")
    print(section)
    if not args.no_write:
        write_md(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
