"""The machine path's spreading, a close at a time, in numpy columns.

At a close every machine's time up to the frontier becomes segments
(`MachineTimeline.attribute`); `streams.machine_side.spread` then adds each
segment to every window it overlaps, one Python step per (segment, window).
Here the segments of all machines go in as columns and each window kind
splits them at its edges at once:

    segment     [--------- running ---------)         start 30 s, end 150 s
    1m edges    |0         |60        |120       |180
    pieces         [  30 s  )[  60 s  )[  30 s )       k = start // size ... (end - 1) // size

The pieces are summed per (window, machine, bucket) and per (window,
machine, loss reason), the units and failures of markers per (window,
machine), and only then added to the engine's `OeeState`s, one Python step
per state touched instead of one per piece.

Exact by construction: every sum is an integer sum (int64, with the values
bounded so no sum can overflow), and states, windows and loss reasons are
created in the order the per-segment path first touches them, so the
engine's dicts (and so its snapshot and records) come out the same. A close
it cannot do exactly (a shift calendar, a site's local clock, a bucket or a
number out of range) returns False and the caller spreads segment by
segment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from streams.machine import Segment
from streams.oee import LOSS_STATES, STATE_BUCKETS, OeeState
from streams.tumbling import TumblingWindows, Window
from streams.windows import WindowSet

MachineKey = tuple[str, str, str]
BUCKET_CODE = {bucket: i for i, bucket in enumerate(STATE_BUCKETS)}
_FIELDS = (
    *(f"{bucket}_us" for bucket in STATE_BUCKETS),
    "ideal_us",
    "total",
    "good",
    "failures",
    "outside_running",
)
"""The order of `_apply`'s sums: `OeeState`'s number fields (a test keeps them in step)."""
_SAFE = 1 << 62  # a sum of values below _SAFE / n over n values fits int64


def plain_sizes(windows: WindowSet) -> tuple[tuple[int, str], ...] | None:
    """(size, label) of each window kind when all are epoch-aligned tumbling
    windows and there are no shifts; None otherwise (no columnar path)."""
    if windows.calendar is not None or not all(
        type(t) is TumblingWindows for t in windows.tumbling
    ):
        return None
    return tuple((t.size_us, t.label) for t in windows.tumbling)


def spread_columns(
    segments: Sequence[tuple[int, Segment]],
    mkeys: Sequence[MachineKey],
    sizes: tuple[tuple[int, str], ...],
    states_of: Callable[[Window], dict[MachineKey, OeeState]],
) -> bool:
    """Add `segments` ((machine index into `mkeys`, segment), in the order the
    per-segment path spreads them) to their windows' states (`states_of`: a
    window's states by machine, the engine's `oee[window]`). False, having
    changed nothing, when the segments are out of the columnar path's range."""
    rows = segment_rows(segments)
    return rows is not None and spread_rows(*rows, mkeys, sizes, states_of)


