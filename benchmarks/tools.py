"""Benchmark plumbing: tools (loadgen, sink, vegeta, bench-only Python deps), processes, /proc stats.

* vegeta (cross-check of the load generator's numbers): ``github.com/tsenart/vegeta/v12`` at
  :data:`VEGETA_VERSION` from the Go module proxy, built into
  ``~/.cache/lark-bridge/bin/vegeta-<version>``. ``go install …@version`` would be the one-liner,
  but it also asks the proxy for the module's version list (deprecation check), which some
  proxies refuse; ``go mod download`` + ``go build`` of the same module version needs only that
  version (checksummed against sum.golang.org as usual).
* bench-loadgen: ``benchmarks/loadgen/main.go`` (standard library only), the open-loop load
  generator; bench-sink: ``benchmarks/sink/main.go``, a Go ``net/http`` server for the
  load-generator check. Both built with the local Go toolchain (no download).
* Python bench-only deps: ``benchmarks/requirements.txt`` (pinned), installed into the running
  interpreter's environment with pip when one is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[1]
BENCH_DIR: Final = Path(__file__).resolve().parent
VEGETA_MODULE: Final = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION: Final = "v12.13.0"
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def cache_bin() -> Path:
    """``$XDG_CACHE_HOME/lark-bridge/bin`` (default ``~/.cache``), where helm also lives."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = root / "lark-bridge" / "bin"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_python_deps() -> None:
    """Install ``benchmarks/requirements.txt`` (pinned) if flask, kafka-python or matplotlib is missing."""
    missing = [m for m in ("flask", "kafka", "matplotlib") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    print(
        f"installing bench-only Python deps ({', '.join(missing)} missing) from benchmarks/requirements.txt", flush=True
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "-c",
            str(REPO / "constraints.txt"),
            "-r",
            str(BENCH_DIR / "requirements.txt"),
        ],
        check=True,
    )
    importlib.invalidate_caches()


