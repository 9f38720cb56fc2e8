"""`streams.pointlog`: a machine's kept events packed, and cut by hour for snapshots."""

from __future__ import annotations

import random

import pytest

from streams.pointlog import HOUR_US, PointLog, hour_runs


def _point(ts: int, seq: int) -> tuple:
    return (ts, seq, "running", None, ["count", "p", 3, 2, 1_500_000])


def _by_hour(points: list[tuple]) -> list[tuple[int, int, int]]:
    """What `hour_runs` must give, the slow way: consecutive points of one hour."""
    size = len(PointLog.of(points[:1]).raw) if points else 0
    runs: list[tuple[int, int, int]] = []
    for i, point in enumerate(points):
        hour = point[0] // HOUR_US
        if runs and runs[-1][0] == hour:
            runs[-1] = (hour, runs[-1][1], (i + 1) * size)
        else:
            runs.append((hour, i * size, (i + 1) * size))
    return runs


@pytest.mark.parametrize("seed", range(40))
def test_hour_runs_cut_the_records_at_every_hour(seed: int) -> None:
    rng = random.Random(seed)
    ts = rng.randrange(10**15)
    points = []
    for seq in range(rng.choice((0, 1, 2, 5, 50))):
        ts += rng.choice((0, 1, 10**6, HOUR_US // 3, HOUR_US, 5 * HOUR_US))
        points.append(_point(ts, seq))
    log = PointLog.of(points)
    assert log.hour_runs() == hour_runs(log.raw) == _by_hour(points)
    log.extend([_point(ts + HOUR_US, 999)])  # the log still grows after being looked at
    assert log.hour_runs() == _by_hour([*points, _point(ts + HOUR_US, 999)])


def test_hour_runs_refuse_what_is_not_whole_records_in_order() -> None:
    log = PointLog.of([_point(2 * HOUR_US, 1), _point(HOUR_US, 2)])
    assert hour_runs(log.raw) is None  # out of event-time order
    assert hour_runs(log.raw[:-1]) is None  # not whole records
    assert hour_runs(b"") == []
