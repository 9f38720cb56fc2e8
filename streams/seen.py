"""The event ids the engine has applied, remembered for the revision horizon.

An event is a duplicate when its source and `event_id` were applied before
at the same hour of event time (a redelivery is the same event, timestamp
included). The ids of a day at 10,000 machines are millions, so each is kept
as an 8-byte BLAKE2b digest: in a set while its hour is open, then, once the
hour is behind the attributed time, in a sorted array (8 bytes an id instead
of about 190 for a tuple key, a dict entry and a heap entry).

    hours:   ... [08:00 packed] [09:00 packed] [10:00 set] [11:00 set]
    forget:  whole hours behind the horizon

A worker's snapshot takes the ids as runs (`runs`): sorted arrays that never
change, each with a serial number. The ids added since the last snapshot
become a new run, merged with the run before it while it is at least half
as long and shorter than `RUN_CAP` (so an hour has a few runs, and an id is
copied into a new run about log2(ids) times, at most log2(RUN_CAP)). A snapshot then writes the new runs only, not an open
hour's millions of ids each time.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
from array import array
from typing import Any

import numpy as np

from streams.timeutil import US

BUCKET_US = 3600 * US


def digest(source: str, event_id: str) -> int:
    """The id's 64-bit digest (stable across processes, unlike `hash`)."""
    text = f"{source}\x00{event_id}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


Run = tuple[int, np.ndarray]
"""(serial, sorted unique uint64 ids): a run's ids never change; serials are
unique in the process."""

_SERIALS = itertools.count()

RUN_CAP = 1 << 18
"""A run this long is not merged again: a snapshot rewrites at most about
twice this many ids (4 MiB of base64) of an hour at once."""


class SeenIds:
    """Event-id digests by hour of event time."""

    __slots__ = ("_open", "_packed", "_runs", "_fresh")

    def __init__(self) -> None:
        self._open: dict[int, set[int]] = {}
        self._packed: dict[int, array[int]] = {}  # sorted
        # Not part of the state: how the last `runs` cut each hour, and the
        # ids of an open hour added since.
        self._runs: dict[int, list[Run]] = {}
        self._fresh: dict[int, array[int]] = {}

    def __len__(self) -> int:
        return sum(map(len, self._open.values())) + sum(map(len, self._packed.values()))

    def __contains__(self, item: tuple[int, int]) -> bool:
        """`(digest, ts_us) in seen`."""
        key, ts_us = item
        hour = ts_us // BUCKET_US
        ids = self._open.get(hour)
        if ids is not None and key in ids:
            return True
        packed = self._packed.get(hour)
        if packed is None:
            return False
        i = bisect.bisect_left(packed, key)
        return i < len(packed) and packed[i] == key

    def add(self, key: int, ts_us: int) -> None:
        hour = ts_us // BUCKET_US
        ids = self._open.get(hour)
        if ids is None:
            ids = self._open[hour] = set()
            self._fresh[hour] = array("Q")
        if key not in ids:
            ids.add(key)
            self._fresh[hour].append(key)

    def pack(self, before_us: int) -> None:
        """Pack the hours that end at or before `before_us` (few ids join them later)."""
        for hour in [h for h in self._open if (h + 1) * BUCKET_US <= before_us]:
            ids = self._open.pop(hour)
            self._fresh.pop(hour, None)
            old = self._packed.get(hour)
            if old is not None:
                ids.update(old)
            self._packed[hour] = array("Q", sorted(ids))
            self._runs.pop(hour, None)

    def forget(self, before_us: int) -> None:
        """Forget the hours that end at or before `before_us`."""
        for table in (self._open, self._packed, self._runs, self._fresh):
            for hour in [h for h in table if (h + 1) * BUCKET_US <= before_us]:
                del table[hour]

    def runs(self) -> list[tuple[int, list[Run]]]:
        """Each hour's ids as runs, in hour order: a packed hour's is one run
        until it changes; an open hour's ids added since the last call are a
        new run (merged with the runs before it while they are at most twice
        its length). Between two calls an unchanged hour keeps its runs."""
        out = []
        for hour in sorted(self._open.keys() | self._packed.keys()):
            runs = self._runs.get(hour)
            if runs is None:  # packed since, or restored: its ids so far are one run
                runs = self._runs[hour] = [(next(_SERIALS), self._ids(hour))]
                self._fresh[hour] = array("Q")
            fresh = self._fresh.get(hour)
            if fresh:
                new = _sorted_once(np.frombuffer(fresh, dtype=np.uint64))
                self._fresh[hour] = array("Q")
                while runs and 2 * len(new) >= len(runs[-1][1]) and len(runs[-1][1]) < RUN_CAP:
                    new = _sorted_once(np.concatenate((runs.pop()[1], new)))
                runs.append((next(_SERIALS), new))
            out.append((hour, list(runs)))
        return out

    def _ids(self, hour: int) -> np.ndarray:
        """The hour's ids, sorted, each once."""
        ids = np.frombuffer(self._packed.get(hour, array("Q")), dtype=np.uint64)
        if hour in self._open or np.any(ids[1:] <= ids[:-1]):
            new = self._open.get(hour, ())
            ids = np.concatenate((ids, np.fromiter(new, dtype=np.uint64, count=len(new))))
            ids = _sorted_once(ids)
        return ids

    def to_dict(self) -> dict[str, Any]:
        """Each hour's ids, sorted and unique, as base64 of little-endian uint64s."""
        hours = []
        for hour in sorted(self._open.keys() | self._packed.keys()):
            hours.append([hour, packed(self._ids(hour))])
        return {"bucket_us": BUCKET_US, "hours": hours}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | list[Any]) -> SeenIds:
        seen = cls()
        if isinstance(data, list):  # a snapshot from before digests: [source, id, ts]
            for source, event_id, ts_us in data:
                seen.add(digest(source, event_id), ts_us)
            return seen
        if data["bucket_us"] != BUCKET_US:
            raise ValueError(f"seen ids in {data['bucket_us']} us buckets, not {BUCKET_US}")
        for hour, packed in data["hours"]:
            ids: array[int] = array("Q")
            ids.frombytes(base64.b64decode(packed))
            seen._packed[hour] = ids
        return seen


def packed(ids: np.ndarray) -> str:
    """Base64 of the ids as little-endian uint64s."""
    return base64.b64encode(ids.astype("<u8").tobytes()).decode()


def _sorted_once(ids: np.ndarray) -> np.ndarray:
    """`ids` sorted, each once: what `np.unique` gives. numpy's `unique` and
    `union1d` hash uint64s (numpy 2.4): 37 ms to merge 18,000 new ids into a
    run of 150,000, against 0.4 ms for a stable sort (timsort merges two
    sorted runs in one pass) and a comparison of neighbours."""
    ids = np.sort(ids, kind="stable")
    return ids[np.concatenate(([True], ids[1:] != ids[:-1]))] if len(ids) else ids
