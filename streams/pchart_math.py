"""The p-chart's formulas as pure functions over (d, n) subgroups.

- p̄ = Σd / Σn (`weighted_center`), σ_i = √(p̄(1 − p̄)/n_i) (`unit_sigma`);
- Laney σ_z = mean |z_i − z_{i−1}| / 1.128 (`laney_sigma_z`);
- the Western Electric run rules on the last 8 z_i (`western_electric`);
- a numpy batch reference of the normal limits (`pchart_limits`), which the
  tests compare the incremental chart with.

`streams.pchart` charts subgroups one by one with these; they hold no state.

>>> weighted_center([(2, 100), (8, 100)]), round(unit_sigma(0.05, 100), 5)
(0.05, 0.02179)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

D2 = 1.128
"""d2 for a moving range of 2: E|x_i − x_{i−1}| = 1.128·σ for normal x."""

RECENT_N = 8
"""Subgroups kept for the Western Electric rules (the longest rule, WE4)."""

Subgroup = tuple[int, int]


def weighted_center(subgroups: Sequence[Subgroup]) -> float:
    """p̄ = Σd / Σn (each n > 0)."""
    return sum(d for d, _ in subgroups) / sum(n for _, n in subgroups)


def unit_sigma(center: float, n: int) -> float:
    """σ_i = √(p̄(1 − p̄)/n_i)."""
    return math.sqrt(center * (1.0 - center) / n)


def z_scores(subgroups: Sequence[Subgroup], center: float, factor: float) -> list[float | None]:
    """z_i = (p_i − p̄)/(σ_i·factor); None where that σ is 0."""
    out: list[float | None] = []
    for d, n in subgroups:
        sigma = unit_sigma(center, n) * factor
        out.append((d / n - center) / sigma if sigma > 0 else None)
    return out


def laney_sigma_z(subgroups: Sequence[Subgroup], center: float) -> float:
    """σ_z = mean |z_i − z_{i−1}| / 1.128 over consecutive subgroups with σ_i > 0.

    1.0 (no over-dispersion assumed) when fewer than two z_i exist.
    """
    zs = [z for z in z_scores(subgroups, center, 1.0) if z is not None]
    if len(zs) < 2:
        return 1.0
    ranges = [abs(b - a) for a, b in zip(zs, zs[1:], strict=False)]
    return sum(ranges) / len(ranges) / D2


def western_electric(zs: Sequence[float], sides: Sequence[int] | None = None) -> tuple[str, ...]:
    """Rules violated by the last of ``zs`` (oldest first, σ = 0 points removed).

    - WE1: |z| > 3 for the current point;
    - WE2: the current point and at least one other of the last 3 beyond 2σ
      on the same side (z > 2, or z < −2);
    - WE3: the current point and at least 3 others of the last 5 beyond 1σ on
      the same side;
    - WE4: the last 8 all strictly above, or all strictly below, the centre.

    ``sides`` (+1 above, −1 below, 0 on the centre; default the sign of each z)
    decide WE4: a probability-equivalent z of 0 may sit above the centre.
    Near the start of a chart, WE2/WE3 count over the points there are (two
    points both beyond 2σ already make a WE2).
    """
    if not zs:
        return ()
    if sides is None:
        sides = [(z > 0) - (z < 0) for z in zs]
    z = zs[-1]
    out: list[str] = []
    if abs(z) > 3:
        out.append("WE1")
    for code, window, need, k in (("WE2", 3, 2, 2.0), ("WE3", 5, 4, 1.0)):
        if abs(z) > k:
            side = math.copysign(1.0, z)
            if sum(1 for x in zs[-window:] if x * side > k) >= need:
                out.append(code)
    last8 = sides[-RECENT_N:]
    if len(last8) == RECENT_N and (all(x > 0 for x in last8) or all(x < 0 for x in last8)):
        out.append("WE4")
    return tuple(out)


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
