"""Kafka message values -> validated events and readable errors; never raises on input.

A message value is one event object or a JSON array of them (a batch) of
the message's key: one machine's or one order's events, or on machine-state
a gateway's events of several machines of one line, keyed `<site>/<line>`.
`decode_message` turns raw bytes into the valid events plus one `EventError`
per rejected message or batch element; the good elements of a batch survive
their bad neighbours. Every error reads '<field path>: <problem>', in our
words rather than pydantic's. The models themselves are in `streams.events`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from streams.events import (
    EVENT_ADAPTER,
    EVENT_MODELS,
    EVENT_TYPES,
    TOPIC_MODELS,
    Event,
    OrderLine,
    ShipmentLine,
    event_type,
)
from streams.wording import json_type, num, short

ErrorReason = Literal[
    "undecodable",
    "tombstone",
    "schema",
    "key_mismatch",
    "wrong_topic",
    "message_too_large",
    "batch_too_long",
    "not_an_object",
    "future_timestamp",
]

# ---------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class EventError:
    """Why a message, or one element of a batch (`index`), was rejected."""

    reason: ErrorReason
    message: str
    index: int | None = None


@dataclass(slots=True)
class DecodeResult:
    """The valid events of one message and one error per rejected message or element."""

    events: list[Event] = field(default_factory=list)
    errors: list[EventError] = field(default_factory=list)


class EventValidationError(ValueError):
    """An event object broke the contract; the message lists each problem."""


_MAX_PROBLEMS = 10


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("["):
            out += part
        else:
            out += f".{part}" if out else part
    return out or "event"


_PROBLEMS = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
    "literal_error": "unknown value {input}, expected {expected}",
    "string_too_short": "must not be empty",
    "string_too_long": "longer than {max_length} characters",
    "greater_than_equal": "must be >= {ge}, got {input}",
    "greater_than": "must be > {gt}, got {input}",
    "finite_number": "must be a finite number",
    "timezone_aware": "timestamp has no timezone offset",
    "string_type": "expected a string, got {got}",
    "int_type": "expected an integer, got {got}",
    "float_type": "expected a number, got {got}",
    "bool_type": "expected true or false, got {got}",
    "tuple_type": "expected an array, got {got}",
    "model_type": "expected an object, got {got}",
    "model_attributes_type": "expected an object, got {got}",
}
"""Pydantic error type -> our wording; ctx keys, `input` and `got` (its JSON type) fill it."""


def _problems(exc: ValidationError) -> list[str]:
    """Pydantic errors -> '<field path>: <problem>', one per problem."""
    out = []
    allowed = ", ".join(EVENT_TYPES)
    for err in exc.errors(include_url=False):
        kind, loc, ctx, value = err["type"], err["loc"], err.get("ctx") or {}, err.get("input")
        if kind == "union_tag_invalid":
            out.append(f"type: unknown event type {short(ctx.get('tag'))}; allowed: {allowed}")
            continue
        if kind == "union_tag_not_found":
            out.append(f"type: required field is missing; allowed: {allowed}")
            continue
        loc = loc[1:] if loc and loc[0] in EVENT_TYPES else loc  # drop the union tag
        if "field" in ctx:
            loc = (*loc, ctx["field"])
        template = _PROBLEMS.get(kind)
        problem = err["msg"]  # our own errors are already worded
        if template is not None:
            fill = {k: num(v) for k, v in ctx.items()}
            problem = template.format(input=short(value), got=json_type(value), **fill)
        out.append(f"{_path(loc)}: {problem}")
    return out


def _describe(exc: ValidationError) -> str:
    problems = _problems(exc)
    if len(problems) > _MAX_PROBLEMS:
        rest = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], f"... and {rest} more"]
    return "; ".join(problems)


# ---------------------------------------------------------------- decoding


def parse_event(obj: dict[str, Any]) -> Event:
    """Validate one event object (as decoded from JSON, or built in Python).

    Raises EventValidationError with a '<field path>: <problem>; ...' message.
    """
    if not isinstance(obj, dict):
        raise EventValidationError(f"expected an event object, got {json_type(obj)}")
    try:
        return EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise EventValidationError(_describe(exc)) from exc


def _check_one(
    obj: object, index: int | None, key: str | None, source: str | None
) -> Event | EventError:
    if not isinstance(obj, dict):
        return EventError("not_an_object", f"expected an event object, got {json_type(obj)}", index)
    try:
        event = EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        return EventError("schema", _describe(exc), index)
    except Exception as exc:  # a poison message must become an error, never stall the partition
        return EventError("schema", f"event: cannot validate ({type(exc).__name__})", index)
    if source is not None and event.source != source:
        allowed = ", ".join(event_type(m) for m in TOPIC_MODELS[source])
        message = f"type: {event.type!r} does not belong on topic {source!r} (allowed: {allowed})"
        return EventError("wrong_topic", message, index)
    if key is not None and not _belongs(event, key):
        message = (
            f"{event.key_field}: {short(event.key)} does not match the message key {short(key)}"
        )
        line_key = getattr(event, "line_key", None)
        if line_key is not None and "/" in key:
            message += f", nor does its line {short(line_key)}"
        return EventError("key_mismatch", message, index)
    return event


def _belongs(event: Event, key: str) -> bool:
    """Whether an event may be in a message of `key`: its own key, or for a
    machine event its line's, `<site>/<line>` (a gateway batch)."""
    return event.key == key or getattr(event, "line_key", None) == key


