"""Output records of the event contract (kpi-windows and kpi-alerts).

Plain functions from engine state to JSON-ready dicts, one per record kind,
so the live pipeline and `kpimon replay` print the very same bytes.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, ClassVar, NoReturn, Self

from streams.oee import OeeState
from streams.orders import OrderRule
from streams.pchart import PChartPoint
from streams.perfect_order import PerfectOrderState
from streams.timeutil import iso
from streams.windows import Window


class Record(dict[str, Any]):
    """One output record: the contract's JSON object (a dict, so orjson and the
    consumers read it as one), typed by its kind and read-only.

    Each kind is a subclass (`OeeRecord`, ...) with its `kind` (the `kpi`
    field); consumers pick records by class, never by comparing strings.
    A step that adds fields (targets, the revision) makes a new record with
    `with_fields`: a record already handed out never changes under a reader.
    """

    __slots__ = ()
    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        KINDS[cls.kind] = cls

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only: build another with with_fields()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only  # type: ignore[assignment]

    def with_fields(self, **fields: Any) -> Self:
        """A copy with `fields` set (a new field goes last, as in the contract)."""
        return type(self)({**self, **fields})

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (dict(self),)

    def __copy__(self) -> Self:
        return self  # read-only: a copy is itself

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return type(self)(copy.deepcopy(dict(self), memo))


KINDS: dict[str, type[Record]] = {}
"""Record kind (the `kpi` field) -> its class."""


class OeeRecord(Record):
    __slots__ = ()
    kind = "oee"


class PerfectOrderRecord(Record):
    __slots__ = ()
    kind = "perfect_order"


class PChartRecord(Record):
    __slots__ = ()
    kind = "pchart"


class ChainRecord(Record):
    __slots__ = ()
    kind = "chain"


class SafetyStockRecord(Record):
    __slots__ = ()
    kind = "safety_stock"


def typed(record: Mapping[str, Any]) -> Record:
    """The record as its kind's class (records read back from JSON or a
    snapshot are plain dicts). Raises `KeyError` for a kind no class has."""
    if isinstance(record, Record):
        return record
    return KINDS[record["kpi"]](record)


def window_fields(window: Window) -> dict[str, Any]:
    """Label and UTC bounds; plus the local production `date` of a dated window."""
    return dict(_window_fields(window))


@functools.lru_cache(maxsize=1024)
def _window_fields(window: Window) -> dict[str, Any]:
    """`window_fields`, made once per window: a close writes them into a
    record per machine (never handed out: callers get a copy)."""
    fields = {"window": window.label, "start": iso(window.start_us), "end": iso(window.end_us)}
    if window.date is not None:
        fields["date"] = window.date
    return fields


def oee_record(scope: str, keys: dict[str, str], window: Window, state: OeeState) -> OeeRecord:
    return OeeRecord(
        {"kpi": "oee", "scope": scope, **keys, **window_fields(window), **state.result()}
    )


def oee_rollup(
    window: Window, machines: dict[tuple[str, str, str], OeeState]
) -> tuple[list[Record], dict[tuple[str, str], OeeState], dict[str, OeeState]]:
    """Machine, line and site records of one window; lines and sites summed."""
    records: list[Record] = []
    lines: dict[tuple[str, str], OeeState] = defaultdict(OeeState)
    sites: dict[str, OeeState] = defaultdict(OeeState)
    for (site, line, machine), state in sorted(machines.items()):
        records.append(
            oee_record("machine", {"site": site, "line": line, "machine": machine}, window, state)
        )
        lines[site, line].merge(state)
        sites[site].merge(state)
    for (site, line), state in sorted(lines.items()):
        records.append(oee_record("line", {"site": site, "line": line}, window, state))
    for site, state in sorted(sites.items()):
        records.append(oee_record("site", {"site": site}, window, state))
    return records, lines, sites


_IDENTITY = (
    "kpi",
    "scope",
    "site",
    "line",
    "machine",
    "direction",
    "segment",
    "chart",
    "sku",
    "window",
    "start",
)


def record_key(record: dict[str, Any]) -> str:
    """The identity of a record: the same window of the same entity.

    Used as the Kafka message key, so a record published twice (after a
    restart) is recognisably the same one.
    """
    return "|".join(str(record[k]) for k in _IDENTITY if k in record)


def series_key(record: dict[str, Any]) -> str:
    """The identity of a record's series: its entity and window size, any start."""
    return "|".join(str(record[k]) for k in _IDENTITY[:-1] if k in record)


