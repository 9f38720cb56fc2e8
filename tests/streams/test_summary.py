"""`kpimon replay`'s closing summary, built record by record.

A revision replaces the record it revises; records too old to be revised are
forgotten, so the summary's memory does not grow with the input.
"""

from __future__ import annotations

from streams.records import record_key
from streams.summary import Summary
from tests.eventfactory import at, order, shipment
from tests.streams.test_revisions import plant, run


def newest(records: list[dict]) -> list[dict]:
    return list({record_key(r): r for r in records}.values())


def test_revised_records_count_once_at_their_newest_revision() -> None:
    events = plant(hours=6)
    outage = [e for e in events if e["machine"] == "m1" and at(1) <= e["ts"] < at(4)]
    rest = [e for e in events if e not in outage]
    cut = next(i for i, e in enumerate(rest) if e["ts"] >= at(4 + 5 / 60))
    _, records, _ = run(rest[:cut] + outage + rest[cut:])
    assert any(r["revision"] > 0 for r in records)
    for window in ("1h", "1d"):
        streamed, final = Summary(window), Summary(window)
        for r in records:
            streamed.add(r)
        for r in newest(records):
            final.add(r)
        assert streamed.sums == final.sums
        assert streamed.text() == final.text()
        assert "plant-1/line-0" in streamed.text()


def test_keys_older_than_any_revision_are_forgotten_and_the_sums_kept() -> None:
    events = []
    for day in range(6):
        events += [order(f"O-{day}", at(1, day), at(5, day)), shipment(f"O-{day}", at(2, day))]
    _, records, _ = run(events)
    summary = Summary("1d", forget_after_us=86_400_000_000)
    for r in records:
        summary.add(r)
    summary._added = 4095  # the next add prunes
    summary.add(records[-1])
    assert len(summary._last) < len(newest(records))
    assert summary.sums["orders", "outbound", "A"]["decided"] == 6
