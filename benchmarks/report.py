"""The report of a benchmark run: ``BENCHMARKS.md``'s results section, the plot, versions and machine.

Pure functions of a finished run (:class:`RunData`); ``benchmarks.run`` calls them at the end.
"""

from __future__ import annotations

import math
import os
import platform
import time
from typing import Any, Final, Protocol

from benchmarks import tools
from benchmarks.results import (
    LOAD_CORE,
    MIN_SENT_SHARE,
    P99_LIMIT_MS,
    SERVICE_CORE,
    ServiceResult,
    Step,
    ratios,
)
from benchmarks.traffic import MIX

PLOT_PNG: Final = tools.BENCH_DIR / "latency_vs_rate.png"
BENCHMARKS_MD: Final = tools.REPO / "BENCHMARKS.md"
BEGIN: Final = "<!-- bench:results:begin (written by python -m benchmarks.run; edits here are overwritten) -->"
END: Final = "<!-- bench:results:end -->"


class RunData(Protocol):
    """What the report reads of a finished run (``benchmarks.run.Bench`` is one)."""

    @property
    def run_tag(self) -> str: ...
    @property
    def step_s(self) -> float: ...
    @property
    def broker(self) -> Any: ...
    @property
    def broker_rss(self) -> int | None: ...
    @property
    def broker_check(self) -> dict[str, Any]: ...
    @property
    def broker_jvm_opts(self) -> tuple[str, ...]: ...
    @property
    def results(self) -> dict[str, ServiceResult]: ...


def versions(bench: RunData) -> dict[str, str]:
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


def ratio_text(results: dict[str, ServiceResult], key: str, value: float | None) -> str | None:
    """How a ratio of :func:`ratios` reads in the report; None when there is nothing to show."""
    base = results.get(key.split("/", 1)[1])
    bridge = results.get("bridge")
    if value is not None:
        return f"{value:.2f}×"
    if bridge is not None and bridge.max_sustained and base is not None:  # e.g. the recipe below 50/s
        return f"∞ ({base.name}: no max sustained rate)"
    return None


def plot(bench: RunData) -> None:
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
    ax.text(lo * 1.05, 25 * 1.1, "25 ms: bridge p99 target at 50 % of its max", fontsize=8, color="tab:green")
    ax.set_xlabel("offered rate, events/s (open loop; vertical lines: max sustained)")
    ax.set_ylabel("latency, ms")
    ax.set_title("Latency from each request's due time vs. rate, one core per service (x: step failed)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(PLOT_PNG)
    plt.close(fig)


def report_md(bench: RunData, ver: dict[str, str], mach: dict[str, str], elapsed: float, command: str) -> str:
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
        f"event lists 1–3 rooms (1–3 records); every event id unique. Open loop (`benchmarks/loadgen`), "
        f"{bench.step_s:g} s per step. A step passes when every answer is 200, p99 ≤ {P99_LIMIT_MS:.0f} ms "
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
        first = full.half()
        at_max = next((s for s in full.valid() if s.phase == "confirm"), None)
        md += [
            f"`bridge-full-window`: {full.note or 'dedup window pre-filled'}; it runs one step at half of the "
            f'bridge\'s max sustained rate and one at that max ("held" = that step passed too). Its VmHWM was '
            f"{mib(first.hwm_bytes if first else None)} after the step at {first.rate if first else 0:,}/s"
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
        for base, floor in (("passthrough", 0.8), ("ceiling", 0.35), ("recipe", 5.0)):
            other = by_name.get(base)
            if other is None:
                continue
            r = bridge.max_sustained / other.max_sustained if other.max_sustained else math.inf
            md.append(
                f"| ≥ {floor:g}× the {base}'s max events/s | {r:.2f}× "
                f"({bridge.max_sustained:,} vs {other.max_sustained:,}) | {'yes' if r >= floor else '**no**'} |"
            )
        if bridge.p99_at_half_ms is not None:
            ok = bridge.p99_at_half_ms <= 25
            md.append(
                f"| p99 ≤ 25 ms at 50 % of its own max ({bridge.half_rate:,}/s), broker acks included "
                f"| {bridge.p99_at_half_ms:.1f} ms | {'yes' if ok else '**no**'} |"
            )
        if full and full.peak_rss_sustained:
            rss = full.peak_rss_sustained
            md.append(
                f"| peak RSS ≤ 120 MB with 1,000,000 ids in the dedup window, at the load it sustains | "
                f"{rss / 1e6:.0f} MB ({mib(rss)}; {mib(full.peak_rss)} at the end of the run) "
                f"| {'yes' if rss <= 120e6 else '**no**'} |"
            )
        md.append("")

    bc = bench.broker_check
    if bc:
        md += ["### Broker-side check (every publishing service)", ""]
        md += [
            "After the run every record of each publishing service's topics was read back and matched to the "
            "request that sent it: the event id encodes step and index (the passthrough's records are the raw "
            "encrypted bodies, decrypted for the check; the recipe's are the SDK's event JSON), and the generator "
            "records each request's status. A 200 must have exactly its records: one per listed room of a "
            "third-party event for the bridge and the recipe, one per request for the passthrough. Requests "
            "published but not answered 200 are overload steps (a 503, or the client's 10 s timeout came first; "
            "the platform would retry them and the bridge's dedup would answer 200 without a second record).",
            "",
            "| Service | Records | 200s | 200s without their records | Wrong record count | Published, not 200 "
            "| Duplicate records | Dead letters | Not from this run | Result |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, x in bc["services"].items():
            md.append(
                f"| {name} | {x['records_total']:,} | {x['ok_total']:,} | **{x['ok_missing']}** "
                f"| {x['fanout_mismatch']} | {x['published_not_ok']} | {x['duplicate_record_ids']} "
                f"| {x['dead_letters']} | {x['foreign']} | {'good' if x['all_good'] else '**MISMATCH**'} |"
            )
        md += [
            "",
            "**Result: "
            + (
                "every 200 has its record(s), none written twice"
                if bc["all_good"]
                else "MISMATCH — see benchmarks/results.json"
            )
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
        md += [f"Broker RSS at the end: {mib(bench.broker_rss)} (JVM flags: `{' '.join(bench.broker_jvm_opts)}`).", ""]
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