def _go() -> str:
    for cand in ("go", "/usr/local/go/bin/go"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            subprocess.run([cand, "version"], check=True, capture_output=True)
            return cand
    raise RuntimeError("Go is needed to build vegeta (https://go.dev/dl/)")


def ensure_vegeta() -> Path:
    """Path of the pinned vegeta binary, building it on first use."""
    dest = cache_bin() / f"vegeta-{VEGETA_VERSION}"
    if dest.exists():
        return dest
    go = _go()
    print(f"building vegeta {VEGETA_VERSION} from the Go module proxy into {dest}", flush=True)
    info = json.loads(
        subprocess.run(
            [go, "mod", "download", "-json", f"{VEGETA_MODULE}@{VEGETA_VERSION}"],
            check=True,
            capture_output=True,
            text=True,
            cwd="/",
        ).stdout
    )
    env = dict(os.environ, GOFLAGS="-buildvcs=false -mod=readonly")
    subprocess.run(
        [go, "build", "-trimpath", "-ldflags", f"-X main.Version={VEGETA_VERSION}", "-o", str(dest), "."],
        check=True,
        cwd=info["Dir"],
        env=env,
    )
    return dest


def _build_go(name: str) -> Path:
    src = BENCH_DIR / name / "main.go"
    dest = cache_bin() / f"bench-{name}"
    if not dest.exists() or dest.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(
            [_go(), "build", "-trimpath", "-o", str(dest), str(src)],
            check=True,
            cwd="/",
            env=dict(os.environ, GO111MODULE="off"),
        )
    return dest


def ensure_sink() -> Path:
    """Path of the Go sink server ``benchmarks/sink`` (rebuilt when its source is newer)."""
    return _build_go("sink")


def ensure_loadgen() -> Path:
    """Path of the load generator ``benchmarks/loadgen`` (rebuilt when its source is newer)."""
    return _build_go("loadgen")


def git_revision() -> str:
    """The commit of the tree being measured, ``+ uncommitted changes in bridge/`` when dirty."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bridge"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return f"commit {rev}" + (" + uncommitted changes in bridge/" if dirty else "")


def tool_version(argv: list[str]) -> str:
    """First line of a tool's version output ('' when it fails)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else ""


# --------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int, key: str) -> int | None:
    """A ``kB`` value of /proc/<pid>/status (e.g. VmHWM, VmRSS) in bytes."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpus_allowed(pid: int) -> str:
    """Cpus_allowed_list of a process (to show the pinning)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def process_ticks(exclude: set[int]) -> dict[int, int]:
    """utime+stime (clock ticks) of every user-space process except ``exclude`` (kernel threads,
    which have no command line, are left out too)."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if not f.read(1):
                    continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry)] = int(fields[11]) + int(fields[12])
    return out


def foreign_cpu_s(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds used between two :func:`process_ticks` samples by processes present in both."""
    return sum(after[p] - before[p] for p in after.keys() & before.keys()) / CLK_TCK


def wait_quiet(exclude: set[int], *, max_share: float = 0.10, timeout_s: float = 180.0) -> float:
    """Wait until other processes use less than ``max_share`` of a core over 1 s (this machine is
    shared); returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        before = process_ticks(exclude)
        time.sleep(1)
        if foreign_cpu_s(before, process_ticks(exclude)) < max_share:
            break
    return time.monotonic() - t0


def core_ticks() -> dict[str, tuple[int, int]]:
    """Per-core (busy, total) jiffies from /proc/stat."""
    out: dict[str, tuple[int, int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                nums = [int(v) for v in vals[:8]]
                idle = nums[3] + nums[4]
                out[name] = (sum(nums) - idle, sum(nums))
    return out


def core_busy(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Busy fraction of each core between two :func:`core_ticks` samples."""
    res = {}
    for name, (b1, t1) in after.items():
        b0, t0 = before.get(name, (0, 0))
        res[name] = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return res


# --------------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------------


@dataclass
class Service:
    """One HTTP service under test, run as ``taskset -c <core> <argv>``."""

    name: str
    label: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    core: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, logdir: Path, timeout_s: float = 120.0) -> None:
        """Launch pinned to :attr:`core` and wait until ``ready_path`` answers 200."""
        self.log_path = logdir / f"{self.name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "RECIPE_"))}
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(self.core), *self.argv],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready within {timeout_s:.0f}s; log:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_idle(pid: int, *, threshold: float = 0.05, window_s: float = 0.5, timeout_s: float = 15.0) -> None:
    """Wait until process ``pid`` uses less than ``threshold`` of a core over ``window_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c0 = cpu_seconds(pid)
        time.sleep(window_s)
        if cpu_seconds(pid) - c0 < threshold * window_s:
            return


def run_json(argv: list[str], **kw: Any) -> Any:
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout)


class StallDetector:
    """A thread that sleeps 2 ms at a time and records every wake-up later than ``threshold_s``.

    This machine is a VM whose vCPUs are sometimes paused for 50-300 ms (measured: a thread
    doing nothing but sleep on an otherwise idle core misses its wake-up by that much, e.g. while
    another process touches fresh memory). Such a pause lands in the latency tail of whatever is
    being measured, so :meth:`stalls` lets the runner see them and re-run the step. ``cpu`` pins
    the thread to one core (the runner watches both: a pause of either vCPU matters). With
    real-time priority the thread preempts whatever runs there for a few µs every 2 ms.
    """

    def __init__(self, threshold_s: float = 0.040, *, cpu: int | None = None) -> None:
        import threading

        self.threshold_s = threshold_s
        self.cpu = cpu
        self._events: list[tuple[float, float]] = []  # (monotonic time of wake-up, gap s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stall-detector", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # Real-time priority (when allowed) so that the scheduler never delays this thread behind
        # the busy load generator: a late wake-up then means the VM itself did not run.
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})  # this thread only
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        last = time.monotonic()
        while not self._stop.is_set():
            time.sleep(0.002)
            now = time.monotonic()
            if now - last > self.threshold_s:
                self._events.append((now, now - last))
            last = now

    def stalls(self, start: float, end: float) -> list[float]:
        """Gaps (seconds) that ended within [start, end] (monotonic)."""
        return [gap for t, gap in self._events if start <= t <= end]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