def decode_message(
    value: bytes | str | None,
    *,
    key: str | bytes | None = None,
    source: str | None = None,
    max_bytes: int = 1_048_576,
    max_batch: int = 10_000,
) -> DecodeResult:
    """One Kafka message value (an event object or a JSON array of them) -> events and errors.

    `key`, if given, must equal every event's `key`, or for a machine event its
    `line_key` (`<site>/<line>`: a gateway batch of that line's machines);
    `source` ("machine-state", "orders", "shipments"), if given, must be every
    event's topic kind.
    `max_bytes` is the largest accepted value in bytes, `max_batch` the longest
    accepted batch in events. Never raises on any value; raises ValueError only
    for an unknown `source`, which is a caller bug.
    """
    if source is not None and source not in TOPIC_MODELS:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(TOPIC_MODELS)}")
    if value is None:
        return _rejected(
            "tombstone", "value: null (a tombstone); input topics carry events, never deletions"
        )
    if isinstance(value, str):
        size = len(value) if len(value) > max_bytes else len(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, bytes | bytearray | memoryview):
        size = len(value)
    else:
        return _rejected("undecodable", f"expected bytes, got {json_type(value)}")
    if size > max_bytes:
        return _rejected(
            "message_too_large", f"message is {size} bytes, over the limit of {max_bytes}"
        )
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    events = _all_valid(value, key, source, max_batch)
    if events is not None:
        return DecodeResult(events)
    try:
        doc = orjson.loads(value)
    except Exception as exc:  # JSONDecodeError, including depth limit, bad UTF-8 and NaN
        return _rejected("undecodable", f"not valid JSON: {exc}")
    if isinstance(doc, list) and len(doc) > max_batch:
        return _rejected(
            "batch_too_long", f"batch has {len(doc)} events, over the limit of {max_batch}"
        )
    items: Iterable[tuple[int | None, object]] = (
        enumerate(doc) if isinstance(doc, list) else [(None, doc)]
    )
    result = DecodeResult()
    for index, obj in items:
        outcome = _check_one(obj, index, key, source)
        if isinstance(outcome, EventError):
            result.errors.append(outcome)
        else:
            result.events.append(outcome)
    return result


_BATCH_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
_validate_batch = _BATCH_ADAPTER.validator.validate_json
_validate_event = EVENT_ADAPTER.validator.validate_json
"""The adapters' own validators, without `TypeAdapter.validate_json`'s wrapper (a
call an input message)."""
_MAX_LINE_NO = 2**64 - 1
"""orjson reads a larger integer as a float, which the slow path rejects as a line_no."""


def _all_valid(
    value: str | bytes | bytearray | memoryview, key: str | None, source: str | None, max_batch: int
) -> list[Event] | None:
    """The events of a message whose every event is valid, in one pydantic pass
    over its JSON (about a third of the time of orjson then event by event);
    None on any problem at all, for the slow path to find and word it."""
    if isinstance(value, memoryview):
        return None
    try:
        first = value.lstrip()[:1]
        events = _validate_batch(value) if first in (b"[", "[") else [_validate_event(value)]
    except Exception:  # invalid, or anything pydantic's JSON parser takes amiss
        return None
    if len(events) > max_batch:
        return None
    for event in events:
        if source is not None and event.source != source:
            return None
        if key is not None and event.key != key and not _belongs(event, key):
            return None
        if event.type in _LINE_MODELS and any(
            line.line_no > _MAX_LINE_NO
            for line in event.lines  # type: ignore[union-attr]
        ):
            return None
    return events


