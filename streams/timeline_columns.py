"""A close's machine timelines attributed in numpy columns, all machines at once.

`MachineTimeline.attribute` walks a machine's due points one at a time and
yields a `Segment` object per stretch and marker. Here the due points of
every machine become columns (one Python pass: the state, reason and units
of each point as numbers), and the segments come from array operations:

    rows       v  p0 p1 p2 | v  p0 ...     v: the machine's carried state at its frontier
    state      forward fill over the points that carry one (counts carry none)
    segment    row j holds its state from its ts to row j+1's (the last: to the close)
    markers    a failure where the state turns down, units where a count was made

and the per-segment rules apply column-wise: the state hold limit, the
opt-in heartbeat (no_data past it), silence markers, `unknown` and no state
as no_data. Cumulative counters stay a Python step per reading
(`streams.machine.counter_units`, the same function the per-point path
uses), on a copy of the machine's counters. The rows come out numbered in
the order the per-point path yields its segments, which is what
`streams.columnar.spread_rows` needs to touch states in the same order.

Nothing changes until `Attributed.commit`: a caller whose spread falls out
of range goes back to the per-point path with every timeline as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.columnar import BUCKET_CODE
from streams.machine import HEARTBEAT, QUIET, MachineTimeline, counter_units
from streams.oee import LOSS_STATES

_NO_STATE = -1  # a point that carries no state (a count, a sign of life)
_NONE = -2  # the machine has no state yet
_ROW = 5  # sub-rows of a timeline row, in the order the per-point path yields them
_FAILURE, _UNITS, _SILENCE, _HELD, _NO_DATA = range(_ROW)


@dataclass
class Attributed:
    """A close's rows for `streams.columnar.spread_rows`, and the timelines' new state."""

    times: np.ndarray
    markers: np.ndarray
    reason_names: list[str]
    silences: list[tuple[int, int]]
    """(machine index, start) of each silence, in the per-point order."""
    taken: list[tuple[int, list[tuple[Any, ...]], dict[str, Any]]] = field(default_factory=list)
    """(machine index, the points taken, the timeline's new fields)."""

    def commit(self, timelines: Sequence[MachineTimeline]) -> None:
        """Move the timelines on as the per-point attribution would have."""
        for m, points, fields in self.taken:
            timeline = timelines[m]
            timeline.drop_due(len(points))
            for name, value in fields.items():
                setattr(timeline, name, value)


def attribute_columns(
    timelines: Sequence[MachineTimeline],
    heartbeats: Sequence[int | None],
    until_us: int,
    *,
    inclusive: bool,
    silence_us: int | None,
    modulus: int | None,
    hold_us: int | None,
) -> Attributed | None:
    """What `MachineTimeline.attribute` would yield for each of `timelines`
    (with its heartbeat from `heartbeats`), as rows; None when a state is
    not one the spread knows (the caller attributes point by point)."""
    codes: dict[str, int] = {}
    names: list[str] = []

    def code(name: str) -> int:
        found = codes.get(name)
        if found is None:
            found = codes[name] = len(names)
            names.append(name)
        return found

    ts_col: list[int] = []
    state_col: list[int] = []
    reason_col: list[int] = []
    seen_col: list[int] = []
    seen_known: list[bool] = []
    machine_col: list[int] = []
    units_at: list[int] = []
    units_col: list[tuple[int, int, int]] = []
    out = Attributed(np.empty(0), np.empty(0), [], [])
    for m, timeline in enumerate(timelines):
        frontier = timeline.due_frontier(until_us, inclusive=inclusive)
        if frontier is None:
            continue
        points = timeline.due(until_us, inclusive=inclusive)
        # The machine's row: its carried state at the frontier.
        ts_col.append(frontier)
        state_col.append(_NONE if timeline.state is None else code(timeline.state))
        reason_col.append(-1 if timeline.reason is None else code(timeline.reason))
        seen = timeline.last_seen_us
        seen_col.append(0 if seen is None else seen)
        seen_known.append(seen is not None)
        row = len(ts_col)
        counters = resets = wraps = None
        for ts, _, state, reason, units in points:
            ts_col.append(ts)
            state_col.append(_NO_STATE if state == HEARTBEAT else code(state))
            reason_col.append(-1 if reason is None else code(reason))
            if units is not None:
                if units[0] == "count":
                    made: tuple[int, int, int] | None = (units[2], units[3], units[4])
                else:
                    if counters is None:
                        counters, resets, wraps = dict(timeline.counters), 0, 0
                    made, how = counter_units(counters, ts, units, modulus)
                    resets += how == "reset"  # type: ignore[operator]
                    wraps += how == "wrap"  # type: ignore[operator]
                if made is not None:
                    units_at.append(row)
                    units_col.append(made)
            row += 1
        seen_col += ts_col[len(seen_col) :]
        seen_known += [True] * len(points)
        machine_col += [m] * (len(points) + 1)
        fields: dict[str, Any] = {"frontier_us": until_us}
        if points:
            fields["last_seen_us"] = points[-1][0]
        if counters is not None:
            fields.update(counters=counters, resets=timeline.resets + resets)
            fields["wraps"] = timeline.wraps + wraps
        out.taken.append((m, points, fields))
    if not ts_col:
        out.times, out.markers = np.empty((0, 6), np.int64), np.empty((0, 8), np.int64)
        return out
    if any(n not in BUCKET_CODE and n != "unknown" for n in _state_names(names, state_col)):
        return None
    try:
        ts = np.array(ts_col, dtype=np.int64)
        seen = np.array(seen_col, dtype=np.int64)
    except OverflowError:
        return None
    state = np.array(state_col, dtype=np.int64)
    reason = np.array(reason_col, dtype=np.int64)
    machine = np.array(machine_col, dtype=np.int64)
    n = len(ts)
    first = np.zeros(n, dtype=bool)
    first[np.flatnonzero(np.r_[True, machine[1:] != machine[:-1]])] = True
    has_seen = np.array(seen_known, dtype=bool)
    # State and reason after each row: the last row at or before it that carries one.
    carried = np.maximum.accumulate(np.where(state != _NO_STATE, np.arange(n), 0))
    held, held_reason = state[carried], reason[carried]
    last = np.r_[first[1:], True]
    end = np.where(last, until_us, np.r_[ts[1:], 0])

    named = {name: codes.get(name, -3) for name in ("down", "running", "unknown")}
    rows_g = np.arange(n, dtype=np.int64) * _ROW
    marks: list[np.ndarray] = []
    # A failure: a state point turning the machine down.
    before = np.r_[_NONE, held[:-1]]
    failed = ~first & (state == named["down"]) & (before != named["down"])
    idx = np.flatnonzero(failed)
    zeros = np.zeros(len(idx), dtype=np.int64)
    marks.append(
        np.column_stack(
            (rows_g[idx] + _FAILURE, machine[idx], ts[idx], zeros, zeros, zeros, zeros, zeros + 1)
        )
    )
    if units_at:
        idx = np.array(units_at, dtype=np.int64)
        made = np.array(units_col, dtype=np.int64).reshape(-1, 3)
        outside = np.where(held[idx] != named["running"], made[:, 0], 0)
        zeros = np.zeros(len(idx), dtype=np.int64)
        marks.append(
            np.column_stack((rows_g[idx] + _UNITS, machine[idx], ts[idx], made, outside, zeros))
        )

    # The held state from each row to the next (`MachineTimeline._hold`).
    start = ts
    if hold_us is not None:
        end = np.where(has_seen, np.minimum(end, seen + hold_us), end)
    valid = end > start
    no_state = (held == _NONE) | (held == named["unknown"])
    live = end
    hb = np.array([-1 if h is None else h for h in heartbeats], dtype=np.int64)[machine]
    beats = has_seen & (hb >= 0)
    if beats.any():
        live = np.where(beats, np.minimum(end, np.maximum(start, seen + hb)), end)
    stated = valid & ~no_state
    silences: list[np.ndarray] = []
    if silence_us is not None:
        at = seen + silence_us
        quiet = stated & has_seen & (held == named["running"]) & (start <= at) & (at < live)
        idx = np.flatnonzero(quiet)
        silences.append(np.column_stack((rows_g[idx] + _SILENCE, machine[idx], at[idx])))
    times: list[np.ndarray] = []
    idx = np.flatnonzero(stated & (live > start))
    loss = np.array([names[c] in LOSS_STATES if c >= 0 else False for c in range(len(names))])
    loss_of = np.r_[loss, False, False]  # codes -2 and -1 index the two extra entries
    bucket_of = np.array([BUCKET_CODE.get(name, -1) for name in names] + [-1, -1])
    s = held[idx]
    why = np.where(loss_of[s], np.where(held_reason[idx] >= 0, held_reason[idx], s), -1)
    times.append(
        np.column_stack(
            (rows_g[idx] + _HELD, machine[idx], start[idx], live[idx], bucket_of[s], why)
        )
    )
    no_data = BUCKET_CODE["no_data"]
    # no_data past the heartbeat, or the whole stretch without a known state.
    tail = stated & (end > live)
    lo = np.where(tail, live, start)
    idx = np.flatnonzero(tail | (valid & no_state))
    times.append(
        np.column_stack(
            (
                rows_g[idx] + _NO_DATA,
                machine[idx],
                lo[idx],
                end[idx],
                np.full(len(idx), no_data),
                np.full(len(idx), -1),
            )
        )
    )
    quiet_codes = [codes[name] for name in sorted(QUIET) if name in codes]
    lapse = tail & beats & (live == seen + hb) & ~np.isin(held, quiet_codes)
    idx = np.flatnonzero(lapse)
    silences.append(np.column_stack((rows_g[idx] + _NO_DATA, machine[idx], live[idx])))

    out.times = np.concatenate(times).astype(np.int64, copy=False)
    out.markers = np.concatenate(marks).astype(np.int64, copy=False)
    alerts = np.concatenate(silences)
    alerts = alerts[np.argsort(alerts[:, 0], kind="stable")]
    out.silences = [(int(m), int(at)) for _, m, at in alerts.tolist()]
    out.reason_names = names
    lasts = np.flatnonzero(last)
    for (_, _, fields), state_code, reason_code in zip(
        out.taken, held[lasts].tolist(), held_reason[lasts].tolist(), strict=True
    ):
        fields["state"] = names[state_code] if state_code >= 0 else None
        fields["reason"] = names[reason_code] if reason_code >= 0 else None
    return out


def _state_names(names: list[str], state_col: list[int]) -> set[str]:
    return {names[c] for c in set(state_col) if c >= 0}