def perfect_order_record(
    direction: str,
    segment: str,
    window: Window,
    state: PerfectOrderState,
    rule: OrderRule | None = None,
) -> PerfectOrderRecord:
    """`rule`: the segment's per-order policy; each count it judges is added."""
    record = {
        "kpi": "perfect_order",
        "direction": direction,
        "segment": segment,
        **window_fields(window),
        **state.result(),
    }
    if rule is not None and rule.min_order_qty is not None:
        record["below_moq"] = state.below_moq
    if rule is not None and rule.response_time_us is not None:
        record["response_time_missed"] = state.response_time_missed
    return PerfectOrderRecord(record)


def pchart_record(chart: str, window: Window, point: PChartPoint) -> PChartRecord:
    return PChartRecord(
        {
            "kpi": "pchart",
            "chart": chart,
            **window_fields(window),
            "d": point.d,
            "n": point.n,
            "p": point.p,
            "center": point.center,
            "ucl": point.ucl,
            "lcl": point.lcl,
            "sigma": point.sigma,
            "z": point.z,
            "phase": point.phase,
            "method": point.method,
            "sigma_z": point.sigma_z,
            "violations": list(point.violations),
            "low_count": point.low_count,
            "limits": point.limits,
        }
    )


def chain_record(
    window: Window,
    inbound: PerfectOrderState,
    outbound: PerfectOrderState,
    oee: float | None,
) -> ChainRecord:
    """OPE x OEE x OLE; each factor None when its data are missing."""
    iq, idl = inbound.quality_rate, inbound.delivery_rate
    oq, odl = outbound.quality_rate, outbound.delivery_rate
    ope = None if iq is None or idl is None else iq * idl
    ole = None if oq is None or odl is None else oq * odl
    overall = None if None in (ope, oee, ole) else ope * oee * ole  # type: ignore[operator]
    return ChainRecord(
        {
            "kpi": "chain",
            **window_fields(window),
            "ope": ope,
            "oee": oee,
            "ole": ole,
            "overall": overall,
            "inbound_quality": iq,
            "inbound_delivery": idl,
            "outbound_quality": oq,
            "outbound_delivery": odl,
            "inbound_decided": inbound.decided,
            "outbound_decided": outbound.decided,
        }
    )


def alert_id(*parts: object) -> str:
    """A stable id: the same breach published twice has the same id."""
    text = "|".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def pchart_alert(chart: str, window: Window, point: PChartPoint) -> dict[str, Any]:
    """Critical for WE1: beyond limits that hold, normal or exact binomial (`limits`)."""
    return {
        "alert_id": alert_id("pchart_rule", chart, window.label, window.start_us),
        "kind": "pchart_rule",
        "severity": "critical" if "WE1" in point.violations else "warning",
        "chart": chart,
        **window_fields(window),
        "rules": list(point.violations),
        "value": point.p,
        "limit": point.ucl if point.p >= point.center else point.lcl,
        "center": point.center,
        "limits": point.limits,
    }


def silence_alert(
    site: str, line: str, machine: str, at_us: int, last_event_us: int | None
) -> dict[str, Any]:
    """A machine that should be sending (running, in a shift) has been silent since `at`.

    `last_event`: the machine's newest event before the silence.
    """
    return {
        "alert_id": alert_id("silent", machine, at_us),
        "kind": "silent",
        "severity": "warning",
        "site": site,
        "line": line,
        "machine": machine,
        "since": iso(at_us),
        "last_event": None if last_event_us is None else iso(last_event_us),
    }


_ENTITY = ("scope", "site", "line", "machine", "direction", "segment")


def target_miss_alert(
    record: dict[str, Any], kpi: str, target: float, shortfall: float, severity: str
) -> dict[str, Any]:
    """A closed window of an entity that missed a target; one per (entity, kpi, window).

    `kpi` is the record field judged (e.g. `oee`, `mttr_s`, `otif_rate`);
    `shortfall` is the miss relative to the target (0.1 = 10 % short).
    """
    entity = {k: record[k] for k in _ENTITY if k in record}
    return {
        "alert_id": alert_id(
            "target_miss", record["kpi"], *entity.values(), kpi, record["window"], record["start"]
        ),
        "kind": "target_miss",
        "severity": severity,
        "record": record["kpi"],
        **entity,
        "window": record["window"],
        "start": record["start"],
        "end": record["end"],
        "kpi": kpi,
        "value": record[kpi],
        "target": target,
        "shortfall": shortfall,
    }
