"""Incremental snapshots (`agents.snapshot_rows`) through `EngineRunner`, with the
snapshot table a dict and `Wire` (tests.agents.fakes) journaling rows, deletes
and deliveries: only changed sections are written, a half-written snapshot
leaves the last one intact, an old slot snapshot still loads, and rows are
deleted only after the manifest that stops referencing them is delivered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from agents import snapshot_rows
from agents.engine_runner import EngineRunner
from agents.pipeline import Incoming, Shard, chunks, route_batch
from agents.read_back import ReadBack
from agents.runtime import Runtime
from agents.settings import load_settings
from streams.snapshot_sections import Tokened, bucket_of
from tests import eventfactory as ef
from tests.agents.fakes import Event, Message, Wire, settle, topic_holding
from tests.agents.test_engine_runner_unit import ALERTS, DEAD, ENGINE, WALL_US, WINDOWS

MACHINES = [f"press-{n}" for n in range(40)]


def forward(events: list[dict[str, Any]], offset: int) -> bytes:
    """The engine-topic message ingest makes of one machine-state message per event."""
    incoming = [
        Incoming("machine-state", 0, offset, e["machine"].encode(), orjson.dumps(e)) for e in events
    ]
    batch = route_batch(
        incoming,
        sources={"machine-state": "machine-state"},
        wall_us=WALL_US,
        announce=["machine-state:0"] if offset == 0 else None,
    )
    [(_, value)] = batch.forwards
    return value


# offset 0: every machine; offsets 1, 2 (10 s, 20 s later): two machines each.
MESSAGES = [
    forward([ef.state(ef.at(7), "running", machine=m) for m in MACHINES], 0),
    forward([ef.state(ef.at(7 + 10 / 3600), "down", machine=m) for m in MACHINES[3:5]], 1),
    forward([ef.state(ef.at(7 + 20 / 3600), "idle", machine=m) for m in MACHINES[7:9]], 2),
]


def make(wire: Wire, table: dict[str, str]) -> EngineRunner:
    settings = load_settings(None, worker={"snapshot_interval": 3600.0})
    runtime = Runtime(settings, embedded=False)

    async def nothing_sent_before(**_: Any) -> set[tuple[int, int]]:
        return set()

    def delete_row(partition: int, key: str) -> None:
        del table[key]
        wire.journal.append(("deleted", key))

    return EngineRunner(
        settings,
        runtime,
        table=table,
        set_row=lambda partition, key, value: wire.set_row(table, partition, key, value),
        send=wire.send,
        windows_topic=WINDOWS,
        alerts_topic=ALERTS,
        dead_topic=DEAD,
        read_back=ReadBack(topic_holding(dict(enumerate(MESSAGES))), runtime.skipped),
        lettered=nothing_sent_before,
        mark_read_back=wire.mark_read_back,
        delete_row=delete_row,
    )


def event(offset: int) -> Event:
    return Event(Message(ENGINE, 0, offset, b"events", MESSAGES[offset], 1.0))


async def apply_and_snapshot(runner: EngineRunner, wire: Wire, offset: int) -> None:
    await runner.step(event(offset), wire.ack)
    await runner.snapshot_and_ack(0, runner.runtime.shards[0], wire.ack)


def written(wire: Wire) -> list[str]:
    return [entry[1] for entry in wire.journal if entry[0] == "row"]


def sections_in(table: dict[str, str]) -> dict[str, bytes]:
    return snapshot_rows.read_sections(table, 0, table["0/manifest"])[0]


def test_a_second_snapshot_writes_only_the_sections_that_changed() -> None:
    table: dict[str, str] = {}
    wire = Wire()
    runner = make(wire, table)

    async def main() -> None:
        await apply_and_snapshot(runner, wire, 0)
        first_rows, first_sections = written(wire), sections_in(table)
        wire.journal.clear()
        await apply_and_snapshot(runner, wire, 1)  # press-3 and press-4 change
        changed = {
            name for name, where in sections_in(table).items() if first_sections.get(name) != where
        }
        rows = written(wire)
        assert rows[-1] == "0/manifest"
        # One row per changed section and per index naming it, the top
        # index, the manifest.
        families = {snapshot_rows.family(name) for name in changed}
        assert len(rows) == len(changed) + len(families) + 2 < len(first_rows) / 3
        # The two machines' timelines; the offset and clock; the engine's
        # head (watermark, stats); a run of the ids seen since (merged with the
        # run before it, as long) and the hour's list of runs; the slices of
        # event time the two machines' new pending events are in.
        buckets = {f"machines#{bucket_of(m, 64)}" for m in MACHINES[3:5]}
        ids = {name for name in changed if name.startswith("seen.hours")}
        assert len(ids) == 2 and "seen.hours.order" in ids
        slices = {name for name in changed if name.startswith("machines.pending#")}
        assert 1 <= len(slices) <= 2
        assert changed == buckets | {"shard", "head"} | ids | slices

    asyncio.run(main())


def test_the_restored_state_equals_the_saved_one() -> None:
    table: dict[str, str] = {}
    wire = Wire()
    runner = make(wire, table)

    async def main() -> None:
        for offset in range(3):
            await apply_and_snapshot(runner, wire, offset)

    asyncio.run(main())
    restored = make(Wire(), table).load_shard(0)
    assert restored.next_offset == 3
    assert restored.to_bytes() == runner.runtime.shards[0].to_bytes()


def test_rows_written_without_their_manifest_restore_the_previous_snapshot() -> None:
    """A crash between the rows and the manifest: the last complete snapshot.

    snapshot 1   rows .. manifest 1  delivered
    snapshot 2   rows ..             (killed: manifest 2 never written)
    restore      manifest 1 and its rows
    """
    table: dict[str, str] = {}
    wire = Wire()
    runner = make(wire, table)

    async def main() -> None:
        await apply_and_snapshot(runner, wire, 0)
        await apply_and_snapshot(runner, wire, 1)
        saved = runner.runtime.shards[0].to_bytes()
        manifest = table["0/manifest"]
        await runner.step(event(2), wire.ack)
        await asyncio.gather(*runner.save_shard(0, runner.runtime.shards[0]))
        table["0/manifest"] = manifest  # the new manifest's write dropped
        return saved

    saved = asyncio.run(main())
    restored = make(Wire(), table).load_shard(0)
    assert restored.next_offset == 2
    assert restored.to_bytes() == saved


def test_rows_left_by_a_dropped_snapshot_are_deleted_after_the_next_one() -> None:
    table: dict[str, str] = {}
    wire = Wire()
    runner = make(wire, table)

    async def main() -> None:
        await apply_and_snapshot(runner, wire, 0)
        manifest = table["0/manifest"]
        await runner.step(event(1), wire.ack)
        await asyncio.gather(*runner.save_shard(0, runner.runtime.shards[0]))
        table["0/manifest"] = manifest
        orphans = snapshot_rows.rows_of(table, 0) - referenced(table)
        assert orphans
        after = make(wire, table)  # restarted
        after.load_shard(0)
        await apply_and_snapshot(after, wire, 1)
        assert snapshot_rows.rows_of(table, 0) == referenced(table)

    asyncio.run(main())


def referenced(table: dict[str, str]) -> set[str]:
    return snapshot_rows.read_sections(table, 0, table["0/manifest"])[1]


def test_an_old_slot_snapshot_loads_and_its_rows_go_after_the_first_new_one() -> None:
    table: dict[str, str] = {}
    wire = Wire()
    runner = make(wire, table)

    async def main() -> None:
        for offset in range(2):
            await runner.step(event(offset), wire.ack)

    asyncio.run(main())
    old = runner.runtime.shards[0]
    # As a worker before sections saved it: the whole state in slot b.
    parts = chunks(old.to_bytes().decode(), size=4096)
    table.update({f"0/b/{i}": part for i, part in enumerate(parts)})
    table["0/manifest"] = f"b:{len(parts)}"
    upgraded = make(wire, table)
    restored = upgraded.load_shard(0)
    assert restored.next_offset == 2
    assert restored.to_bytes() == old.to_bytes()
    assert len(parts) > 1

    asyncio.run(apply_and_snapshot(upgraded, wire, 2))
    assert not any(key.startswith("0/b/") for key in table)
    assert snapshot_rows.rows_of(table, 0) == referenced(table)
    again = make(Wire(), table).load_shard(0)
    assert again.to_bytes() == upgraded.runtime.shards[0].to_bytes()


def test_unreferenced_rows_are_deleted_only_once_the_newer_manifest_is_delivered() -> None:
    table: dict[str, str] = {}
    wire = Wire()
    runner = make(wire, table)

    async def main() -> None:
        await apply_and_snapshot(runner, wire, 0)
        before = referenced(table)
        await runner.step(event(1), wire.ack)
        wire.held, wire.journal = True, []
        snapshot = asyncio.create_task(
            runner.snapshot_and_ack(0, runner.runtime.shards[0], wire.ack)
        )
        await settle(lambda: ("row", "0/manifest") in wire.journal, "the new manifest")
        await asyncio.sleep(0)
        assert "deleted" not in wire.kinds()  # the new manifest is not delivered yet
        assert before <= set(table)  # the last complete snapshot is whole
        wire.release()
        await snapshot
        kinds = wire.kinds()
        deleted = [entry[1] for entry in wire.journal if entry[0] == "deleted"]
        assert deleted and set(deleted) == before - referenced(table)
        manifest_delivered = wire.journal.index(("delivered", "row", "0/manifest"))
        assert kinds.index("deleted") > manifest_delivered

    asyncio.run(main())


@pytest.mark.parametrize("offsets", [1, 2, 3])
def test_sections_round_trip_a_shard(offsets: int) -> None:
    table: dict[str, str] = {}
    runner = make(Wire(), table)

    async def main() -> None:
        for offset in range(offsets):
            await runner.step(event(offset), Wire().ack)

    asyncio.run(main())
    shard = runner.runtime.shards[0]
    sections = shard.to_sections()
    again = Shard.from_sections(shard.config, 1, sections)
    assert again.to_bytes() == shard.to_bytes()


def test_a_tokened_section_seen_before_is_referenced_without_being_made() -> None:
    """A pending slice whose token the last plan saw, with its rows in the
    table, is neither made nor written again; a new token, or rows not in the
    table (a snapshot never delivered), make it again."""
    made: list[bytes] = []

    def sections(token: Any, data: bytes) -> list[tuple[str, Any]]:
        def make() -> bytes:
            made.append(data)
            return data

        return [("machines.pending#1/5", Tokened(make, token)), ("head", b"{}")]

    first = snapshot_rows.plan(0, sections((1, 5, 0), b"[1]"), set())
    assert made == [b"[1]"]
    second = snapshot_rows.plan(0, sections((1, 5, 0), b"[1]"), first.referenced, first.memo)
    assert made == [b"[1]"]  # not made again
    assert second.referenced == first.referenced
    assert [key for key, _ in second.rows] == ["0/manifest"]  # every other row is there
    third = snapshot_rows.plan(0, sections((1, 5, 9), b"[2]"), second.referenced, second.memo)
    assert made == [b"[1]", b"[2]"]
    assert len(third.rows) == 4  # the slice, its family's index, the top index, the manifest
    snapshot_rows.plan(0, sections((1, 5, 0), b"[1]"), set(), first.memo)
    assert made == [b"[1]", b"[2]", b"[1]"]  # the memo's rows are not in the table
