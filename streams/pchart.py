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

Where n_i·p̄ < ``min_np`` the normal approximation is poor: the point is
flagged ``low_count``, never refused.

>>> chart = PChart(PChartConfig(center=0.05))
>>> point = chart.add(d=8, n=100)
>>> round(point.sigma, 5), round(point.ucl, 5), point.lcl, round(point.z, 3), point.violations
(0.02179, 0.11538, 0.0, 1.376, ())
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Mode = Literal["standard", "laney", "auto"]
Method = Literal["standard", "laney"]
Phase = Literal["I", "II"]

D2 = 1.128
"""d2 for a moving range of 2: E|x_i − x_{i−1}| = 1.128·σ for normal x."""

RECENT_N = 8
"""Subgroups kept for the Western Electric rules (the longest rule, WE4)."""

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
    """One charted subgroup. ``sigma`` is the σ behind the limits (σ_i·σ_z in
    Laney mode); ``z`` = (p − center)/sigma, None when sigma is 0."""

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

    def as_record(self) -> dict[str, Any]:
        """The point's fields of the ``pchart`` output record."""
        return {
            "d": self.d,
            "n": self.n,
            "p": self.p,
            "center": self.center,
            "ucl": self.ucl,
            "lcl": self.lcl,
            "sigma": self.sigma,
            "phase": self.phase,
            "method": self.method,
            "violations": list(self.violations),
        }


Subgroup = tuple[int, int]


def weighted_center(subgroups: Sequence[Subgroup]) -> float:
    """p̄ = Σd / Σn (each n > 0)."""
    return sum(d for d, _ in subgroups) / sum(n for _, n in subgroups)


def _unit_sigma(center: float, n: int) -> float:
    """σ_i = √(p̄(1 − p̄)/n_i)."""
    return math.sqrt(center * (1.0 - center) / n)


def _z_scores(subgroups: Sequence[Subgroup], center: float, factor: float) -> list[float | None]:
    """z_i = (p_i − p̄)/(σ_i·factor); None where that σ is 0."""
    out: list[float | None] = []
    for d, n in subgroups:
        sigma = _unit_sigma(center, n) * factor
        out.append((d / n - center) / sigma if sigma > 0 else None)
    return out


def laney_sigma_z(subgroups: Sequence[Subgroup], center: float) -> float:
    """σ_z = mean |z_i − z_{i−1}| / 1.128 over consecutive subgroups with σ_i > 0.

    1.0 (no over-dispersion assumed) when fewer than two z_i exist.
    """
    zs = [z for z in _z_scores(subgroups, center, 1.0) if z is not None]
    if len(zs) < 2:
        return 1.0
    ranges = [abs(b - a) for a, b in zip(zs, zs[1:], strict=False)]
    return sum(ranges) / len(ranges) / D2


def western_electric(zs: Sequence[float]) -> tuple[str, ...]:
    """Rules violated by the last of ``zs`` (oldest first, σ = 0 points removed).

    - WE1: |z| > 3 for the current point;
    - WE2: the current point and at least one other of the last 3 beyond 2σ
      on the same side (z > 2, or z < −2);
    - WE3: the current point and at least 3 others of the last 5 beyond 1σ on
      the same side;
    - WE4: the last 8 all strictly above, or all strictly below, the centre.

    Near the start of a chart, WE2/WE3 count over the points there are (two
    points both beyond 2σ already make a WE2).
    """
    if not zs:
        return ()
    z = zs[-1]
    out: list[str] = []
    if abs(z) > 3:
        out.append("WE1")
    for code, window, need, k in (("WE2", 3, 2, 2.0), ("WE3", 5, 4, 1.0)):
        if abs(z) > k:
            side = math.copysign(1.0, z)
            if sum(1 for x in zs[-window:] if x * side > k) >= need:
                out.append(code)
    last8 = zs[-RECENT_N:]
    if len(last8) == RECENT_N and (all(x > 0 for x in last8) or all(x < 0 for x in last8)):
        out.append("WE4")
    return tuple(out)


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
            zs = _z_scores(points, center, 1.0)
            kept = [p for p, z in zip(points, zs, strict=True) if z is None or abs(z) <= width]
            if kept and len(kept) < len(points):
                self._trimmed = len(points) - len(kept)
                center = weighted_center(kept)
                sigma_z = laney_sigma_z(kept, center)
        self._center = center
        self._method = method
        self._sigma_z = sigma_z if method == "laney" else None
        self._baseline = []

    def _chart(self, d: int, n: int, center: float, phase: Phase) -> PChartPoint:
        factor = self._sigma_z if self._sigma_z is not None else 1.0
        sigma = _unit_sigma(center, n) * factor
        zs = _z_scores(self._recent, center, factor)
        z = zs[-1]
        violations = western_electric([x for x in zs if x is not None]) if z is not None else ()
        return PChartPoint(
            d=d,
            n=n,
            p=d / n,
            center=center,
            ucl=min(1.0, center + 3.0 * sigma),
            lcl=max(0.0, center - 3.0 * sigma),
            sigma=sigma,
            z=z,
            phase=phase,
            method=self._method,
            violations=violations,
            low_count=n * center < self.config.min_np,
            sigma_z=self._sigma_z,
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


def pchart_limits(
    d: npt.ArrayLike,
    n: npt.ArrayLike,
    center: npt.ArrayLike,
    sigma_z: float = 1.0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Batch reference: σ_i = √(p̄(1 − p̄)/n_i)·σ_z, UCL = min(1, p̄ + 3σ_i),
    LCL = max(0, p̄ − 3σ_i). ``center`` is a scalar or one p̄ per subgroup."""
    d_arr = np.asarray(d, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if d_arr.shape != n_arr.shape:
        raise ValueError("d and n must have the same shape")
    if np.any(n_arr <= 0) or np.any(d_arr < 0) or np.any(d_arr > n_arr):
        raise ValueError("need 0 <= d <= n and n > 0 for every subgroup")
    c = np.asarray(center, dtype=np.float64)
    sigma = np.sqrt(c * (1.0 - c) / n_arr) * sigma_z
    return sigma, np.minimum(1.0, c + 3.0 * sigma), np.maximum(0.0, c - 3.0 * sigma)
