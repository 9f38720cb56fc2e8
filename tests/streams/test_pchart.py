"""Tests for the sequential p-chart (streams/pchart.py, pchart_math.py, binomial.py)."""

from __future__ import annotations

import doctest
import itertools
import json
import math
from collections.abc import Iterator
from fractions import Fraction
from statistics import NormalDist
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.binomial
import streams.pchart
import streams.pchart_math
from streams.pchart import (
    PChart,
    PChartConfig,
    PChartPoint,
    binomial_cdf,
    binomial_sf,
    pchart_limits,
)
from streams.records import pchart_alert, pchart_record
from streams.windows import Window

SEED = 20261122


def feed(chart: PChart, subgroups) -> list[PChartPoint]:
    points = [chart.add(int(d), int(n)) for d, n in subgroups]
    return [p for p in points if p is not None]


@pytest.mark.parametrize(
    "module", [streams.pchart, streams.pchart_math, streams.binomial], ids=lambda m: m.__name__
)
def test_doctest(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# --- limits by hand -------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "sigma", "ucl", "lcl"),
    [
        # p̄ = 0.05: p̄(1 − p̄) = 0.0475
        # n = 100:  σ = √(0.0475/100)  = 0.021794; UCL = 0.05 + 0.065383 = 0.115383;
        #           LCL = 0.05 − 0.065383 < 0 → 0
        (100, 0.021794, 0.115383, 0.0),
        # n = 400:  σ = √(0.0475/400)  = 0.010897; UCL = 0.05 + 0.032692 = 0.082692;
        #           LCL = 0.05 − 0.032692 = 0.017308
        (400, 0.010897, 0.082692, 0.017308),
        # n = 2500: σ = √(0.0475/2500) = 0.004359; UCL = 0.05 + 0.013077 = 0.063077;
        #           LCL = 0.05 − 0.013077 = 0.036923
        (2500, 0.004359, 0.063077, 0.036923),
    ],
)
def test_limits_by_hand_with_varying_n(n: int, sigma: float, ucl: float, lcl: float) -> None:
    point = PChart(PChartConfig(center=0.05)).add(d=n // 20, n=n)
    assert point is not None
    assert point.center == 0.05
    assert point.sigma == pytest.approx(sigma, abs=1e-6)
    assert point.ucl == pytest.approx(ucl, abs=1e-6)
    assert point.lcl == pytest.approx(lcl, abs=1e-6)
    assert point.p == 0.05 and point.z == 0.0
    assert point.phase == "II" and point.method == "standard" and point.sigma_z is None


def test_center_is_weighted_not_mean_of_p() -> None:
    # p = 1/10 = 0.10 and 50/1000 = 0.05: mean of p_i = 0.075,
    # Σd/Σn = 51/1010 = 0.050495 (the big subgroup dominates)
    chart = PChart(PChartConfig(baseline_n=2, trim_phase1=False))
    feed(chart, [(1, 10), (50, 1000)])
    assert chart.center == pytest.approx(51 / 1010)
    assert chart.center != pytest.approx(0.075)


# --- Western Electric rules -------------------------------------------------------
# Configured p̄ = 0.5, n = 100: σ = √(0.25/100) = 0.05, so d = 50 + 5·z gives the
# point at z (z = 2.2 → d = 61). Each case lists the z of a short sequence, oldest
# first, and the rules the *last* point violates.

CASES = [
    # +3σ ──────●──     one point above 3σ
    pytest.param([3.2], ("WE1",), id="WE1-above"),
    pytest.param([-3.2], ("WE1",), id="WE1-below"),
    pytest.param([2.8], (), id="WE1-not-inside-3sigma"),
    # +2σ ──●─────●──   2 of 3 beyond +2σ, current one of them
    #  p̄  ─────●─────
    pytest.param([2.2, 0.2, 2.2], ("WE2",), id="WE2-above"),
    pytest.param([-2.2, -2.2], ("WE2",), id="WE2-below-two-points"),
    # +2σ ──●────────
    # −2σ ────────●──   beyond 2σ, but on opposite sides
    pytest.param([2.2, 0.2, -2.2], (), id="WE2-not-opposite-sides"),
    # +2σ ──●──●─────
    #  p̄  ────────●──   current point not beyond 2σ
    pytest.param([2.2, 2.2, 0.2], (), id="WE2-not-current-inside"),
    # 2 beyond 2σ but 4 points apart: no 3-point window holds both
    pytest.param([2.2, 0.2, 0.2, 2.2], (), id="WE2-not-too-far-apart"),
    # +1σ ──●──●─────●──●──   4 of 5 beyond +1σ, current one of them
    #  p̄  ────────●────────
    pytest.param([1.2, 1.2, 0.2, 1.2, 1.2], ("WE3",), id="WE3-above"),
    pytest.param([0.2, -1.2, -1.2, -1.2, -1.2], ("WE3",), id="WE3-below"),
    pytest.param([1.2, 1.2, 1.2, 1.2, 0.2], (), id="WE3-not-current-inside"),
    # +1σ ─────●──────●──●──
    # −1σ ──●─────●──────────   beyond 1σ 5 times, but only 3 on the same side
    pytest.param([-1.2, 1.2, -1.2, 1.2, 1.2], (), id="WE3-not-same-side"),
    #  p̄  ──●──●──●──●──●──●──●──●──  eight just above (z = 0.2)
    pytest.param([0.2] * 8, ("WE4",), id="WE4-above"),
    pytest.param([-0.2] * 8, ("WE4",), id="WE4-below"),
    pytest.param([0.2] * 7, (), id="WE4-not-only-seven"),
    pytest.param([-0.2] + [0.2] * 7, (), id="WE4-not-same-side"),
    # a point exactly on the centre line is on neither side
    pytest.param([0.0] + [0.2] * 7, (), id="WE4-not-on-centre"),
    pytest.param([0.2] * 7 + [3.2], ("WE1", "WE4"), id="WE1-and-WE4"),
    pytest.param([1.2, 1.2, 1.2, 2.2, 3.2], ("WE1", "WE2", "WE3"), id="WE1-WE2-WE3-in-order"),
]


@pytest.mark.parametrize(("zs", "expected"), CASES)
def test_western_electric_rules(zs: list[float], expected: tuple[str, ...]) -> None:
    chart = PChart(PChartConfig(center=0.5))
    points = feed(chart, [(round(50 + 5 * z), 100) for z in zs])
    assert points[-1].z == pytest.approx(zs[-1])
    assert points[-1].violations == expected


def test_rules_skip_points_with_zero_sigma() -> None:
    # p̄ = 0: σ = 0, limits collapse onto 0, z undefined; no crash, no rule
    chart = PChart(PChartConfig(center=0.0))
    point = chart.add(3, 100)
    assert point is not None
    assert (point.sigma, point.ucl, point.lcl, point.z) == (0.0, 0.0, 0.0, None)
    assert point.violations == ()
    # a learnt p̄ = 1 behaves the same
    chart = PChart(PChartConfig(baseline_n=3, mode="auto"))
    points = feed(chart, [(10, 10), (20, 20), (5, 5), (4, 5)])
    assert chart.center == 1.0
    assert all(p.sigma == 0.0 and p.z is None and p.violations == () for p in points)
    assert points[-1].ucl == points[-1].lcl == 1.0


# --- phase I → phase II -------------------------------------------------------------


def test_phase_one_runs_on_the_baseline_so_far_then_freezes() -> None:
    chart = PChart(PChartConfig(baseline_n=4, trim_phase1=False))
    assert chart.phase == "I" and chart.center is None
    baseline = [(2, 100), (6, 200), (3, 100), (5, 200)]
    points = feed(chart, baseline)
    assert [p.phase for p in points] == ["I", "I", "I", "II"]
    # running p̄ including the point itself: 2/100, 8/300, 11/400; frozen 16/600
    assert [p.center for p in points] == pytest.approx([0.02, 8 / 300, 11 / 400, 16 / 600])
    assert chart.phase == "II" and chart.center == pytest.approx(16 / 600)
    frozen = chart.center
    # the process drifts to 10%: the centre line stays where phase I put it
    drift = feed(chart, [(10, 100)] * 10)
    assert chart.center == frozen
    assert all(p.center == frozen and p.phase == "II" for p in drift)
    assert all("WE1" in p.violations for p in drift)


def test_trimming_drops_an_outlier_from_the_baseline() -> None:
    # nine subgroups at 2% and one at 8%, n = 1000:
    # p̄₀ = 260/10000 = 0.026, σ = √(0.026·0.974/1000) = 0.005032, UCL = 0.041097
    # 0.08 > UCL → dropped; p̄ = 180/9000 = 0.02
    baseline = [(20, 1000)] * 4 + [(80, 1000)] + [(20, 1000)] * 5
    trimmed = PChart(PChartConfig(baseline_n=10))
    untrimmed = PChart(PChartConfig(baseline_n=10, trim_phase1=False))
    feed(trimmed, baseline)
    feed(untrimmed, baseline)
    assert trimmed.center == pytest.approx(0.02) and trimmed.trimmed == 1
    assert untrimmed.center == pytest.approx(0.026) and untrimmed.trimmed == 0


@pytest.mark.parametrize(
    ("trim", "center", "violations"), [(True, 0.25 / 8, ()), (False, 0.25 / 9, ("WE4",))]
)
def test_rules_judge_recent_points_against_the_current_center(
    trim: bool, center: float, violations: tuple[str, ...]
) -> None:
    # n = 1000, baseline_n = 9: one empty subgroup, seven at 3%, one at 4%
    #
    #   4%  ──────────────────────────●──   point 9 (freezes the chart)
    #   3%  ─────●──●──●──●──●──●──●─────   points 2..8, each above the running
    #                                       p̄ (1.5% → 2.6%) when it arrived
    #   0%  ──●──────────────────────────   point 1
    #
    # At freeze p̄₀ = 250/9000 = 0.02778, σ = 0.00520, LCL = 0.01218: point 1 is
    # beyond it. Trimmed, p̄ = 250/8000 = 0.03125: points 2..8 are now *below*
    # the centre, so no WE4 on point 9 (z frozen at arrival would have said WE4).
    # Untrimmed, points 2..9 are all above 0.02778: WE4 on point 9.
    chart = PChart(PChartConfig(baseline_n=9, trim_phase1=trim))
    points = feed(chart, [(0, 1000)] + [(30, 1000)] * 7 + [(40, 1000)])
    assert chart.center == pytest.approx(center)
    assert all(p.z is not None and p.z > 0 for p in points[1:8])
    assert points[-1].phase == "II" and points[-1].violations == violations


def test_laney_phase_one_uses_the_running_sigma_z() -> None:
    chart = PChart(PChartConfig(mode="laney", baseline_n=5))
    first, second = feed(chart, [(20, 1000), (40, 1000)])
    # one point: no moving range yet, σ_z = 1
    assert first.method == "laney" and first.sigma_z == 1.0
    # p̄ = 60/2000 = 0.03, σ_i = √(0.03·0.97/1000) = 0.005394;
    # z = ±0.01/0.005394 = ±1.8538, one moving range 3.7076, σ_z = 3.7076/1.128 = 3.2869
    assert second.sigma_z == pytest.approx(3.2869, abs=1e-4)
    assert second.sigma == pytest.approx(0.005394 * 3.2869, rel=1e-3)


def test_configured_center_starts_in_phase_two() -> None:
    chart = PChart(PChartConfig(center=0.1, mode="auto"))
    assert chart.phase == "II" and chart.center == 0.1
    points = feed(chart, [(30, 100)] * 3)
    assert all(p.center == 0.1 and p.method == "standard" for p in points)
    with pytest.raises(ValueError, match="laney"):
        PChartConfig(center=0.1, mode="laney")


# --- Laney p′ ------------------------------------------------------------------------


def overdispersed(rng: np.random.Generator, k: int) -> list[tuple[int, int]]:
    # n ≈ 10,000; the true p wanders between 2% and 8% from subgroup to subgroup,
    # far more than binomial noise (σ_i ≈ 0.0022 at p = 5%)
    n = rng.integers(9_000, 11_000, size=k)
    d = rng.binomial(n, rng.uniform(0.02, 0.08, size=k))
    return list(zip(d.tolist(), n.tolist(), strict=True))


def binomial(rng: np.random.Generator, k: int) -> list[tuple[int, int]]:
    n = rng.integers(9_000, 11_000, size=k)
    return list(zip(rng.binomial(n, 0.05).tolist(), n.tolist(), strict=True))


def we1_share(points: list[PChartPoint]) -> float:
    phase2 = [p for p in points if p.phase == "II"]
    return sum("WE1" in p.violations for p in phase2) / len(phase2)


def test_laney_on_overdispersed_data() -> None:
    data = overdispersed(np.random.default_rng(SEED), 100)
    standard = PChart(PChartConfig(mode="standard"))
    laney = PChart(PChartConfig(mode="laney"))
    auto = PChart(PChartConfig(mode="auto"))
    assert we1_share(feed(standard, data)) > 0.5
    assert we1_share(laney_points := feed(laney, data)) < 0.1
    assert laney.sigma_z is not None and laney.sigma_z > 1.5
    assert all(p.method == "laney" and p.sigma_z == laney.sigma_z for p in laney_points[19:])
    feed(auto, data)
    assert auto.method == "laney" and auto.sigma_z == pytest.approx(laney.sigma_z)


def test_auto_picks_standard_on_binomial_data() -> None:
    data = binomial(np.random.default_rng(SEED), 60)
    auto = PChart(PChartConfig(mode="auto"))
    points = feed(auto, data)
    assert auto.method == "standard" and auto.sigma_z is None
    assert all(p.method == "standard" for p in points[19:])
    assert we1_share(points) < 0.05


def test_laney_sigma_z_matches_numpy() -> None:
    data = overdispersed(np.random.default_rng(SEED + 1), 30)
    chart = PChart(PChartConfig(mode="laney", trim_phase1=False))
    feed(chart, data)
    d, n = np.array(data[:20], dtype=float).T
    center = d.sum() / n.sum()
    z = (d / n - center) / np.sqrt(center * (1 - center) / n)
    assert chart.center == pytest.approx(center, rel=1e-12)
    assert chart.sigma_z == pytest.approx(np.abs(np.diff(z)).mean() / 1.128, rel=1e-12)


# --- counts and inputs ---------------------------------------------------------------


def test_low_count_flag() -> None:
    # p̄ = 0.01: n·p̄ = 100·0.01 = 1 < 5 → flagged; 1000·0.01 = 10 → fine
    chart = PChart(PChartConfig(center=0.01))
    small, large = feed(chart, [(1, 100), (10, 1000)])
    assert small.low_count and not large.low_count


def test_empty_subgroup_is_skipped_and_bad_counts_raise() -> None:
    chart = PChart(PChartConfig(baseline_n=3))
    feed(chart, [(2, 100)])
    before = chart.to_dict()
    assert chart.add(0, 0) is None
    with pytest.raises(ValueError):
        chart.add(101, 100)
    with pytest.raises(ValueError):
        chart.add(-1, 100)
    with pytest.raises(ValueError):
        chart.add(0, -5)
    assert chart.to_dict() == before


# --- small subgroups: exact binomial limits ------------------------------------------
# X ~ Binomial(n, p̄); α = Φ(−3) = 0.0013499 in each tail. The references below
# sum the pmf with exact fractions, independently of streams.pchart.

ALPHA = Fraction(NormalDist().cdf(-3.0))
HOUR = Window(0, 3_600_000_000, "1h")
RECORD_FIELDS = {
    "kpi", "chart", "window", "start", "end", "d", "n", "p", "center", "ucl", "lcl", "sigma",
    "z", "phase", "method", "sigma_z", "violations", "low_count",
}  # fmt: skip


def exact_cdfs(n: int, center: float) -> Iterator[Fraction]:
    """P(X <= k) for k = 0, 1, …, n in exact rational arithmetic (0 < p̄ < 1):
    P(X = 0) = (1 − p̄)^n, P(X = k + 1) = P(X = k)·(n − k)/(k + 1)·p̄/(1 − p̄)."""
    p = Fraction(center)
    pmf = (1 - p) ** n
    cdf = pmf
    yield cdf
    for k in range(n):
        pmf = pmf * (n - k) * p / ((k + 1) * (1 - p))
        cdf += pmf
        yield cdf


def exact_cdf(k: int, n: int, center: float) -> Fraction:
    return next(itertools.islice(exact_cdfs(n, center), k, None))


def brute_limits(n: int, center: float) -> tuple[float, float]:
    """UCL = u/n, u the smallest count with P(X > u) < α; LCL = l/n, l the smallest
    count with P(X <= l) >= α (the smallest count not below the limit)."""
    cdfs = list(itertools.takewhile(lambda c: 1 - c >= ALPHA, exact_cdfs(n, center)))
    u = len(cdfs)  # the first k with P(X > k) < α (n when none is before)
    lo = next(k for k, c in enumerate(cdfs) if c >= ALPHA)
    return u / n, lo / n


def normal_z(d: int, n: int, center: float, sigma_z: float = 1.0) -> float:
    """What the chart said before small subgroups were judged exactly."""
    return (d / n - center) / (math.sqrt(center * (1 - center) / n) * sigma_z)


@pytest.mark.parametrize(
    ("mode", "baseline", "center"),
    [
        # 20 hours of 1000 units at 2% scrap: p̄ = 0.02; n·p̄ = 27·0.02 = 0.54
        pytest.param("standard", [(20, 1000)] * 20, 0.02, id="standard-p0.02"),
        # 3.9%, 4.1%, ...: p̄ = 0.04, moving ranges tiny, σ_z = 0.2861 < 1 narrows
        # the Laney limits; n·p̄ = 27·0.04 = 1.08
        pytest.param("laney", [(39, 1000), (41, 1000)] * 10, 0.04, id="laney-p0.04"),
    ],
)
def test_small_subgroup_is_judged_exactly_not_by_the_normal_approximation(
    mode: str, baseline: list[tuple[int, int]], center: float
) -> None:
    # A short hour: 27 units, 3 scrapped (p = 0.111). The normal approximation
    # put it beyond 3σ (critical WE1): z = 3.38 at p̄ = 0.02, 6.59 in Laney p′.
    chart = PChart(PChartConfig(mode=mode))
    feed(chart, baseline)
    assert chart.center == pytest.approx(center)
    assert normal_z(3, 27, center, chart.sigma_z or 1.0) > 3
    point = chart.add(3, 27)
    assert point is not None and point.low_count and point.limits == "binomial"
    # exactly: P(X >= 3) = 0.01635 (p̄ 0.02), 0.09180 (p̄ 0.04), far above α
    tail = 1 - exact_cdf(2, 27, center)
    assert float(tail) == pytest.approx({0.02: 0.016352, 0.04: 0.091800}[center], abs=1e-6)
    assert point.z == pytest.approx(-NormalDist().inv_cdf(float(tail)), rel=1e-9)
    assert point.z is not None and 1.3 < point.z < 2.2
    assert point.violations == ()
    assert (point.ucl, point.lcl) == pytest.approx(brute_limits(27, center))
    assert point.p < point.ucl
    # the exact limits ignore σ_z: the plain binomial σ_i is reported
    assert point.sigma == pytest.approx(math.sqrt(center * (1 - center) / 27))
    record = pchart_record("scrap/plant-1/line-1", HOUR, point)
    assert record["limits"] == "binomial" and record["violations"] == []
    assert RECORD_FIELDS | {"limits"} <= set(record)  # every field it had, and the new one


def test_min_np_zero_keeps_the_normal_approximation() -> None:
    point = PChart(PChartConfig(center=0.02, min_np=0)).add(3, 27)
    assert point is not None and point.limits == "normal" and point.violations == ("WE1",)
    assert point.z == pytest.approx(normal_z(3, 27, 0.02))


@pytest.mark.parametrize(
    ("n", "center"),
    [
        (27, 0.04),  # n·p̄ = 1.08: UCL = 5/27, no count below the lower limit
        (40, 0.9),  # n·(1 − p̄) = 4: no count above, LCL > 0 (P(X = 40) = 0.0148)
        (200, 0.01),  # n·p̄ = 2
        (2000, 0.001),  # n·p̄ = 2; n > 1000 takes the first pmf term from lgamma
    ],
)
def test_exact_limits_match_a_brute_force_sum_of_the_pmf(n: int, center: float) -> None:
    ucl, lcl = brute_limits(n, center)
    point = PChart(PChartConfig(center=center)).add(round(n * center), n)
    assert point is not None and point.limits == "binomial"
    assert point.ucl == pytest.approx(ucl, rel=1e-12)
    assert point.lcl == pytest.approx(lcl, rel=1e-12)
    assert lcl <= center <= ucl
    # the tails themselves, at and around both limits
    u, lo = round(ucl * n), round(lcl * n)
    cdf = list(itertools.islice(exact_cdfs(n, center), u + 2))
    for d in {0, u, u + 1, lo - 1, lo} & set(range(len(cdf))):
        assert binomial_cdf(d, n, center) == pytest.approx(float(cdf[d]), rel=1e-9)
        sf = 1 - cdf[d - 1] if d > 0 else Fraction(1)
        assert binomial_sf(d, n, center) == pytest.approx(float(sf), rel=1e-9)


def test_known_exact_limit_n27_p004() -> None:
    # P(X >= 5) = 0.003954 is not below α, P(X >= 6) = 0.000586 is:
    # UCL = 5/27 = 0.185185 (normal: 0.04 + 3·0.037712 = 0.153137)
    assert float(1 - exact_cdf(4, 27, 0.04)) == pytest.approx(0.003954, abs=1e-6)
    assert float(1 - exact_cdf(5, 27, 0.04)) == pytest.approx(0.000586, abs=1e-6)
    chart = PChart(PChartConfig(center=0.04))
    five, six = feed(chart, [(5, 27), (6, 27)])
    assert five.ucl == six.ucl == pytest.approx(5 / 27)
    assert five.lcl == 0.0
    assert normal_z(5, 27, 0.04) > 3  # the normal approximation would have said WE1
    assert five.z == pytest.approx(2.656, abs=1e-3) and "WE1" not in five.violations
    assert six.z == pytest.approx(3.246, abs=1e-3) and "WE1" in six.violations


def test_alert_severity_follows_the_exact_judgement() -> None:
    chart = PChart(PChartConfig(center=0.04))
    five, six = feed(chart, [(5, 27), (6, 27)])
    # first 5 of 27: beyond the 2σ zone (z = 2.66), nothing else: no alert
    assert five.violations == ()
    # then 6 of 27: beyond the exact UCL (and 2 of 3 beyond 2σ)
    assert six.violations == ("WE1", "WE2")
    alert = pchart_alert("scrap/plant-1/line-1", HOUR, six)
    assert alert["severity"] == "critical" and alert["limits"] == "binomial"
    assert alert["limit"] == pytest.approx(5 / 27) and alert["value"] == pytest.approx(6 / 27)
    # two points of 5 of 27: a WE2 only, from exact tails: a warning
    chart = PChart(PChartConfig(center=0.04))
    _, again = feed(chart, [(5, 27), (5, 27)])
    assert again.violations == ("WE2",)
    assert pchart_alert("scrap/plant-1/line-1", HOUR, again)["severity"] == "warning"


def test_large_subgroup_keeps_normal_limits_and_numbers() -> None:
    # p̄ = 0.02, n = 1000: n·p̄ = 20 → normal; σ = √(0.0196/1000) = 0.0044272,
    # UCL = 0.02 + 0.0132816 = 0.0332816, LCL = 0.0067184; d = 35: z = 3.388
    point = PChart(PChartConfig(center=0.02)).add(35, 1000)
    assert point is not None and point.limits == "normal" and not point.low_count
    assert point.sigma == pytest.approx(0.0044272, abs=1e-7)
    assert (point.ucl, point.lcl) == pytest.approx((0.0332816, 0.0067184), abs=1e-7)
    assert point.z == pytest.approx(normal_z(35, 1000, 0.02)) and point.violations == ("WE1",)
    assert pchart_alert("scrap/plant-1/line-1", HOUR, point)["limits"] == "normal"
    # n·p̄ = 5 exactly is enough; just below it is not
    at_five, below = feed(PChart(PChartConfig(center=0.05)), [(5, 100), (5, 99)])
    assert (at_five.limits, below.limits) == ("normal", "binomial")


def test_laney_keeps_widened_normal_limits_for_large_subgroups() -> None:
    chart = PChart(PChartConfig(mode="laney"))
    feed(chart, [(39, 1000), (41, 1000)] * 10)
    assert chart.sigma_z is not None
    big = chart.add(40, 1000)
    assert big is not None and big.limits == "normal"
    assert big.sigma == pytest.approx(math.sqrt(0.04 * 0.96 / 1000) * chart.sigma_z)


def test_nearly_all_conforming_side_is_judged_exactly_too() -> None:
    # p̄ = 0.97, n = 100: n·p̄ = 97 (not low_count) but n·(1 − p̄) = 3
    point = PChart(PChartConfig(center=0.97)).add(90, 100)
    assert point is not None and not point.low_count and point.limits == "binomial"
    assert (point.ucl, point.lcl) == pytest.approx(brute_limits(100, 0.97))
    # P(X <= 90) is below α: 90 of 100 is beyond the exact lower limit
    assert exact_cdf(90, 100, 0.97) < ALPHA
    assert point.p < point.lcl and "WE1" in point.violations


def test_we4_takes_the_side_of_the_centre_line() -> None:
    # p̄ = 0.03, n = 27: d = 1 is p = 0.037 > p̄, yet P(X >= 1) = 0.56 > ½, so
    # its probability-equivalent z is 0. Eight of them are still eight above.
    chart = PChart(PChartConfig(center=0.03))
    points = feed(chart, [(1, 27)] * 8)
    assert all(p.z == 0.0 and p.p > p.center for p in points)
    assert points[-2].violations == () and points[-1].violations == ("WE4",)


def test_rules_mix_normal_and_exact_points() -> None:
    # p̄ = 0.04: 2 of 3 beyond 2σ, one in a large subgroup (normal z = 2.42),
    # one in a small one (exact z = 2.66)
    chart = PChart(PChartConfig(center=0.04))
    big, small = feed(chart, [(55, 1000), (5, 27)])
    assert (big.limits, small.limits) == ("normal", "binomial")
    assert small.violations == ("WE2",)


@settings(max_examples=200, deadline=None)
@given(
    center=st.floats(0.0, 1.0),
    n=st.integers(1, 400),
    data=st.data(),
)
def test_exact_points_are_beyond_their_limits_exactly_on_we1(
    center: float, n: int, data: st.DataObject
) -> None:
    d = data.draw(st.integers(0, n))
    point = PChart(PChartConfig(center=center)).add(d, n)
    assert point is not None and 0.0 <= point.lcl <= point.center <= point.ucl <= 1.0
    if point.limits == "binomial" and point.z is not None:
        outside = point.p > point.ucl or point.p < point.lcl
        assert outside == ("WE1" in point.violations) == (abs(point.z) > 3)


# --- batch reference -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["standard", "laney"])
def test_incremental_limits_equal_batch_reference(mode: str) -> None:
    rng = np.random.default_rng(SEED)
    data = overdispersed(rng, 60)
    chart = PChart(PChartConfig(mode=mode, trim_phase1=False))
    points = feed(chart, data)
    d, n = np.array(data, dtype=float).T
    phase2 = slice(19, None)
    sigma, ucl, lcl = pchart_limits(d[phase2], n[phase2], chart.center, chart.sigma_z or 1.0)
    assert [p.sigma for p in points[phase2]] == pytest.approx(sigma, rel=1e-12)
    assert [p.ucl for p in points[phase2]] == pytest.approx(ucl, rel=1e-12)
    assert [p.lcl for p in points[phase2]] == pytest.approx(lcl, rel=1e-12)
    if mode == "standard":
        # phase I: each point against the cumulative Σd/Σn up to and including it
        running = np.cumsum(d[:19]) / np.cumsum(n[:19])
        sigma, ucl, lcl = pchart_limits(d[:19], n[:19], running)
        assert [p.center for p in points[:19]] == pytest.approx(running, rel=1e-12)
        assert [p.ucl for p in points[:19]] == pytest.approx(ucl, rel=1e-12)
        assert [p.lcl for p in points[:19]] == pytest.approx(lcl, rel=1e-12)


# --- properties ----------------------------------------------------------------------

subgroups = st.lists(
    st.integers(0, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    max_size=40,
)


@st.composite
def configs(draw: st.DrawFn) -> PChartConfig:
    center = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    modes = ["standard", "laney", "auto"] if center is None else ["standard", "auto"]
    return PChartConfig(
        baseline_n=draw(st.integers(1, 8)),
        center=center,
        mode=draw(st.sampled_from(modes)),
        trim_phase1=draw(st.booleans()),
    )


@settings(max_examples=300, deadline=None)
@given(config=configs(), data=subgroups)
def test_limits_bracket_the_center(config: PChartConfig, data: list[tuple[int, int]]) -> None:
    for p in feed(PChart(config), data):
        assert 0.0 <= p.lcl <= p.center <= p.ucl <= 1.0
        assert 0.0 <= p.p <= 1.0 and p.sigma >= 0.0


@settings(max_examples=300, deadline=None)
@given(config=configs(), data=subgroups, cut=st.integers(0, 40))
def test_snapshot_round_trip_mid_sequence(
    config: PChartConfig, data: list[tuple[int, int]], cut: int
) -> None:
    cut = min(cut, len(data))
    uninterrupted = feed(PChart(config), data)
    first = PChart(config)
    head = feed(first, data[:cut])
    state = json.loads(json.dumps(first.to_dict()))
    resumed = PChart.from_dict(config, state)
    assert resumed.to_dict() == first.to_dict()
    assert head + feed(resumed, data[cut:]) == uninterrupted
