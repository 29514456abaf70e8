"""What a benchmark run measured (:class:`Step`, :class:`ServiceResult`), the fixed conditions a
step is judged by, and the ratios between services (``results.json`` ``ratios``).

Shared by the runner (``benchmarks.run``), the report (``benchmarks.report``), the broker-side
check (``benchmarks.broker_check``) and the profiler (``benchmarks.profile``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

SERVICE_CORE: Final = 0
LOAD_CORE: Final = 1
FIXED_RATES: Final = (500, 1000, 2000)
P99_LIMIT_MS: Final = 100.0
MIN_SENT_SHARE: Final = 0.95  # the generator must have sent at least this share of the rate
#: Services whose max sustained rate the bridge's is divided by (keys of results.json "ratios").
RATIO_BASES: Final = ("passthrough", "ceiling", "recipe")


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
    peak_rss_sustained: int | None = None  # VmHWM while every step so far passed (bridge-full-window)
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