def _rejected(reason: ErrorReason, message: str) -> DecodeResult:
    return DecodeResult(errors=[EventError(reason, message)])


# ---------------------------------------------------------------- the engine topic's wire form

WIRE_VERSION = 1
"""Version of `to_wire`'s form; bump it whenever a model's fields change."""

_TIMESTAMPS = frozenset({"ts", "promised_at", "delivered_at"})
_LINE_MODELS: dict[str, type[OrderLine | ShipmentLine]] = {
    "order": OrderLine,
    "shipment": ShipmentLine,
}
WIRE_FIELDS: dict[str, tuple[str, ...]] = {
    event_type(m): tuple(n for n in m.model_fields if n != "type") for m in EVENT_MODELS
}
"""Event type -> the fields `to_wire` writes after the version and the type, in order."""

_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _trusted(model: type[Any], values: dict[str, Any]) -> Any:
    """A model instance of already-validated values, as `model_construct` makes
    it but without its per-field work (0.6 µs instead of 3.3 for a count)."""
    obj = _new(model)
    _set_dict(obj, values)
    _set_fields_set(obj, set(values))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


def _wire_decoder(model: type[Any]) -> Callable[[list[Any]], Any]:
    """The `trusted_event` of one event type: values by position, timestamps
    parsed, lines made models; a wrong length raises (zip strict)."""
    kind = event_type(model)
    names = ("type", *WIRE_FIELDS[kind])
    stamps = tuple(n for n in names if n in _TIMESTAMPS)
    line_model = _LINE_MODELS.get(kind)
    line_names = tuple(line_model.model_fields) if line_model is not None else ()
    parse_time = datetime.fromisoformat

    def decode(data: list[Any]) -> Any:
        values = dict(zip(names, data[1:], strict=True))
        for name in stamps:
            values[name] = parse_time(values[name])
        if line_model is not None:
            values["lines"] = tuple(
                _trusted(line_model, dict(zip(line_names, line, strict=True)))
                for line in values["lines"]
            )
        return _trusted(model, values)

    return decode


_DECODERS = {event_type(m): _wire_decoder(m) for m in EVENT_MODELS}


def to_wire(event: Event) -> list[Any]:
    """An event validated here -> its engine-topic form, for `trusted_event`.

    `[WIRE_VERSION, type, *values]`: the values of `WIRE_FIELDS[type]` in
    order, timestamps as RFC 3339 text with their offset (orjson writes
    datetimes so), order and shipment lines as arrays of their values. Only
    for events validated by this code: the engine side trusts it.
    """
    out = [WIRE_VERSION, event.type, *_WIRE_VALUES[event.type](event.__dict__)]
    if event.type in _LINE_MODELS:
        at = _LINES_AT[event.type]
        out[at] = [list(line.__dict__.values()) for line in out[at]]
    return out


_WIRE_VALUES = {kind: operator.itemgetter(*names) for kind, names in WIRE_FIELDS.items()}
"""Event type -> the values of its `WIRE_FIELDS`, in order, from the event's `__dict__`."""
_LINES_AT = {kind: 2 + WIRE_FIELDS[kind].index("lines") for kind in _LINE_MODELS}


def trusted_event(data: list[Any] | dict[str, Any]) -> Event:
    """An engine-topic event -> the event ingest validated, without validating again.

    The `to_wire` form is trusted: ingest validated it and wrote it. A
    contract object (a dict, as ingest forwarded events before `to_wire`,
    still on the topic from an older worker) is validated as `parse_event`
    does. Raises ValueError on a wire version this code does not know (a
    newer worker's), which must not be guessed at.
    """
    if isinstance(data, dict):
        return parse_event(data)
    if data[0] != WIRE_VERSION:
        raise ValueError(
            f"engine-topic event of wire version {data[0]!r}; this worker reads {WIRE_VERSION}"
        )
    return _DECODERS[data[1]](data)  # type: ignore[no-any-return]
