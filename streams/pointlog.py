"""A machine's kept events packed into bytes: the revision history's memory.

The revision horizon keeps a day of every machine's attributed events (see
`streams.revisions`). As Python tuples that is about 480 bytes an event (the
tuple, its integers, the units list, a string per state); at 10,000 machines
sending an event a minute that is 7 GB. Packed as fixed-size records with the
strings (states, reasons, products) numbered per machine, it is 62 bytes:

    (ts_us, seq, state, reason, units)          a timeline point (`streams.machine`)
    <q ts> <q seq> <i state> <i reason> <B kind> <i product> <q total>
    <q good> <B good is None> <q ideal_us> <d ideal_cycle_s>

A point whose numbers do not fit (a count over 2^63) is kept as it is.
Points go in and come out as the tuples `MachineTimeline` works with, equal
to the ones put in.
"""

from __future__ import annotations

import base64
import itertools
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

_RECORD = struct.Struct("<qqiiBiqqBqd")
_TS = np.dtype({"names": ["ts"], "formats": ["<i8"], "offsets": [0], "itemsize": _RECORD.size})
_NONE = -1
_KINDS = (None, "count", "counter")
_OVERSIZED = 3  # the point is in `odd`, by sequence number


class PointLog:
    """Timeline points in event-time order, packed; appended at the end."""

    __slots__ = ("_data", "_names", "_codes", "odd", "touched")

    def __init__(self) -> None:
        self._data = bytearray()
        self._names: list[str] = []
        self._codes: dict[str, int] = {}
        self.odd: dict[int, tuple[Any, ...]] = {}  # seq -> a point too large to pack
        # Hours of event time (`HOUR_US`) whose points changed since a worker's
        # snapshot last looked (`streams.snapshot_sections.HistoryHours`).
        self.touched: set[int] = set()

    @classmethod
    def of(cls, points: Iterable[tuple[Any, ...]]) -> PointLog:
        log = cls()
        log.extend(points)
        return log

    def __len__(self) -> int:
        return len(self._data) // _RECORD.size

    @property
    def first_us(self) -> int | None:
        """Timestamp of the oldest point."""
        return _RECORD.unpack_from(self._data)[0] if self._data else None

    def extend(self, points: Iterable[tuple[Any, ...]]) -> None:
        points = list(points)
        if points:
            pack = self._pack
            self._data += b"".join([pack(point) for point in points])
            self.touched.update({point[0] // HOUR_US for point in points})

    @property
    def raw(self) -> bytes:
        """The packed records, as `to_dict` writes them (before base64)."""
        return bytes(self._data)

    def hour_runs(self) -> list[tuple[int, int, int]] | None:
        """`hour_runs` of the packed records, without copying them."""
        return hour_runs(self._data)

    def packed(self, start: int, end: int) -> str:
        """The base64 of the packed records' bytes `start:end` (`to_dict`'s form)."""
        return base64.b64encode(self._data[start:end]).decode()

    def points(self) -> list[tuple[Any, ...]]:
        """Every point, as the tuples put in."""
        return [self._unpack(fields) for fields in _RECORD.iter_unpack(self._data)]

    def take_before(self, ts_us: int) -> list[tuple[Any, ...]]:
        """Remove and return the points before `ts_us`."""
        size, data = _RECORD.size, self._data
        taken = 0
        while taken * size < len(data) and _RECORD.unpack_from(data, taken * size)[0] < ts_us:
            taken += 1
        head = [self._unpack(f) for f in _RECORD.iter_unpack(bytes(data[: taken * size]))]
        del data[: taken * size]
        for point in head:
            self.odd.pop(point[1], None)
            self.touched.add(point[0] // HOUR_US)
        return head

    # -- packing -------------------------------------------------------------
    def _code(self, name: str | None) -> int:
        if name is None:
            return _NONE
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self._names)
            self._names.append(name)
        return code

    def _pack(self, point: tuple[Any, ...]) -> bytes:
        ts, seq, state, reason, units = point
        try:
            if units is None:
                tail: tuple[Any, ...] = (0, _NONE, 0, 0, 0, 0, 0.0)
            elif units[0] == "count":
                _, product, total, good, ideal_us = units
                tail = (1, self._code(product), total, good, 0, ideal_us, 0.0)
            else:
                _, product, total, good, ideal_s = units
                tail = (2, self._code(product), total, good or 0, good is None, 0, ideal_s)
            return _RECORD.pack(ts, seq, self._code(state), self._code(reason), *tail)
        except struct.error:
            self.odd[seq] = point
            return _RECORD.pack(ts, seq, _NONE, _NONE, _OVERSIZED, _NONE, 0, 0, 0, 0, 0.0)

    def _unpack(self, fields: tuple[Any, ...]) -> tuple[Any, ...]:
        ts, seq, state, reason, kind, product, total, good, no_good, ideal_us, ideal_s = fields
        if kind == _OVERSIZED:
            return self.odd[seq]
        names = self._names
        head = (
            ts,
            seq,
            None if state == _NONE else names[state],
            None if reason == _NONE else names[reason],
        )
        if kind == 0:
            return (*head, None)
        if kind == 1:
            return (*head, ["count", names[product], total, good, ideal_us])
        return (*head, ["counter", names[product], total, None if no_good else good, ideal_s])

    # -- snapshots -----------------------------------------------------------
    def to_dict(self, packed: Any = None) -> dict[str, Any]:
        """JSON-safe data; `packed`, if given, stands for the base64 of the records."""
        return {
            "names": list(self._names),
            "packed": base64.b64encode(self._data).decode() if packed is None else packed,
            "odd": [list(p) for p in self.odd.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | list[Any]) -> PointLog:
        if isinstance(data, list):  # a snapshot from before packing: the points
            return cls.of(tuple(p) for p in data)
        log = cls()
        log._names = list(data["names"])
        log._codes = {name: i for i, name in enumerate(log._names)}
        log._data = bytearray(base64.b64decode(data["packed"]))
        log.odd = {p[1]: tuple(p) for p in data["odd"]}
        return log


HOUR_US = 3_600_000_000


def hour_runs(raw: bytes | bytearray) -> list[tuple[int, int, int]] | None:
    """(hour of event time, start, end) byte ranges of packed records (`PointLog`'s
    bytes), one per hour, in order; None when they are not whole records in
    event-time order (a snapshot then keeps them in one piece)."""
    size = _RECORD.size
    n, odd = divmod(len(raw), size)
    if odd:
        return None
    if not n:
        return []
    ts = np.frombuffer(raw, dtype=_TS, count=n)["ts"]
    if n > 1 and (ts[1:] < ts[:-1]).any():
        return None
    hours = ts // HOUR_US
    del ts  # a view of `raw`: a bytearray cannot grow while one is held
    first = int(hours[0])
    if first == int(hours[-1]):  # the usual case: one hour (numpy's r_ costs 9 us a call)
        return [(first, 0, n * size)]
    bounds = [0, *(np.flatnonzero(hours[1:] != hours[:-1]) + 1).tolist(), n]
    return [(int(hours[a]), a * size, b * size) for a, b in itertools.pairwise(bounds)]
