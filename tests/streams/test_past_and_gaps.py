"""Event time has a floor: one stray old stamp, or a long gap, costs events, not years.

Issue 14, finding 3: before the watermark existed, a single event stamped
1970 followed by a current one opened 56 years of windows. Now an event
older than `engine.past_horizon` behind the newest accepted event (or, in a
live worker before there is one, behind its clock) is refused
(`past_timestamp`), and a state is held at most `engine.state_hold_limit`
after its machine's last event, so no gap opens windows by the year.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine, Output
from streams.timeutil import to_us
from tests.agents.harness import ROOT
from tests.eventfactory import DAY, at, count, state

EPOCH = "1970-01-01T00:00:00Z"


def feed(engine: Engine, events: list[dict[str, Any]]) -> tuple[Output, list[str | None]]:
    out, verdicts = Output(), []
    for data in events:
        verdicts.append(engine.ingest(parse_event(data), out))
        if engine.watermark_us is not None:
            out.extend(engine.advance(engine.watermark_us))
    out.extend(engine.flush())
    return out, verdicts


def a_day(machine: str = "press-1") -> list[dict[str, Any]]:
    events = []
    for h in range(24):
        events.append(state(at(h), "running" if h % 3 else "down", machine=machine))
        events.append(count(at(h + 0.5), 100, 98, 2.0, machine))
    return events


def test_a_1970_event_behind_the_newest_is_refused_with_the_field_and_the_gap() -> None:
    out, verdicts = feed(Engine(), [*a_day(), state(EPOCH, "running", machine="stray")])
    assert verdicts[-1] == "past_timestamp"
    (rejected,) = out.rejected
    assert rejected["reason"] == "past_timestamp"
    assert (
        rejected["error"].startswith(f"ts: {EPOCH} is 20,") and "past_horizon" in rejected["error"]
    )
    assert all(r.get("machine") != "stray" for r in out.records)


def test_before_any_event_the_live_clock_is_the_reference() -> None:
    engine = Engine()
    engine.wall_us = to_us(DAY)  # a worker's clock, set by its shard
    out, verdicts = feed(engine, [state(EPOCH, "running", machine="stray"), *a_day()])
    assert verdicts[0] == "past_timestamp" and "the receiving clock" in out.rejected[0]["error"]
    assert set(verdicts[1:]) == {None}
    assert min(r["start"] for r in out.records) == at(0)  # no window before the day


def test_a_1970_event_first_in_a_replay_holds_its_state_a_week_not_56_years() -> None:
    # No clock in a replay: the first event is accepted. Its machine's state
    # holds for the state-hold limit, then nothing is attributed to it.
    out, verdicts = feed(Engine(), [state(EPOCH, "running", machine="stray"), *a_day()])
    assert set(verdicts) == {None}
    stray = [r for r in out.records if r.get("machine") == "stray"]
    assert max(r["end"] for r in stray) == "1970-01-08T00:00:00Z"
    assert sum(r["running_s"] for r in stray if r["window"] == "1d") == 7 * 86_400
    # A week of minute, hour and day windows (with their line and site), not
    # the 29 million minutes since 1970.
    assert len(out.records) < 4 * (7 * (1440 + 24 + 1) + len(a_day()) * 60)


def test_a_year_of_silence_opens_no_windows_past_the_hold_limit() -> None:
    before = a_day()
    after = [{**e, "ts": e["ts"].replace("2026-", "2027-")} for e in a_day()]
    out, _ = feed(Engine(), [*before, *after])
    days = sorted({r["start"] for r in out.records if r["window"] == "1d"})
    assert len(days) == 1 + 7 + 1  # the first day, the week held, the day a year later
    assert days[-1].startswith("2027-")


def test_without_a_hold_limit_a_state_holds_through_any_silence() -> None:
    events = [state(at(0), "planned_stop"), state(at(0, day=10), "running")]
    out, _ = feed(Engine(EngineConfig(state_hold_limit=None)), events)
    days = [r for r in out.records if r["window"] == "1d" and r.get("scope") == "machine"]
    assert len(days) == 10 and all(r["planned_stop_s"] == 86_400 for r in days)
    out, _ = feed(Engine(), events)  # the default: a week
    days = [r for r in out.records if r["window"] == "1d" and r.get("scope") == "machine"]
    assert len(days) == 7 and sum(r["planned_stop_s"] for r in days) == 7 * 86_400


def test_kpimon_replay_of_a_1970_line_first_runs_and_counts_the_later_refusal(
    tmp_path: Path,
) -> None:
    order = {
        "type": "order",
        "event_id": "o-1970",
        "ts": "1970-01-02T00:00:00Z",
        "order_id": "A-1",
        "direction": "outbound",
        "partner": "C-1",
        "segment": "A",
        "promised_at": "1970-01-03T00:00:00Z",
        "lines": [{"line_no": 1, "sku": "S-1", "qty": 5}],
    }
    lines = [state(EPOCH, "running", machine="stray"), *a_day(), order]
    path = tmp_path / "gap.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    proc = subprocess.run(
        [sys.executable, "-m", "agents.cli", "replay", str(path), "--rejects", str(tmp_path / "r")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rejected 1 past_timestamp" in proc.stderr
    (rejected,) = [json.loads(x) for x in (tmp_path / "r").read_text().splitlines()]
    assert "o-1970" in json.dumps(rejected)
    records = [json.loads(x) for x in proc.stdout.splitlines()]
    assert max(r["end"] for r in records if r.get("machine") == "stray") < "1970-01-09"
