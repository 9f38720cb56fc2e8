"""Exact binomial tails and limits, for p-chart subgroups too small for ±3σ.

With X ~ Binomial(n, p̄) and α = Φ(−3) ≈ 0.00135 (the normal tail beyond 3σ),
a count d of n is above its exact upper limit when P(X ≥ d) < α and below its
lower limit when P(X ≤ d) < α; `exact_z` is the normal quantile of the same
one-sided tail, so the run rules can judge such a point (`streams.pchart`
says how the chart uses them).

Tails are summed term by term from the binomial pmf (the first term from
math.comb, or math.lgamma for n > 1000, the next ones by the pmf ratio),
outward from the mode: a tail beyond the mode directly, one holding the mode
as 1 − the other side, so a small tail never comes from a cancellation. Pure
Python, no scipy.

>>> round(binomial_sf(5, 27, 0.04), 4), round(binomial_sf(6, 27, 0.04), 5)
(0.004, 0.00059)
"""

from __future__ import annotations

import math
from statistics import NormalDist

_NORMAL = NormalDist()

ALPHA = _NORMAL.cdf(-3.0)
"""Φ(−3) ≈ 0.0013499: each tail beyond the exact binomial limits, as beyond ±3σ."""


def _log_pmf(k: int, n: int, log_p: float, log_q: float) -> float:
    """log P(X = k) for X ~ Binomial(n, p), given log p and log(1 − p)."""
    if n <= 1000:  # exact integer coefficient; lgamma's rounding grows with n
        log_comb = math.log(math.comb(n, k))
    else:
        log_comb = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return log_comb + k * log_p + (n - k) * log_q


def _sum_outward(k: int, n: int, log_p: float, log_q: float, step: int) -> float:
    """Σ P(X = j) for j = k, k + step, … ; k lies beyond the mode on the
    step's side, so the terms shrink at least geometrically: stop once one is
    below 2⁻⁶⁰ of the sum. Each term from the last by the pmf ratio
    P(X = j + 1)/P(X = j) = (n − j)/(j + 1)·p/(1 − p)."""
    # p/(1 − p) going up, its inverse going down: the one that stays below n + 1
    odds = math.exp(log_p - log_q if step > 0 else log_q - log_p)
    term = math.exp(_log_pmf(k, n, log_p, log_q))
    total = 0.0
    while True:
        total += term
        if term <= total * 2.0**-60 or not 0 <= k + step <= n:
            return total
        term *= (n - k) / (k + 1) * odds if step > 0 else k / (n - k + 1) * odds
        k += step


def _at_least(d: int, n: int, p: float, log_p: float, log_q: float) -> float:
    """P(X ≥ d), 0 < d ≤ n, 0 < p < 1: summed directly when d is beyond the
    mode, else 1 − P(X ≤ d − 1), which is then at least P(X = mode) ≥ 1/(n + 1)."""
    mode = min(n, math.floor((n + 1) * p))
    if d > mode:
        return _sum_outward(d, n, log_p, log_q, +1)
    return max(0.0, 1.0 - _sum_outward(d - 1, n, log_p, log_q, -1))


def binomial_sf(d: int, n: int, p: float) -> float:
    """P(X ≥ d) for X ~ Binomial(n, p), exact up to float rounding."""
    if d <= 0:
        return 1.0
    if d > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return _at_least(d, n, p, math.log(p), math.log1p(-p))


def binomial_cdf(d: int, n: int, p: float) -> float:
    """P(X ≤ d) for X ~ Binomial(n, p): P(n − X ≥ n − d), n − X ~ Binomial(n, 1 − p)."""
    if d >= n:
        return 1.0
    if d < 0 or p >= 1.0:
        return 0.0
    if p <= 0.0:
        return 1.0
    return _at_least(n - d, n, 1.0 - p, math.log1p(-p), math.log(p))


def _tail_z(tail: float) -> float:
    """z ≥ 0 with Φ(−z) = tail (0 for a tail of ½ or more; about 38.5 when
    the tail underflows to 0)."""
    if tail >= 0.5:
        return 0.0
    return -_NORMAL.inv_cdf(max(tail, math.ulp(0.0)))


def exact_z(d: int, n: int, center: float) -> float:
    """Probability-equivalent z of d of n against p̄ = center: −Φ⁻¹(P(X ≥ d))
    above the centre, Φ⁻¹(P(X ≤ d)) below it, clipped to 0 on the wrong side."""
    p = d / n
    if p > center:
        return _tail_z(binomial_sf(d, n, center))
    if p < center:
        return -_tail_z(binomial_cdf(d, n, center))
    return 0.0


def exact_limits(n: int, center: float) -> tuple[float, float]:
    """(UCL, LCL) of the exact binomial limits: p > UCL ⇔ exact_z > 3, p < LCL ⇔
    exact_z < −3, for every count d of n (exact_z is non-decreasing in d)."""
    # u + 1 = the smallest count above the limit (n + 1 when none is)
    lo, hi = 0, n + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if exact_z(mid, n, center) > 3.0:
            hi = mid
        else:
            lo = mid + 1
    ucl = max(center, (lo - 1) / n)
    # l − 1 = the largest count below the limit (−1 when none is)
    lo, hi = -1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if exact_z(mid, n, center) < -3.0:
            lo = mid
        else:
            hi = mid - 1
    lcl = min(center, (lo + 1) / n)
    return ucl, lcl
