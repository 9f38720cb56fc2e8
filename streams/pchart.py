"""Sequential Shewhart p-chart for a fraction nonconforming (optionally Laney p′).

A subgroup i is a closed window with n_i items inspected and d_i nonconforming;
subgroups arrive in time order and are charted one by one.

- p_i = d_i / n_i
- centre line p̄ = Σd / Σn over the phase-I baseline (weighted by subgroup
  size, never the mean of the p_i), or a configured p̄
- σ_i = √(p̄(1 − p̄) / n_i); UCL_i = min(1, p̄ + 3σ_i); LCL_i = max(0, p̄ − 3σ_i)
- Laney p′: z_i = (p_i − p̄) / σ_i over the baseline,
  σ_z = mean |z_i − z_{i−1}| / 1.128, and σ_i is replaced by σ_i·σ_z

Phase I (the first ``baseline_n`` subgroups, when no centre is configured):
each point is charted against the running p̄ of the baseline so far, itself
included. The ``baseline_n``-th subgroup freezes the chart:

1. p̄ = Σd/Σn and σ_z over the whole baseline;
2. ``mode="auto"`` picks Laney when that σ_z > ``laney_auto_threshold``
   (1.5 by default), else standard; the choice is made before trimming
   because the trimming limits depend on the method;
3. with ``trim_phase1``, baseline points beyond their 3σ limits (of the chosen
   method) are dropped and p̄ (and σ_z, over the kept points in order) is
   recomputed once, a single pass, never iterated; if every point would go,
   none is dropped;
4. phase II: p̄, σ_z and the method are frozen. The freezing point itself is
   charted against the frozen values. Later points never move them, so a drift
   cannot pull the centre line towards itself.

During phase I, ``mode="auto"`` applies the same rule to the running σ_z. With
a configured centre there is no baseline: the chart is in phase II at once and
``auto`` means standard (``laney`` is refused, σ_z cannot be estimated).

Western Electric rules are judged on the last 8 subgroups, each with its own
z_i = (p_i − p̄)/σ_i (σ_i·σ_z in Laney mode) recomputed against the current
centre; a point with σ_i = 0 (p̄ = 0 or 1) is skipped. See `western_electric`.

Small subgroups. Where n_i·p̄ or n_i·(1 − p̄) is below ``min_np`` (default 5)
the normal approximation behind p̄ ± 3σ_i does not hold, and the point is
judged against exact binomial limits instead (``limits`` = "binomial", else
"normal"). With X ~ Binomial(n_i, p̄), p̄ the centre the point is charted
against, and α = Φ(−3) ≈ 0.00135 (the normal tail beyond 3σ):

- the point is above its upper limit when P(X ≥ d_i) < α, and below its lower
  limit when P(X ≤ d_i) < α;
- UCL_i = u/n_i, u the largest count not above the limit (UCL_i = 1 when no
  count is); LCL_i = l/n_i, l the smallest count not below it (LCL_i = 0 when
  no count is: at n_i = 27, p̄ = 0.04 even d = 0 has P = 0.33). So p_i > UCL_i
  exactly when the point is above, p_i < LCL_i exactly when it is below; a
  limit that would fall on the wrong side of p̄ (n_i = 1, p̄ = 0.0001: even
  d = 1 is above, so u = 0) is drawn at p̄, so LCL_i ≤ p̄ ≤ UCL_i;
- the run rules see a probability-equivalent z: the normal quantile of the
  same one-sided exact tail, z_i = −Φ⁻¹(P(X ≥ d_i)) when p_i > p̄ and
  z_i = Φ⁻¹(P(X ≤ d_i)) when p_i < p̄, clipped to 0 where that tail exceeds
  ½ (a count just above n_i·p̄ may be no rarer than that). "Beyond kσ" then
  means a tail below Φ(−k), the probability it has for a normal point: WE1
  is the exact-limit test itself, a point reaches each WE2/WE3 zone with at
  most its normal probability (the tail counts the point's own count), and
  WE4 takes the side of p_i against p̄. The point's ``z`` is this z; its
  ``sigma`` is the plain binomial σ_i, which the exact limits are not built from.

The tails are exact binomial sums (`streams.binomial`). In Laney mode the
points where the normal approximation holds keep σ_i·σ_z; small subgroups take the exact limits and z
above, without σ_z: σ_z scales a normal σ and has no exact-binomial
counterpart, so such a point is judged as pure binomial noise around p̄
(narrower than σ_z > 1 would draw it). ``low_count`` keeps its meaning,
n_i·p̄ < ``min_np``; ``min_np = 0`` turns exact limits off. Where p̄ is 0 or 1
the limits collapse onto p̄ (they are the exact limits too) and, as before, no
rule is judged. Phase-I trimming still uses the normal 3σ limits.

>>> chart = PChart(PChartConfig(center=0.05))
>>> point = chart.add(d=8, n=100)
>>> round(point.sigma, 5), round(point.ucl, 5), point.lcl, round(point.z, 3), point.violations
(0.02179, 0.11538, 0.0, 1.376, ())
>>> point.limits
'normal'

With 27 items at p̄ = 0.04 (n·p̄ = 1.08): 5 nonconforming would be beyond the
normal UCL 0.1531 (z = 3.85), but P(X ≥ 5) = 0.0040 is not below α, and only
6 or more (P(X ≥ 6) = 0.00059) are:

>>> point = PChart(PChartConfig(center=0.04)).add(d=5, n=27)
>>> point.limits, round(point.ucl, 4), point.lcl, round(point.z, 3), point.violations
('binomial', 0.1852, 0.0, 2.656, ())
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Literal

from streams.binomial import ALPHA, binomial_cdf, binomial_sf, exact_limits, exact_z
from streams.pchart_math import (
    D2,
    RECENT_N,
    Subgroup,
    laney_sigma_z,
    pchart_limits,
    unit_sigma,
    weighted_center,
    western_electric,
    z_scores,
)

__all__ = [
    "ALPHA",
    "D2",
    "RECENT_N",
    "Limits",
    "Method",
    "Mode",
    "PChart",
    "PChartConfig",
    "PChartPoint",
    "Phase",
    "Subgroup",
    "binomial_cdf",
    "binomial_sf",
    "exact_limits",
    "exact_z",
    "laney_sigma_z",
    "pchart_limits",
    "weighted_center",
    "western_electric",
]

Mode = Literal["standard", "laney", "auto"]
Method = Literal["standard", "laney"]
Phase = Literal["I", "II"]
Limits = Literal["normal", "binomial"]

_STATE_VERSION = 1


@dataclass(frozen=True)
class PChartConfig:
    """How a p-chart learns its centre line and which limits it draws."""

    baseline_n: int = 20
    center: float | None = None
    mode: Mode = "standard"
    trim_phase1: bool = True
    laney_auto_threshold: float = 1.5
    min_np: float = 5.0

    def __post_init__(self) -> None:
        if self.baseline_n < 1:
            raise ValueError("baseline_n must be at least 1")
        if self.mode not in ("standard", "laney", "auto"):
            raise ValueError(f"unknown p-chart mode: {self.mode!r}")
        if self.center is not None:
            if not 0.0 <= self.center <= 1.0:
                raise ValueError("center must be a fraction in [0, 1]")
            if self.mode == "laney":
                raise ValueError("laney mode needs a phase-I baseline to estimate σ_z")
        if self.laney_auto_threshold <= 0 or self.min_np < 0:
            raise ValueError("laney_auto_threshold must be > 0 and min_np >= 0")


@dataclass(frozen=True)
class PChartPoint:
    """One charted subgroup. ``limits`` says which limits judged it. Normal:
    ``sigma`` is the σ behind the limits (σ_i·σ_z in Laney mode) and ``z`` =
    (p − center)/sigma. Binomial: exact limits, ``sigma`` the plain σ_i and
    ``z`` the probability-equivalent z (module docstring). ``z`` is None when
    σ_i is 0."""

    d: int
    n: int
    p: float
    center: float
    ucl: float
    lcl: float
    sigma: float
    z: float | None
    phase: Phase
    method: Method
    violations: tuple[str, ...]
    low_count: bool
    sigma_z: float | None
    limits: Limits


def _check_subgroup(d: int, n: int) -> Subgroup:
    d, n = operator.index(d), operator.index(n)
    if d < 0 or n < 0:
        raise ValueError(f"negative count in subgroup d={d}, n={n}")
    if d > n:
        raise ValueError(f"more nonconforming than inspected: d={d} > n={n}")
    return d, n


class PChart:
    """Incremental p-chart; its whole state is `to_dict()` (plain JSON values)."""

    def __init__(self, config: PChartConfig | None = None) -> None:
        self.config = config or PChartConfig()
        self._baseline: list[Subgroup] = []
        self._recent: list[Subgroup] = []
        self._center: float | None = self.config.center
        self._method: Method = "standard"
        self._sigma_z: float | None = None
        self._trimmed = 0

    @property
    def phase(self) -> Phase:
        """Phase "I" while the baseline is being collected, then "II"."""
        return "I" if self._center is None else "II"

    @property
    def center(self) -> float | None:
        """Frozen p̄ in phase II; running p̄ of the baseline in phase I (None if empty)."""
        if self._center is not None:
            return self._center
        return weighted_center(self._baseline) if self._baseline else None

    @property
    def method(self) -> Method:
        """Method of the frozen chart (phase I: the method of the last point)."""
        return self._method

    @property
    def sigma_z(self) -> float | None:
        """Laney σ_z in use, None for standard limits."""
        return self._sigma_z

    @property
    def trimmed(self) -> int:
        """Baseline subgroups dropped by phase-I trimming."""
        return self._trimmed

    def add(self, d: int, n: int) -> PChartPoint | None:
        """Chart subgroup (d nonconforming of n); None, and no change, when n == 0."""
        d, n = _check_subgroup(d, n)
        if n == 0:
            return None
        self._recent = [*self._recent, (d, n)][-RECENT_N:]
        if self._center is None:
            self._baseline.append((d, n))
            if len(self._baseline) < self.config.baseline_n:
                self._running()
                return self._chart(d, n, weighted_center(self._baseline), "I")
            self._freeze()
        assert self._center is not None
        return self._chart(d, n, self._center, "II")

    def _pick(self, sigma_z: float) -> Method:
        mode = self.config.mode
        if mode == "laney" or (mode == "auto" and sigma_z > self.config.laney_auto_threshold):
            return "laney"
        return "standard"

    def _running(self) -> None:
        """Phase I: method and σ_z from the baseline so far."""
        if self.config.mode == "standard":
            self._method, self._sigma_z = "standard", None
            return
        sigma_z = laney_sigma_z(self._baseline, weighted_center(self._baseline))
        self._method = self._pick(sigma_z)
        self._sigma_z = sigma_z if self._method == "laney" else None

    def _freeze(self) -> None:
        """End of phase I: p̄, σ_z, method; optional one-pass trim; freeze."""
        points = self._baseline
        center = weighted_center(points)
        sigma_z = laney_sigma_z(points, center)
        method = self._pick(sigma_z)
        width = 3.0 * (sigma_z if method == "laney" else 1.0)
        if self.config.trim_phase1 and width > 0:
            zs = z_scores(points, center, 1.0)
            kept = [p for p, z in zip(points, zs, strict=True) if z is None or abs(z) <= width]
            if kept and len(kept) < len(points):
                self._trimmed = len(points) - len(kept)
                center = weighted_center(kept)
                sigma_z = laney_sigma_z(kept, center)
        self._center = center
        self._method = method
        self._sigma_z = sigma_z if method == "laney" else None
        self._baseline = []

    def _small(self, n: int, center: float) -> bool:
        """n·p̄ or n·(1 − p̄) below min_np: the normal approximation does not hold."""
        return min(n * center, n * (1.0 - center)) < self.config.min_np

    def _zone_z(self, d: int, n: int, center: float, factor: float) -> float | None:
        """The z the rules see: normal, or probability-equivalent for a small subgroup."""
        unit = unit_sigma(center, n)
        if unit == 0.0:
            return None
        if self._small(n, center):
            return exact_z(d, n, center)
        return (d / n - center) / (unit * factor) if factor > 0 else None

    def _chart(self, d: int, n: int, center: float, phase: Phase) -> PChartPoint:
        factor = self._sigma_z if self._sigma_z is not None else 1.0
        zs: list[float] = []
        sides: list[int] = []
        z: float | None = None
        for d_r, n_r in self._recent:  # the last one is (d, n) itself
            z = self._zone_z(d_r, n_r, center, factor)
            if z is not None:
                zs.append(z)
                sides.append((d_r / n_r > center) - (d_r / n_r < center))
        violations = western_electric(zs, sides) if z is not None else ()
        small = self._small(n, center)
        sigma = unit_sigma(center, n) * (1.0 if small else factor)
        if small and sigma > 0:
            ucl, lcl = exact_limits(n, center)
        else:
            ucl, lcl = min(1.0, center + 3.0 * sigma), max(0.0, center - 3.0 * sigma)
        return PChartPoint(
            d=d,
            n=n,
            p=d / n,
            center=center,
            ucl=ucl,
            lcl=lcl,
            sigma=sigma,
            z=z,
            phase=phase,
            method=self._method,
            violations=violations,
            low_count=n * center < self.config.min_np,
            sigma_z=self._sigma_z,
            limits="binomial" if small else "normal",
        )

    def to_dict(self) -> dict[str, Any]:
        """State as plain JSON values (ints, floats, None, lists)."""
        return {
            "v": _STATE_VERSION,
            "center": self._center,
            "method": self._method,
            "sigma_z": self._sigma_z,
            "trimmed": self._trimmed,
            "baseline": [[d, n] for d, n in self._baseline],
            "recent": [[d, n] for d, n in self._recent],
        }

    @classmethod
    def from_dict(cls, config: PChartConfig, data: dict[str, Any]) -> PChart:
        """Rebuild a chart from `to_dict()` output (after a JSON round trip too)."""
        if data.get("v") != _STATE_VERSION:
            raise ValueError(f"unsupported p-chart state version: {data.get('v')!r}")
        chart = cls(config)
        if data["center"] is not None:
            chart._center = float(data["center"])
        if data["method"] not in ("standard", "laney"):
            raise ValueError(f"unknown p-chart method: {data['method']!r}")
        chart._method = data["method"]
        chart._sigma_z = None if data["sigma_z"] is None else float(data["sigma_z"])
        chart._trimmed = int(data["trimmed"])
        chart._baseline = [_check_subgroup(d, n) for d, n in data["baseline"]]
        chart._recent = [_check_subgroup(d, n) for d, n in data["recent"]][-RECENT_N:]
        return chart
