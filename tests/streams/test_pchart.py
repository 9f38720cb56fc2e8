"""Tests for the sequential p-chart (streams/pchart.py)."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.pchart
from streams.pchart import PChart, PChartConfig, PChartPoint, pchart_limits

SEED = 20261122


def feed(chart: PChart, subgroups) -> list[PChartPoint]:
    points = [chart.add(int(d), int(n)) for d, n in subgroups]
    return [p for p in points if p is not None]


def test_doctest() -> None:
    result = doctest.testmod(streams.pchart)
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
