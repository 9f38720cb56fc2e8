"""Input events of the kpimon contract v1: strict, frozen pydantic models.

A Kafka message value is one event object or a JSON array of them (a batch);
turning bytes into events and readable errors is `streams.decode`, whose
names are re-exported here. Timestamps must be RFC 3339 with an explicit
offset; every `*_us` property is integer microseconds since the epoch.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

from streams.timeutil import to_us
from streams.wording import json_type, num, short

MAX_STR = 256
"""Longest accepted string field, in characters: garbage can't blow memory."""
MAX_LINES = 10_000
"""Most lines accepted in one order or shipment."""

MachineState = Literal["running", "idle", "down", "setup", "planned_stop", "unknown"]
Direction = Literal["outbound", "inbound"]

# ---------------------------------------------------------------- field types

_RFC3339_TEXT = r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
_RFC3339 = re.compile(_RFC3339_TEXT + "?")  # offset optional here so a naive one gets its own error
_USUAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{6})?(?:Z|[+-]\d{2}:\d{2})")
"""The form producers send almost always, which `datetime.fromisoformat` reads as it is."""
_from_iso = datetime.fromisoformat


def _error(template: str, **ctx: Any) -> PydanticCustomError:
    """A contract violation; ctx `field` reports it under that sub-field of the failing location."""
    return PydanticCustomError("contract", template, ctx)


def _parse_rfc3339(value: object) -> object:
    """RFC 3339 text -> aware datetime; datetimes pass through for Python producers.

    Done by hand rather than by pydantic's lax datetime parsing, which would
    also take unix-second numbers and digit strings as timestamps.
    """
    if value.__class__ is str and _USUAL.fullmatch(value):
        try:  # (not `contextlib.suppress`: this runs for every timestamp)
            return _from_iso(value)
        except ValueError:  # an impossible date: worded below
            pass
    if isinstance(value, datetime):
        return value  # AwareDatetime still rejects a naive one
    if not isinstance(value, str):
        raise _error("expected an RFC 3339 timestamp string, got {got}", got=json_type(value))
    match = _RFC3339.fullmatch(value) if len(value) <= 64 else None
    if match is None:
        raise _error("not an RFC 3339 timestamp like 2026-11-22T06:00:00Z: {t}", t=short(value))
    date, time, fraction, offset = match.groups()
    if offset is None:
        raise _error("timestamp has no timezone offset")
    if offset != "z" and (fraction is None or len(fraction) == 6):
        with contextlib.suppress(ValueError):  # the usual form, as Python reads it
            return datetime.fromisoformat(value)
    micros = (fraction or "")[:6].ljust(6, "0")  # RFC 3339 allows any precision; keep µs
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{date}T{time}.{micros}{offset}")
    except ValueError:
        raise _error("not a valid date and time: {t}", t=short(value)) from None


def _as_lines(value: object) -> object:
    """Check a `lines` array's length, then make it a tuple so frozen events stay hashable.

    The length is checked here, before the items: pydantic's own tuple length
    check would add a bogus "too short" error whenever an item is invalid.
    """
    if not isinstance(value, list | tuple):
        return value
    if not value:
        raise _error("must not be empty")
    if len(value) > MAX_LINES:
        raise _error("{n} lines, over the limit of {limit}", n=len(value), limit=MAX_LINES)
    return tuple(value)


_L = TypeVar("_L", bound="OrderLine | ShipmentLine")


def _unique_line_nos(lines: tuple[_L, ...]) -> tuple[_L, ...]:
    first: dict[int, int] = {}
    for i, line in enumerate(lines):
        if line.line_no in first:
            raise _error(
                "duplicate line_no {no} (also in lines[{first}])",
                field=f"[{i}].line_no",
                no=line.line_no,
                first=first[line.line_no],
            )
        first[line.line_no] = i
    return lines


Id = Annotated[str, Field(min_length=1, max_length=MAX_STR)]
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_parse_rfc3339),
    Field(json_schema_extra={"pattern": f"^{_RFC3339_TEXT}$"}),
]
MAX_UNITS = 10**9
"""Most units in one count event or one order line: more is a data error, and
sums of unbounded numbers would outgrow the 64-bit integers snapshots and
records are written with (one order of 1e300 units used to stop a worker)."""
MAX_READING = 2**53 - 1
"""Largest cumulative PLC counter reading (the largest integer JSON keeps exact)."""
MAX_IDEAL_CYCLE_S = 86_400.0
"""Longest ideal cycle time per unit: a day."""
MAX_COUNT_IDEAL_S = 10_000_000.0
"""Most ideal time one count event may carry (ideal_cycle_s x total): 116 days."""

