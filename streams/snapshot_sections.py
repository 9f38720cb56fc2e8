"""The engine's snapshot (`streams.snapshot.snapshot`) cut into named sections, and back.

A worker writes a section to its table only when the section's bytes
changed since the last snapshot, so most of a large state (closed windows,
each machine's kept history, the hours of seen ids) is not written again
every time. Sections have stable names:

- `head`: everything not cut out below (watermarks, stats, the book's ignored counts...);
- `<path>.order`: the keys of a cut-out container, in its order (a restore
  rebuilds dicts and lists in exactly the order the snapshot had);
- `<path>/<key>`: one item of a container of large items (a closed window);
- `<path>#<bucket>`: the items of a container of small items whose key
  hashes to `bucket` (machine timelines, last records), or that their
  owner put in `bucket` (a `Lazy` with its own buckets: open orders by
  when they opened, originals by their minute), so per-row overhead does
  not dominate;
- `seen.hours/<hour>#<group>`: the ids seen in an hour whose top 5 bits
  are `group` (ids are uniform hashes: a new one changes one group);
- `<path>.keys/<window>/<i>`: the i-th `KEY_GROUP` keys, in order, of an
  open window's states (OEE, perfect orders): a key joining the window
  changes the last group only;
- `history.points#<bucket>/<hour>`: the kept events of a history bucket's
  machines in one hour of event time (`materialised` cuts them out, `join`
  puts them back): kept events grow at the end, so only the newest hour's
  sections change; when the histories come as `HistoryHours` (a worker's
  snapshot) each such section is `Tokened` (below), made only when a point
  of its hour was added or folded away;
- `seen.hours/<hour>/<serial>`: instead, when the seen ids come as `Runs`
  (a worker's snapshot), each run of an hour's ids: a run never changes, so
  a snapshot writes the ids added since the last one (and the runs they
  merged with), not the open hour's;
- `book.settled#t<hour>`: settled orders by the hour of their decision
  (`BY_TIME`), for the same reason;
- `machines.pending#<slice>`: the machines' pending events in one slice
  of event time (`streams.machine.SLICE_US`), when the
  machine timelines come `Sliced`: the allowed lateness's worth of events
  (minutes of a busy plant) is cut so that a snapshot writes the slices
  events joined or left. Each is `Tokened`: its token changes whenever its
  content does, so a writer that saw the token before need not even make it.

`join(split(state)) == state` for every snapshot, and every container's
items come back in their order.

A snapshot may hold a bucketed container as `Lazy` (its items' keys and the
objects to turn into them; a list or a dict): `split` then leaves each bucket a `Deferred`,
made only when it is written, so the whole container never exists as data
at once (100,000 open orders are about 100 MiB of dicts, a bucket 1.6 MiB).
`materialised(split(state))` is what `split` gives for the same state with
the container as a list.
"""

from __future__ import annotations

import base64
import itertools
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from streams.pointlog import HOUR_US, hour_runs
from streams.seen import packed as packed_ids

Key = Callable[[Any], str]


def json_key(value: Any) -> str:
    """The cut key of a container whose items are keyed by their first element's JSON."""
    return orjson.dumps(value).decode()


def _first(element: list[Any]) -> str:
    return json_key(element[0])


def _field(name: str) -> Key:
    return lambda element: str(element[name])


OPEN_BUCKETS = 64
"""Buckets of open orders by order id, in a snapshot made without the book's
own buckets (`streams.orders.OrderBook.open_bucket`)."""
ORIGINAL_BUCKETS = 16
"""Buckets of the safety stock's open originals by the id's JSON, likewise
(`streams.safety_stock.SafetyStock.bucket`)."""