def segment_rows(
    segments: Sequence[tuple[int, Segment]],
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Segments as `spread_rows` takes them; None if a bucket or number is out of range."""
    time_rows: list[tuple[int, int, int, int, int, int]] = []  # g, m, start, end, bucket, reason
    marks: list[tuple[int, int, int, int, int, int, int, int]] = []  # g, m, ts, units..., failure
    reasons: dict[str, int] = {}
    for g, (m, seg) in enumerate(segments):
        if seg.start_us == seg.end_us:
            units = seg.units
            if units is not None:
                outside = units.total if units.outside_running else 0
                marks.append(
                    (g, m, seg.start_us, units.total, units.good, units.ideal_us, outside, 0)
                )
            elif seg.failure_at_start:
                marks.append((g, m, seg.start_us, 0, 0, 0, 0, 1))
            continue
        code = BUCKET_CODE.get(seg.bucket)
        if code is None:
            return None
        reason = -1  # not a loss: no reason kept
        if seg.bucket in LOSS_STATES:
            key = seg.reason or seg.bucket
            reason = reasons.setdefault(key, len(reasons))
        time_rows.append((g, m, seg.start_us, seg.end_us, code, reason))
    try:
        times = np.array(time_rows, dtype=np.int64).reshape(-1, 6)
        markers = np.array(marks, dtype=np.int64).reshape(-1, 8)
    except OverflowError:
        return None
    return times, markers, list(reasons)


def spread_rows(
    times: np.ndarray,
    markers: np.ndarray,
    reason_names: Sequence[str],
    mkeys: Sequence[MachineKey],
    sizes: tuple[tuple[int, str], ...],
    states_of: Callable[[Window], dict[MachineKey, OeeState]],
) -> bool:
    """Add a close's time rows (g, m, start, end, bucket, reason) and marker
    rows (g, m, ts, total, good, ideal_us, outside-running total, failures)
    to their windows' states. `g` orders the rows as the per-segment path
    would spread them, `m` indexes `mkeys`, `bucket` `STATE_BUCKETS`,
    `reason` `reason_names` (-1: none kept). False, having changed nothing,
    when the numbers are out of the columnar path's range."""
    n = len(times) + len(markers)
    if n == 0:
        return True
    bound = _SAFE // (3 * n * len(sizes) + 1)
    if markers.size and np.abs(markers[:, 3:7]).max() >= bound:
        return False
    if times.size and (np.abs(times[:, 2:4]).max() >= _SAFE // 4):
        return False
    pieces = [_split(times, size, z) for z, (size, _) in enumerate(sizes)]
    if not _codes_fit(pieces, markers, sizes, n_machines=len(mkeys)):
        return False
    points = [_mark(markers, size, z) for z, (size, _) in enumerate(sizes)]
    _apply(pieces, points, sizes, mkeys, list(reason_names), states_of)
    return True


def _split(times: np.ndarray, size: int, z: int) -> np.ndarray:
    """Rows (g, z, k, m, bucket, reason, piece_us) of the segments cut at one kind's edges."""
    start, end = times[:, 2], times[:, 3]
    k0, k1 = start // size, (end - 1) // size
    count = k1 - k0 + 1
    seg = np.repeat(np.arange(len(times)), count)
    offsets = np.cumsum(count) - count
    k = k0[seg] + (np.arange(len(seg)) - offsets[seg])
    window_start = k * size
    piece = np.minimum(end[seg], window_start + size) - np.maximum(start[seg], window_start)
    rows = times[seg]
    z_col = np.full(len(seg), z, dtype=np.int64)
    return np.column_stack((rows[:, 0], z_col, k, rows[:, 1], rows[:, 4], rows[:, 5], piece))


def _mark(markers: np.ndarray, size: int, z: int) -> np.ndarray:
    """Rows (g, z, k, m, total, good, ideal_us, outside, failures) of the markers' windows."""
    z_col = np.full(len(markers), z, dtype=np.int64)
    k = markers[:, 2] // size
    return np.column_stack((markers[:, 0], z_col, k, markers[:, 1], markers[:, 3:8]))


def _apply(
    pieces: list[np.ndarray],
    points: list[np.ndarray],
    sizes: tuple[tuple[int, str], ...],
    mkeys: Sequence[MachineKey],
    reason_names: list[str],
    states_of: Callable[[Window], dict[MachineKey, OeeState]],
) -> None:
    """Sum per state and add to the engine's states in first-touch order."""
    piece = np.concatenate(pieces)
    point = np.concatenate(points)
    # Touch order: segment, then window kind, then window (what `spread` does).
    head = np.concatenate((piece[:, :4], point[:, :4]))
    touch = np.lexsort((head[:, 2], head[:, 1], head[:, 0]))
    rank = np.empty(len(head), dtype=np.int64)
    rank[touch] = np.arange(len(head))
    # States: (z, k, m) as one number, numbered in first-touch order.
    k_min = int(head[:, 2].min())
    z_n, m_n = len(sizes), len(mkeys)
    code = ((head[:, 2] - k_min) * z_n + head[:, 1]) * m_n + head[:, 3]
    codes, group = np.unique(code, return_inverse=True)
    order = np.argsort(_first(group, rank, len(codes)), kind="stable")
    renumber = np.empty(len(order), dtype=np.int64)
    renumber[order] = np.arange(len(order))
    group, codes = renumber[group], codes[order]
    m_col = codes % m_n
    z_col = codes // m_n % z_n
    keys = np.column_stack((z_col, codes // m_n // z_n + k_min, m_col)).tolist()
    n_states, n_pieces = len(keys), len(piece)
    piece_group, point_group = group[:n_pieces], group[n_pieces:]
    buckets = np.zeros((n_states, len(STATE_BUCKETS)), dtype=np.int64)
    np.add.at(buckets, (piece_group, piece[:, 4]), piece[:, 6])
    units = np.zeros((n_states, 5), dtype=np.int64)
    np.add.at(units, point_group, point[:, 4:9])
    lossy = piece[:, 5] >= 0
    by_reason = _reason_sums(
        piece_group[lossy], piece[lossy, 5], piece[lossy, 6], rank[:n_pieces][lossy]
    )

    # One row of sums per state, in `OeeState`'s field order: the buckets
    # (`STATE_BUCKETS` is that order), then ideal_us, total, good, failures,
    # outside_running. A state made here is made with its sums.
    sums = np.concatenate((buckets, units[:, [2, 0, 1, 4, 3]]), axis=1).tolist()
    tables: dict[tuple[int, int], dict[MachineKey, OeeState]] = {}
    states = []
    for (z, k, m), row in zip(keys, sums, strict=True):
        table = tables.get((z, k))
        if table is None:
            size, label = sizes[z]
            table = tables[z, k] = states_of(Window(k * size, k * size + size, label))
        mkey = mkeys[m]
        state = table.get(mkey)
        if state is None:
            state = table[mkey] = OeeState(*row)
        else:
            _add_row(state, row)
        states.append(state)
    for i, reason, value in by_reason:
        held = states[i].downtime_by_reason_us
        name = reason_names[reason]
        held[name] = held.get(name, 0) + value


def _add_row(state: OeeState, row: list[int]) -> None:
    """Add a row of `_apply`'s sums to a state that holds some already."""
    running, idle, down, setup, planned_stop, no_data, ideal, total, good, failures, outside = row
    state.running_us += running
    state.idle_us += idle
    state.down_us += down
    state.setup_us += setup
    state.planned_stop_us += planned_stop
    state.no_data_us += no_data
    state.ideal_us += ideal
    state.total += total
    state.good += good
    state.failures += failures
    state.outside_running += outside


def _reason_sums(
    group: np.ndarray, reason: np.ndarray, value: np.ndarray, rank: np.ndarray
) -> list[tuple[int, int, int]]:
    """(state, reason, sum) per state and reason, each state's in first-touch order."""
    if not len(group):
        return []
    # (state, reason) as one number: sorting it sorts the pairs.
    n_reasons = int(reason.max()) + 1
    pairs, inverse = np.unique(group * n_reasons + reason, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros(len(pairs), dtype=np.int64)
    np.add.at(sums, inverse, value)
    states, reasons = pairs // n_reasons, pairs % n_reasons
    order = np.lexsort((_first(inverse, rank, len(pairs)), states))
    return list(
        zip(states[order].tolist(), reasons[order].tolist(), sums[order].tolist(), strict=True)
    )


def _codes_fit(
    pieces: list[np.ndarray],
    markers: np.ndarray,
    sizes: tuple[tuple[int, str], ...],
    n_machines: int,
) -> bool:
    """Whether (window, kind, machine) numbers as one int64 (`_apply`)."""
    ks = [p[:, 2] for p in pieces] + [markers[:, 2] // size for size, _ in sizes]
    k = np.concatenate(ks)
    span = int(k.max()) - int(k.min()) + 1
    return span * len(sizes) * n_machines < _SAFE


def _first(group: np.ndarray, rank: np.ndarray, n: int) -> np.ndarray:
    """Per group, the smallest rank of its rows (when it is first touched)."""
    firsts = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(firsts, group, rank)
    return firsts