Quantity = Annotated[float, Field(ge=0, le=MAX_UNITS)]
UnitCount = Annotated[int, Field(ge=0, le=MAX_UNITS)]
Reading = Annotated[int, Field(ge=0, le=MAX_READING)]
IdealCycle = Annotated[float, Field(gt=0, le=MAX_IDEAL_CYCLE_S)]


def _lines(model: type[_L]) -> Any:
    return Annotated[
        tuple[model, ...],  # type: ignore[valid-type]
        BeforeValidator(_as_lines),
        Field(json_schema_extra={"minItems": 1, "maxItems": MAX_LINES}),
        AfterValidator(_unique_line_nos),
    ]


def _require_type(schema: dict[str, Any]) -> None:
    # `type` has a default for Python producers, but on the wire it is required.
    schema["required"] = ["type", *schema.get("required", [])]


# ---------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        str_max_length=MAX_STR,
    )


class _EventBase(_Model):
    model_config = ConfigDict(json_schema_extra=_require_type)

    source: ClassVar[str]
    """Input topic kind this event belongs on."""
    key_field: ClassVar[str]
    """Field whose value is the Kafka message key."""

    type: str
    event_id: Id = Field(description="Unique per producer; used to drop duplicates.")
    ts: Timestamp = Field(description="Event time at the source, RFC 3339 with offset.")

    @property
    def ts_us(self) -> int:
        """Event time, microseconds since the epoch."""
        return to_us(self.ts)

    @property
    def key(self) -> str:
        """The Kafka message key this event belongs to."""
        return str(getattr(self, self.key_field))


class _MachineEvent(_EventBase):
    source: ClassVar[str] = "machine-state"
    key_field: ClassVar[str] = "machine"

    site: Id
    line: Id
    machine: Id = Field(
        description="Machine id; the message key, unless a gateway batch is keyed by its line."
    )

    @property
    def line_key(self) -> str:
        """The message key of a gateway batch holding this event: `<site>/<line>`."""
        return f"{self.site}/{self.line}"


class StateEvent(_MachineEvent):
    """A machine entered `state` at `ts` and stays in it until its next state event.

    Send it on change: a state holds however long the silence. `unknown` is
    for a gateway that no longer knows (lost the PLC); its time is no_data.
    """

    type: Literal["state"] = "state"
    state: MachineState
    reason: Id | None = Field(
        default=None, description="Optional code, e.g. jam, no_material, break, changeover."
    )


class CountEvent(_MachineEvent):
    """Units a machine produced since its previous count event (deltas, 0 <= good <= total)."""

    type: Literal["count"] = "count"
    product: Id
    ideal_cycle_s: IdealCycle = Field(
        description="Ideal cycle time per unit, seconds (> 0, at most a day)."
    )
    total: UnitCount = Field(description="Units produced since the previous count event.")
    good: UnitCount = Field(description="Good units among `total`.")

    @model_validator(mode="after")
    def _good_within_total(self) -> CountEvent:
        if self.good > self.total:
            raise _error(
                "{good} exceeds total {total}", field="good", good=self.good, total=self.total
            )
        if self.ideal_cycle_s * self.total > MAX_COUNT_IDEAL_S:
            raise _error(
                "{total} units at an ideal {ideal} s each is {seconds} s of ideal time, "
                "more than the {limit} s one count may carry",
                field="total",
                total=self.total,
                ideal=self.ideal_cycle_s,
                seconds=f"{self.ideal_cycle_s * self.total:,.0f}",
                limit=f"{MAX_COUNT_IDEAL_S:,.0f}",
            )
        return self