# path (keys into the snapshot dict), how an item's key is found (None: a
# dict's own keys), buckets (0: one section per item).
CUTS: list[tuple[tuple[str, ...], Key | None, int]] = [
    (("machines",), _field("machine"), 64),
    (("history",), None, 64),  # small: the kept events are cut out by hour (`POINTS`)
    (("closed",), _first, 0),
    (("last_closed",), None, 64),
    (("charts",), None, 16),
    (("chart_history",), None, 16),
    (("book", "open"), _field("order_id"), OPEN_BUCKETS),
    (("book", "decided"), _first, 64),
    (("book", "settled"), lambda e: str(e[0]["order_id"]), 64),
    (("stock", "skus"), None, 16),
    (("stock", "originals"), _first, ORIGINAL_BUCKETS),
    (("stock", "settled"), _first, 16),
]
# Containers of windows each holding [key, state] pairs (open OEE and order
# windows): items are one window's state of one key.
NESTED: list[tuple[str, ...]] = [("oee",), ("orders",)]
KEY_GROUP = 256
ID_GROUP_SHIFT = 59  # 32 groups of 64-bit ids
_ABSENT = object()  # no such container in the snapshot
WHOLE = "whole"  # an order section {WHOLE: container} keeps the container whole


@dataclass(frozen=True)
class Lazy:
    """A container of a snapshot as `(key, item)` pairs, in order: a list's
    element i is `to_value(pairs[i][1])`, whose cut key is `pairs[i][0]`; a
    dict's (a container cut with no key function) key `pairs[i][0]` holds it."""

    pairs: Sequence[tuple[str, Any]]
    to_value: Callable[[Any], Any]
    versions: dict[int, int] | None = None
    """Each bucket's version, if the owner keeps them (`bumped`): buckets
    come `Tokened` then, (bucket, version) their token."""
    bucket: Callable[[Any], int] | None = None
    """An item's bucket, if the owner chooses it (else a hash of its key,
    `bucket_of`); the owner then marks the buckets it changes by this number."""

    def as_list(self) -> list[Any]:
        return [self.to_value(item) for _, item in self.pairs]

    def as_dict(self) -> dict[str, Any]:
        """The container when it is a dict (cut with no key function): its keys are the pairs'."""
        return {k: self.to_value(item) for k, item in self.pairs}


@dataclass(frozen=True)
class Deferred:
    """A section's value, made when asked for (`value()`)."""

    make: Callable[[], Any]

    def value(self) -> Any:
        return self.make()


@dataclass(frozen=True)
class Tokened(Deferred):
    """A `Deferred` whose `token` differs from every earlier one of the section
    whenever its value does (equal tokens: equal values)."""

    token: Any = None


@dataclass(frozen=True)
class Sliced:
    """Machine timelines (`streams.machine.MachineTimeline`) as `(key, timeline)`
    pairs, in order, for `split` to cut their pending events by slice.

    `versions` maps a slice to the generation that last saw it change (the
    engine keeps it between snapshots); `split` takes each timeline's
    `touched` slices into it, so a slice's token is (slice, version).
    """

    pairs: Sequence[tuple[str, Any]]
    versions: dict[int, int]


@dataclass(frozen=True)
class HistoryHours:
    """Machine histories (`streams.revisions.MachineHistory`) as `(key, history)`
    pairs, in order, for `split` to cut their kept events by hour (the
    sections `_cut_points` makes of a history bucket) without making the
    hours no event changed.

    `versions` maps (bucket, hour) to the generation that last saw it change
    (the engine keeps it between snapshots); `split` takes each history's
    `points.touched` hours into it, so a section's token is (bucket, hour,
    version, the machines in it).
    """

    pairs: Sequence[tuple[str, Any]]
    versions: dict[tuple[int, int], int]


@dataclass(frozen=True)
class Runs:
    """Seen ids' hours as runs (`streams.seen.SeenIds.runs`): (hour, [(serial,
    sorted ids)]); a run's ids never change, so its serial is its token."""

    hours: list[tuple[int, list[tuple[int, Any]]]]


_GENERATIONS = itertools.count()
"""Versions of sliced sections: unique in the process, so no two states share a token."""


def bumped(touched: set[int], versions: dict[int, int]) -> dict[int, int]:
    """`versions` with a new version for each bucket in `touched` (the owner
    marks the buckets of the items it changes), which is emptied."""
    generation = next(_GENERATIONS)
    for bucket in touched:
        versions[bucket] = generation
    touched.clear()
    return versions


