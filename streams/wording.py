"""How a value is worded in an error message: its JSON type, a number as
written, a short quote. Shared by the event models (`streams.events`) and
the decoder (`streams.decode`), so every error reads the same."""

from __future__ import annotations

JSON_TYPES = {
    str: "string", int: "integer", float: "number", bool: "boolean",
    dict: "object", list: "array", tuple: "array", type(None): "null",
}  # fmt: skip


def json_type(value: object) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def num(value: float) -> int | float:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def short(value: object) -> str:
    # Never repr containers: a deeply nested one would recurse, a big one would flood logs.
    if isinstance(value, dict | list | tuple):
        return json_type(value)
    text = repr(num(value) if isinstance(value, float) else value)
    return text if len(text) <= 40 else text[:37] + "..."
