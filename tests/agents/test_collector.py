"""The cyclic garbage collector's setting for a process holding a large state."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import collector

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_sets_the_thresholds_and_freezes_what_start_up_made(restored: None) -> None:
    made_at_start_up = [object() for _ in range(10)]
    collector.for_long_lived_state()
    assert gc.get_threshold() == (collector.YOUNG, collector.MIDDLE, collector.OLD)
    assert gc.get_freeze_count() >= len(made_at_start_up)


def test_the_thresholds_are_higher_than_pythons_defaults() -> None:
    # The point of the setting: far fewer walks over long-lived objects.
    assert collector.YOUNG > 700 and collector.MIDDLE >= 10 and collector.OLD >= 10


def test_kpimon_replay_sets_the_collector(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"type":"state","event_id":"e1","ts":"2026-11-02T06:00:00Z","site":"s",'
        '"line":"l","machine":"m","state":"running"}\n'
    )
    probe = (
        "import gc, sys; from agents.cli import main; code = main(['replay', sys.argv[1]]);"
        " print(gc.get_threshold(), gc.get_freeze_count() > 0, file=sys.stderr); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(events)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    wanted = f"{(collector.YOUNG, collector.MIDDLE, collector.OLD)} True"
    assert done.stderr.strip().splitlines()[-1] == wanted