class CounterEvent(_MachineEvent):
    """A reading of a machine's cumulative PLC counters for one product.

    kpimon derives the units from consecutive readings of the same machine
    and product: the first reading sets the base (no units), a rise is the
    units made since the previous reading, a fall is a counter reset (the
    units are the new value) unless `engine.counter_modulus` makes it a wrap.
    """

    type: Literal["counter"] = "counter"
    product: Id
    ideal_cycle_s: IdealCycle = Field(
        description="Ideal cycle time per unit, seconds (> 0, at most a day)."
    )
    total: Reading = Field(description="Cumulative count of all units, as the PLC shows it.")
    good: Reading | None = Field(
        default=None,
        description="Cumulative count of good units; omitted: every unit is good.",
    )


class OrderLine(_Model):
    """One ordered line: `qty` units of `sku`."""

    line_no: int = Field(ge=1)
    sku: Id
    qty: Quantity = Field(description="Ordered quantity, units (>= 0).")


class ShipmentLine(_Model):
    """Units delivered against one order line, and how many of them arrived damaged."""

    line_no: int = Field(ge=1, description="The order line this delivers against.")
    qty: Quantity = Field(description="Delivered quantity, units (>= 0).")
    damaged_qty: Quantity = Field(
        description="Damaged units among `qty` (0 <= damaged_qty <= qty)."
    )

    @model_validator(mode="after")
    def _damage_within_qty(self) -> ShipmentLine:
        if self.damaged_qty > self.qty:
            damaged, qty = num(self.damaged_qty), num(self.qty)
            raise _error(
                "{damaged} exceeds qty {qty}", field="damaged_qty", damaged=damaged, qty=qty
            )
        return self


OrderLines = _lines(OrderLine)
ShipmentLines = _lines(ShipmentLine)


class _OrderKeyed(_EventBase):
    key_field: ClassVar[str] = "order_id"

    order_id: Id = Field(description="Order id; the message key.")


class OrderEvent(_OrderKeyed):
    """A customer (outbound) or purchase (inbound) order; a later one with the same order_id amends it."""

    source: ClassVar[str] = "orders"

    type: Literal["order"] = "order"
    direction: Direction
    partner: Id = Field(description="Customer (outbound) or supplier (inbound).")
    segment: Id
    promised_at: Timestamp = Field(description="Promised delivery time, RFC 3339 with offset.")
    lines: OrderLines

    @property
    def promised_at_us(self) -> int:
        """Promised delivery time, microseconds since the epoch."""
        return to_us(self.promised_at)


class OrderCancelled(_OrderKeyed):
    """Cancelled: left out if nothing shipped by its deadline, else decided now, not in full."""

    source: ClassVar[str] = "orders"
    type: Literal["order_cancelled"] = "order_cancelled"


class OrderClosed(_OrderKeyed):
    """The order is closed short: no more deliveries will come, decide it now."""

    source: ClassVar[str] = "orders"
    type: Literal["order_closed"] = "order_closed"


class ShipmentEvent(_OrderKeyed):
    """A delivery against an order; an order may have several."""

    source: ClassVar[str] = "shipments"

    type: Literal["shipment"] = "shipment"
    shipment_id: Id
    direction: Direction
    delivered_at: Timestamp = Field(description="Delivery time, RFC 3339 with offset.")
    documents_ok: bool = Field(description="Whether the shipping documents were accurate.")
    lines: ShipmentLines

    @property
    def delivered_at_us(self) -> int:
        """Delivery time, microseconds since the epoch."""
        return to_us(self.delivered_at)


Event = Annotated[
    StateEvent
    | CountEvent
    | CounterEvent
    | OrderEvent
    | OrderCancelled
    | OrderClosed
    | ShipmentEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_MODELS: tuple[type[_EventBase], ...] = get_args(get_args(Event)[0])


def event_type(model: type[_EventBase]) -> str:
    """The `type` tag of an event model, e.g. "state"."""
    return get_args(model.model_fields["type"].annotation)[0]


TOPIC_MODELS: dict[str, tuple[type[_EventBase], ...]] = {
    topic: tuple(m for m in EVENT_MODELS if m.source == topic)
    for topic in ("machine-state", "orders", "shipments")
}
"""Input topic kind -> the event models that belong on it."""
EVENT_TYPES: tuple[str, ...] = tuple(event_type(m) for m in EVENT_MODELS)


def event_to_json(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of the event; timestamps as RFC 3339 strings. Inverse of parse_event."""
    return event.model_dump(mode="json")
