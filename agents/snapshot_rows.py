"""An engine partition's snapshot as table rows: sections by content, one manifest.

Each section of a shard's state (`Shard.to_sections`) is stored under a key
holding its content hash, `<partition>/r/<hash>/<chunk>`, so a section
whose bytes did not change since the last snapshot is not written again,
and a row once written never changes. An index per family of sections
(`machines`, `closed`..., a row like the others) names each of its
sections' hash, a top index names each family's index, and the manifest row
`<partition>/manifest` names the top index: a snapshot where few sections
changed writes only their families' indexes again, not one naming the
thousands of sections a large state has. Switching the manifest is the commit point: a snapshot half
written (rows, no manifest) leaves the last manifest and every row it
references as they were. Rows no manifest references any more are deleted
only once a newer manifest is delivered.

A manifest of the older form, `<slot>:<count>` (the whole state in chunks
`<partition>/<slot>/<i>`), still loads.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.pipeline import chunks
from streams.snapshot_sections import Tokened

VERSION = 2


def manifest_key(partition: int) -> str:
    return f"{partition}/manifest"


def row_keys(partition: int, digest: str, count: int) -> list[str]:
    return [f"{partition}/r/{digest}/{i}" for i in range(count)]


Memo = dict[str, tuple[Any, str, int]]
"""section name -> (token, digest, chunks) of the `Tokened` sections a plan saw."""


@dataclass
class Planned:
    """The rows a snapshot writes (the manifest last), every row its manifest
    references (those not written are there already), and the `Memo` for the
    next plan."""

    rows: list[tuple[str, str]] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)
    memo: Memo = field(default_factory=dict)

    @property
    def bytes_written(self) -> int:
        return sum(len(value) for _, value in self.rows)


def plan(
    partition: int,
    sections: Iterable[tuple[str, bytes | Tokened]],
    present: Iterable[str],
    memo: Memo | None = None,
) -> Planned:
    """The rows to write for `sections` (name, bytes), given the rows
    `present` in the table (those the last delivered manifest references).
    Only the bytes of rows to write are kept, so `sections` may come one at
    a time (`Shard.iter_sections`).

    A `Tokened` section (its bytes made on demand) whose token the last
    plan's `memo` holds, with its rows present, is referenced without being
    made: a snapshot of a busy plant skips the slices no event changed.
    """
    planner = Planner(partition, present, memo)
    for name, data in sections:
        planner.add(name, data)
    return planner.finish()


class Planner:
    """`plan`, a section at a time: `add` each, then `finish` (a caller may
    return to its event loop between sections)."""

    def __init__(self, partition: int, present: Iterable[str], memo: Memo | None = None) -> None:
        self.partition = partition
        self.planned = Planned()
        self.memo = memo or {}
        self.have: dict[str, int] = {}  # digest -> chunks, of the rows in the table
        for key in present:
            digest, chunk = key.rsplit("/", 2)[1:]
            self.have[digest] = max(self.have.get(digest, 0), int(chunk) + 1)
        self.families: dict[str, dict[str, list[object]]] = {}

    def _rows(self, data: bytes) -> list[object]:
        planned, have = self.planned, self.have
        digest = hashlib.sha256(data).hexdigest()[:32]
        count = have.get(digest)
        if count is None:  # not in the table: decoded and cut only then
            parts = chunks(data.decode())
            count = have[digest] = len(parts)
            planned.rows.extend(zip(row_keys(self.partition, digest, count), parts, strict=True))
        planned.referenced.update(row_keys(self.partition, digest, count))
        return [digest, count]

    def add(self, name: str, data: bytes | Tokened) -> None:
        """One section: its rows, unless a known token says they are there."""
        self.families.setdefault(family(name), {})[name] = self._section(name, data)

    def _section(self, name: str, data: bytes | Tokened) -> list[object]:
        if not isinstance(data, Tokened):
            return self._rows(data)
        known = self.memo.get(name)
        if known is not None and known[0] == data.token and self.have.get(known[1]) == known[2]:
            self.planned.referenced.update(row_keys(self.partition, known[1], known[2]))
            self.planned.memo[name] = known
            return [known[1], known[2]]
        digest, count = where = self._rows(data.value())
        self.planned.memo[name] = (data.token, digest, count)  # type: ignore[assignment]
        return where

    def finish(self) -> Planned:
        """The index of every family, then the manifest, last."""
        index = {name: self._rows(orjson.dumps(where)) for name, where in self.families.items()}
        manifest = {"version": VERSION, "index": self._rows(orjson.dumps(index))}
        self.planned.rows.append((manifest_key(self.partition), orjson.dumps(manifest).decode()))
        return self.planned


def family(section: str) -> str:
    """`machines` of `machines#3` and `machines.order`; `closed` of `closed/[...]`."""
    return re.split(r"[#/]", section, maxsplit=1)[0].removesuffix(".order")


def is_sectioned(manifest: str) -> bool:
    """Whether `manifest` is of this form (else `<slot>:<count>`)."""
    return manifest.startswith("{")


def read_sections(
    table: Mapping[str, str], partition: int, manifest: str
) -> tuple[dict[str, bytes], set[str]]:
    """The sections `manifest` names, and every row key it references."""
    referenced: set[str] = set()

    def get(digest: str, count: int) -> bytes:
        keys = row_keys(partition, digest, count)
        referenced.update(keys)
        return "".join(table[key] for key in keys).encode()

    index = orjson.loads(get(*orjson.loads(manifest)["index"]))
    sections = {}
    for family_index in index.values():
        for name, where in orjson.loads(get(*family_index)).items():
            sections[name] = get(*where)
    return sections, referenced


def read_slot(table: Mapping[str, str], partition: int, manifest: str) -> tuple[bytes, set[str]]:
    """The whole state a `<slot>:<count>` manifest names, and its row keys."""
    slot, count = manifest.split(":")
    keys = [f"{partition}/{slot}/{i}" for i in range(int(count))]
    return "".join(table[key] for key in keys).encode(), set(keys)


def rows_of(table: Mapping[str, str], partition: int) -> set[str]:
    """Every snapshot row of `partition` in the table but its manifest."""
    prefix = f"{partition}/"
    return {key for key in table if key.startswith(prefix)} - {manifest_key(partition)}