def materialised(parts: Mapping[str, Any], *, tokened: bool = False) -> Iterator[tuple[str, Any]]:
    """`parts`' sections with every `Deferred` made, one at a time, and each
    machine's kept events cut out of its history bucket by hour (`_cut_points`).
    `tokened`: `Tokened` sections come as they are, for the writer to make."""
    for name, value in parts.items():
        if tokened and isinstance(value, Tokened):
            yield name, value
            continue
        made = value.value() if isinstance(value, Deferred) else value
        if name.startswith(HISTORY_BUCKET) and isinstance(made, dict):
            yield from _cut_points(name, made)
        else:
            yield name, made


HISTORY_BUCKET = "history#"
POINTS = "history.points#"
"""Sections `history.points#<bucket>/<hour>`: the kept events of a history
bucket's machines in one hour of event time, `{machine: base64}`. A machine's
kept events grow at the end, so a snapshot rewrites the newest hour's
section, not every machine's whole day."""


def _cut_points(name: str, machines: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """A history bucket with each machine's packed events replaced by the hours
    they are in (`{"hours": [...]}`), then a section per hour."""
    bucket = name[len(HISTORY_BUCKET) :]
    by_hour: dict[int, dict[str, str]] = {}
    kept: dict[str, Any] = {}
    for machine, history in machines.items():
        points = history.get("points") if isinstance(history, dict) else None
        packed = points.get("packed") if isinstance(points, dict) else None
        runs = _packed_runs(packed)
        if not runs:  # none, or not of the packed form: kept as it is
            kept[machine] = history
            continue
        kept[machine] = {**history, "points": {**points, "packed": {"hours": list(runs)}}}
        for hour, chunk in runs.items():
            by_hour.setdefault(hour, {})[machine] = chunk
    yield name, kept
    for hour in sorted(by_hour):
        yield f"{POINTS}{bucket}/{hour}", by_hour[hour]


def _packed_runs(packed: Any) -> dict[int, str] | None:
    """hour -> base64 of that hour's records, in order; None if `packed` is not
    canonical base64 of records in event-time order."""
    if not isinstance(packed, str):
        return None
    try:
        raw = base64.b64decode(packed, validate=True)
    except ValueError:
        return None
    runs = hour_runs(raw)
    if runs is None or base64.b64encode(raw).decode() != packed:
        return None
    return {hour: base64.b64encode(raw[a:b]).decode() for hour, a, b in runs}


def _joined_points(parts: Mapping[str, Any]) -> dict[str, Any]:
    """`parts` with each history bucket's machines' packed events put back."""
    chunks: dict[tuple[str, str], dict[int, str]] = {}
    for section, value in parts.items():
        if section.startswith(POINTS):
            bucket, hour = section[len(POINTS) :].split("/", 1)
            for machine, chunk in value.items():
                chunks.setdefault((bucket, machine), {})[int(hour)] = chunk
    out = dict(parts)
    for section, machines in parts.items():
        if not section.startswith(HISTORY_BUCKET):
            continue
        bucket = section[len(HISTORY_BUCKET) :]
        joined = {}
        for machine, history in machines.items():
            points = history.get("points") if isinstance(history, dict) else None
            packed = points.get("packed") if isinstance(points, dict) else None
            if isinstance(packed, dict):
                got = chunks.get((bucket, machine), {})
                raw = b"".join(base64.b64decode(got[hour]) for hour in packed["hours"])
                points = {**history["points"], "packed": base64.b64encode(raw).decode()}
                history = {**history, "points": points}
            joined[machine] = history
        out[section] = joined
    return out


def bucket_of(key: str, buckets: int) -> int:
    return zlib.crc32(key.encode()) % buckets


def split(state: Mapping[str, Any]) -> dict[str, Any]:
    """The sections of a snapshot: name -> JSON-safe value."""
    head = _copy_path_parents(state)
    parts: dict[str, Any] = {}
    for path, key, buckets in CUTS:
        container = _pop(head, path)
        if isinstance(container, Sliced):
            _cut_sliced(parts, ".".join(path), container, buckets)
        elif isinstance(container, HistoryHours):
            _cut_history(parts, ".".join(path), container, buckets)
        elif container is not _ABSENT:
            _cut(parts, ".".join(path), container, key, buckets)
    for path in NESTED:
        windows = _pop(head, path)
        if windows is not _ABSENT:
            _cut_nested(parts, ".".join(path), windows)
    hours = _pop(head, ("seen", "hours"))
    if isinstance(hours, Runs):
        _cut_runs(parts, "seen.hours", hours)
    elif hours is not _ABSENT:
        _cut_ids(parts, "seen.hours", hours)
    parts["head"] = head
    return parts


def join(parts: Mapping[str, Any]) -> dict[str, Any]:
    """The snapshot `split` cut into `parts` (or `materialised` made of them)."""
    parts = _joined_pending(_joined_points(parts))
    state = _copy_path_parents(parts["head"])
    for path, key, _ in CUTS:
        name = ".".join(path)
        if f"{name}.order" in parts:
            _put(state, path, _joined(parts, name, dict_like=key is None))
    for path in NESTED:
        name = ".".join(path)
        if f"{name}.order" in parts:
            _put(state, path, _joined_nested(parts, name))
    if "seen.hours.order" in parts:
        _put(state, ("seen", "hours"), _joined_ids(parts, "seen.hours"))
    return state


def _cut(parts: dict[str, Any], name: str, container: Any, key: Key | None, buckets: int) -> None:
    if isinstance(container, Lazy):
        keys = [k for k, _ in container.pairs]
        if buckets == 0 or len(set(keys)) != len(keys):
            # cut (or kept whole) as the list, or the dict, is
            container = container.as_list() if key is not None else container.as_dict()
        else:
            parts[f"{name}.order"] = keys
            grouped: dict[str, list[Any]] = {}
            chosen = container.bucket
            for k, item in container.pairs:
                where = bucket_of(k, buckets) if chosen is None else chosen(item)
                grouped.setdefault(f"{name}#{where}", []).append((k, item))
            versions = container.versions
            for section, pairs in grouped.items():
                maker = _bucket_maker(pairs, container.to_value)
                if versions is None:
                    parts[section] = Deferred(maker)
                    continue
                bucket = int(section.rsplit("#", 1)[1])
                version = versions.setdefault(bucket, next(_GENERATIONS))
                parts[section] = Tokened(maker, (bucket, version))
            if versions is not None:
                present = {int(section.rsplit("#", 1)[1]) for section in grouped}
                for gone in versions.keys() - present:
                    del versions[gone]
            return
    try:
        if not isinstance(container, dict if key is None else list):
            raise TypeError(container)
        items = list(container.items()) if key is None else [(key(e), e) for e in container]
        keys = [k for k, _ in items]
        keyed = len(set(keys)) == len(keys)
    except (KeyError, TypeError, IndexError, AttributeError):
        keyed = False
    if not keyed:  # not shaped as expected: kept whole
        parts[f"{name}.order"] = {WHOLE: container}
        return
    parts[f"{name}.order"] = keys
    if buckets == 0:
        for k, element in items:
            parts[f"{name}/{k}"] = element
        return
    by_time = BY_TIME.get(name)
    for k, element in items:
        bucket = by_time(element) if by_time is not None else None
        where = bucket_of(k, buckets) if bucket is None else bucket
        parts.setdefault(f"{name}#{where}", {})[k] = element


def _cut_sliced(parts: dict[str, Any], name: str, sliced: Sliced, buckets: int) -> None:
    """Timelines by bucket, each with `"pending": {"slices": [...]}` naming the
    slices its pending events are in, and a `Tokened` section per slice
    holding every machine's events in it (`{machine: events}`). Not by
    bucket as well: a busy plant touches every bucket's newest slice anyway,
    and each section is a table row (about 2,000 of them a snapshot at 64
    buckets, which cost a third of a fast replay's throughput)."""
    keys = [k for k, _ in sliced.pairs]
    if len(set(keys)) != len(keys):  # as an unsliced container would be
        _cut(parts, name, Lazy(sliced.pairs, _whole_timeline), _field("machine"), buckets)
        return
    generation, versions = next(_GENERATIONS), sliced.versions
    parts[f"{name}.order"] = keys
    grouped: dict[int, list[tuple[str, Any, list[int]]]] = {}
    slices: dict[int, list[tuple[str, Any, int, int]]] = {}
    for k, timeline in sliced.pairs:
        for where in timeline.touched:
            versions[where] = generation
        timeline.touched.clear()
        runs = timeline.pending_slices()
        grouped.setdefault(bucket_of(k, buckets), []).append(
            (k, timeline, [where for where, _, _ in runs])
        )
        for where, start, end in runs:
            slices.setdefault(where, []).append((k, timeline, start, end))
    for bucket, timelines in grouped.items():
        parts[f"{name}#{bucket}"] = Deferred(_timelines_maker(timelines))
    for where, held in sorted(slices.items()):
        token = (where, versions.setdefault(where, generation))
        parts[f"{name}{PENDING}{where}"] = Tokened(_slice_maker(held), token)
    for gone in versions.keys() - slices.keys():
        del versions[gone]


PENDING = ".pending#"


def _cut_history(parts: dict[str, Any], name: str, held: HistoryHours, buckets: int) -> None:
    """Histories by bucket, as `_cut` and then `_cut_points` make them, but each
    hour's section (`history.points#<bucket>/<hour>`) `Tokened`: made only
    when a point of that hour changed since the last snapshot looked."""
    keys = [k for k, _ in held.pairs]
    if len(set(keys)) != len(keys):  # as an uncut container would be
        _cut(parts, name, Lazy(held.pairs, _whole_history), None, buckets)
        return
    generation, versions = next(_GENERATIONS), held.versions
    parts[f"{name}.order"] = keys
    grouped: dict[int, list[tuple[str, Any, Any]]] = {}
    hours: dict[tuple[int, int], list[tuple[str, Any, int, int]]] = {}
    for k, history in held.pairs:
        bucket = bucket_of(k, buckets)
        log = history.points
        for hour in log.touched:
            versions[bucket, hour] = generation
        log.touched.clear()
        runs = log.hour_runs()
        grouped.setdefault(bucket, []).append(  # no hours: kept whole, as `_cut_points` does
            (k, history, [hour for hour, _, _ in runs] if runs else None)
        )
        for hour, start, end in runs or ():
            hours.setdefault((bucket, hour), []).append((k, log, start, end))
    by_bucket: dict[int, list[int]] = {}
    for bucket, hour in hours:
        by_bucket.setdefault(bucket, []).append(hour)
    for bucket, histories in grouped.items():
        parts[f"{name}#{bucket}"] = Deferred(_histories_maker(histories))
        for hour in sorted(by_bucket.get(bucket, ())):
            held_hour = hours[bucket, hour]
            version = versions.setdefault((bucket, hour), generation)
            token = (bucket, hour, version, tuple(k for k, _, _, _ in held_hour))
            parts[f"{POINTS}{bucket}/{hour}"] = Tokened(_hour_maker(held_hour), token)
    for gone in versions.keys() - hours.keys():
        del versions[gone]


def _whole_history(history: Any) -> Any:
    return history.to_dict()


def _histories_maker(histories: list[tuple[str, Any, list[int] | None]]) -> Callable[[], Any]:
    def make() -> dict[str, Any]:
        return {
            k: history.to_dict() if hours is None else history.to_dict({"hours": hours})
            for k, history, hours in histories
        }

    return make


def _hour_maker(held: list[tuple[str, Any, int, int]]) -> Callable[[], Any]:
    def make() -> dict[str, str]:
        return {k: log.packed(start, end) for k, log, start, end in held}

    return make


def _whole_timeline(timeline: Any) -> Any:
    return timeline.to_dict()


def _timelines_maker(timelines: list[tuple[str, Any, list[int]]]) -> Callable[[], Any]:
    def make() -> dict[str, Any]:
        return {
            k: {**timeline.to_dict(with_pending=False), "pending": {"slices": where}}
            for k, timeline, where in timelines
        }

    return make


def _slice_maker(held: list[tuple[str, Any, int, int]]) -> Callable[[], Any]:
    return lambda: {k: timeline.pending[start:end] for k, timeline, start, end in held}


def _joined_pending(parts: Mapping[str, Any]) -> dict[str, Any]:
    """`parts` with each sliced timeline's pending events put back."""
    events: dict[tuple[str, str], dict[int, list[Any]]] = {}
    for section, value in parts.items():
        if PENDING in section:
            name, rest = section.split(PENDING, 1)
            where = int(rest)
            for machine, points in value.items():
                events.setdefault((name, machine), {})[where] = points
    out = dict(parts)
    for section, timelines in parts.items():
        name = section.split("#", 1)[0]
        if name not in SLICED or PENDING in section or not isinstance(timelines, dict):
            continue
        joined = {}
        for machine, timeline in timelines.items():
            pending = timeline.get("pending") if isinstance(timeline, dict) else None
            if isinstance(pending, dict):
                got = events.get((name, machine), {})
                points = [point for where in pending["slices"] for point in got[where]]
                timeline = {**timeline, "pending": points}
            joined[machine] = timeline
        out[section] = joined
    return out


SLICED = frozenset({"machines"})
"""Containers `split` may find `Sliced`."""


def _decided_hour(element: Any) -> str | None:
    """`t<hour>` of a settled order's decision (None: no verdict, or not of that shape)."""
    verdict = element[1] if isinstance(element, list) and len(element) == 2 else None
    decided = verdict.get("decided_us") if isinstance(verdict, dict) else None
    return f"t{decided // HOUR_US}" if type(decided) is int else None


BY_TIME: dict[str, Callable[[Any], str | None]] = {"book.settled": _decided_hour}
"""Containers whose items are bucketed by a time of theirs, not by a hash of
their key: settled orders join at the end (by decision time) and leave from
the front, so a snapshot rewrites the newest hour's bucket, not all 64."""


def _bucket_maker(
    pairs: list[tuple[str, Any]], to_value: Callable[[Any], Any]
) -> Callable[[], Any]:
    return lambda: {k: to_value(item) for k, item in pairs}


def _joined(parts: Mapping[str, Any], name: str, *, dict_like: bool) -> Any:
    keys = parts[f"{name}.order"]
    if isinstance(keys, dict):
        return keys[WHOLE]
    found: dict[str, Any] = {}
    prefix_item, prefix_bucket = f"{name}/", f"{name}#"
    for section, value in parts.items():
        if section.startswith(prefix_bucket):
            found.update(value)
        elif section.startswith(prefix_item):
            found[section[len(prefix_item) :]] = value
    if dict_like:
        return {k: found[k] for k in keys}
    return [found[k] for k in keys]


def _cut_nested(parts: dict[str, Any], name: str, windows: list[Any]) -> None:
    try:
        cut = _nested_items(name, windows)
    except (TypeError, ValueError, IndexError):  # not shaped as expected: kept whole
        parts[f"{name}.order"] = {WHOLE: windows}
        return
    for section, items in cut.items():
        parts[section] = items


def _nested_items(name: str, windows: list[Any]) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    order = []
    for window, pairs in windows:
        if not isinstance(pairs, list) or not all(len(pair) == 2 for pair in pairs):
            raise ValueError(pairs)
        wkey = json_key(window)
        keys = [json_key(pair[0]) for pair in pairs]
        for k, pair in zip(keys, pairs, strict=True):
            parts.setdefault(f"{name}#{bucket_of(wkey + k, 64)}", {})[wkey + k] = pair
        groups = range(0, len(keys), KEY_GROUP)
        for i, start in enumerate(groups):
            parts[f"{name}.keys/{wkey}/{i}"] = keys[start : start + KEY_GROUP]
        order.append([window, len(groups)])
    parts[f"{name}.order"] = order
    return parts


def _joined_nested(parts: Mapping[str, Any], name: str) -> list[Any]:
    if isinstance(parts[f"{name}.order"], dict):
        return parts[f"{name}.order"][WHOLE]
    found: dict[str, Any] = {}
    for section, value in parts.items():
        if section.startswith(f"{name}#"):
            found.update(value)
    out = []
    for window, groups in parts[f"{name}.order"]:
        wkey = json_key(window)
        keys = [k for i in range(groups) for k in parts[f"{name}.keys/{wkey}/{i}"]]
        out.append([window, [found[wkey + k] for k in keys]])
    return out


def _cut_ids(parts: dict[str, Any], name: str, hours: Any) -> None:
    """[[hour, base64 of sorted little-endian uint64 ids], ...] by hour and id range."""
    try:
        cut = _id_groups(name, hours)
    except (TypeError, ValueError):  # not shaped as expected: kept whole
        parts[f"{name}.order"] = {WHOLE: hours}
        return
    parts.update(cut)


def _id_groups(name: str, hours: list[Any]) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    order = []
    for hour, packed in hours:
        raw = base64.b64decode(packed, validate=True)
        if not isinstance(hour, int) or len(raw) % 8 or base64.b64encode(raw).decode() != packed:
            raise ValueError(hour)
        ids = np.frombuffer(raw, dtype="<u8")
        if np.any(ids[1:] < ids[:-1]):
            raise ValueError("ids not sorted")
        starts = np.arange(1, 1 << (64 - ID_GROUP_SHIFT), dtype=np.uint64)
        edges = np.searchsorted(ids, starts << np.uint64(ID_GROUP_SHIFT))
        bounds = [0, *edges.tolist(), len(ids)]
        for group, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
            if hi > lo:
                parts[f"{name}/{hour}#{group}"] = base64.b64encode(raw[lo * 8 : hi * 8]).decode()
        order.append(hour)
    parts[f"{name}.order"] = order
    return parts


def _cut_runs(parts: dict[str, Any], name: str, runs: Runs) -> None:
    """`<name>/<hour>/<serial>`: base64 of a run's ids; the order names each
    hour's runs (`{"runs": [[hour, [serial, ...]], ...]}`)."""
    order = []
    for hour, of_hour in runs.hours:
        for serial, ids in of_hour:
            parts[f"{name}/{hour}/{serial}"] = Tokened(_run_maker(ids), serial)
        order.append([hour, [serial for serial, _ in of_hour]])
    parts[f"{name}.order"] = {"runs": order}


def _run_maker(ids: np.ndarray) -> Callable[[], str]:
    return lambda: packed_ids(ids)


def _joined_runs(parts: Mapping[str, Any], name: str, order: list[Any]) -> list[Any]:
    out = []
    for hour, serials in order:
        raw = b"".join(base64.b64decode(parts[f"{name}/{hour}/{serial}"]) for serial in serials)
        ids = np.unique(np.frombuffer(raw, dtype="<u8"))
        out.append([hour, packed_ids(ids)])
    return out


def _joined_ids(parts: Mapping[str, Any], name: str) -> Any:
    order = parts[f"{name}.order"]
    if isinstance(order, dict) and "runs" in order:
        return _joined_runs(parts, name, order["runs"])
    if isinstance(order, dict):
        return order[WHOLE]
    groups = 1 << (64 - ID_GROUP_SHIFT)
    out = []
    for hour in order:
        raw = b"".join(
            base64.b64decode(parts[section])
            for group in range(groups)
            if (section := f"{name}/{hour}#{group}") in parts
        )
        out.append([hour, base64.b64encode(raw).decode()])
    return out


def _copy_path_parents(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `state` whose dicts along every cut path are copies too, so
    popping and putting containers leaves the caller's dicts alone."""
    copy = dict(state)
    for path in [*(path for path, _, _ in CUTS), ("seen", "hours")]:
        node = copy
        for step in path[:-1]:
            if not isinstance(node.get(step), dict):
                break
            node[step] = dict(node[step])
            node = node[step]
    return copy


def _pop(state: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = state
    for step in path[:-1]:
        node = node.get(step) if isinstance(node, dict) else None
    if not isinstance(node, dict) or path[-1] not in node:
        return _ABSENT
    return node.pop(path[-1])


def _put(state: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = state
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
