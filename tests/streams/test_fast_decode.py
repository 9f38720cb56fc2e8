"""decode_message's fast path (one pydantic pass over a message whose every
event is valid) gives exactly what the event-by-event path gives: the same
events, or, on any problem, that path's own errors; and a usual timestamp,
read directly, is what the long way reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import decode
from streams.decode import DecodeResult, decode_message
from streams.events import _RFC3339, _parse_rfc3339
from tests.streams.test_wire import events

# JSON tokens where the two parsers could differ: beyond 64 bits (orjson reads
# a float), NaN and infinities (orjson refuses them), integral floats, escapes.
TOKENS = [
    "18446744073709551615", "18446744073709551616", "-9223372036854775809",
    "1e400", "-1e400", "1e-400", "NaN", "Infinity", "-0", "1.0", "0.1e1", "2E0",
    '"\\ud800"', '"\\u0000"', '"\\u00e9"', "null", "true", "[]", "{}", '""',
]  # fmt: skip
SOURCES = [None, "machine-state", "orders", "shipments"]


def slow(value: bytes, **kwargs: Any) -> DecodeResult:
    fast, decode._all_valid = decode._all_valid, lambda *args: None  # type: ignore[assignment]
    try:
        return decode_message(value, **kwargs)
    finally:
        decode._all_valid = fast


def assert_same(got: DecodeResult, expected: DecodeResult) -> None:
    assert got.errors == expected.errors
    assert got.events == expected.events
    for a, b in zip(got.events, expected.events, strict=True):
        assert type(a) is type(b)
        assert {k: type(v) for k, v in a.__dict__.items()} == {
            k: type(v) for k, v in b.__dict__.items()
        }


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    batch = draw(st.lists(events(), min_size=1, max_size=4))
    # Maybe one field of one event becomes a raw token.
    if draw(st.booleans()):
        event = draw(st.sampled_from(batch))
        field = draw(st.sampled_from(sorted(event)))
        if field == "lines" and draw(st.booleans()):
            line = draw(st.sampled_from(event["lines"]))
            line[draw(st.sampled_from(sorted(line)))] = "@@TOKEN@@"
        else:
            event[field] = "@@TOKEN@@"
    value = orjson.dumps(batch if draw(st.booleans()) or len(batch) > 1 else batch[0])
    value = value.replace(b'"@@TOKEN@@"', draw(st.sampled_from(TOKENS)).encode())
    first = batch[0]
    key = draw(
        st.sampled_from(
            [
                None,
                "nobody",
                first.get("machine", first.get("order_id")),
                f"{first.get('site')}/{first.get('line')}",
            ]
        )
    )
    spaced = draw(st.sampled_from([b"", b" ", b"\n\t"]))
    return spaced + value + spaced, {
        "key": key,
        "source": draw(st.sampled_from(SOURCES)),
        "max_batch": draw(st.sampled_from([2, 10])),
    }


@settings(max_examples=800, derandomize=True, deadline=None)
@given(messages())
def test_the_fast_path_gives_what_the_slow_path_gives(
    message: tuple[bytes, dict[str, Any]],
) -> None:
    value, kwargs = message
    assert_same(decode_message(value, **kwargs), slow(value, **kwargs))


@pytest.mark.parametrize(
    "value",
    [
        b'{"type": "order", "event_id": "o1", "ts": "2026-11-22T08:00:00Z", "order_id": "SO-1",'
        b' "direction": "outbound", "partner": "C", "segment": "A",'
        b' "promised_at": "2026-11-24T17:00:00Z",'
        b' "lines": [{"line_no": 18446744073709551616, "sku": "S", "qty": 1}]}',
        b"\xef\xbb\xbf[]",
        b"[] x",
        "[]",
        b"[]",
        b"[1]",
        b"",
    ],
)
def test_edges_of_the_two_parsers(value: bytes | str) -> None:
    assert_same(decode_message(value), slow(value))  # type: ignore[arg-type]


def reference_timestamp(value: str) -> datetime:
    """RFC 3339 text read the long way: fraction cut or padded to µs, Z as +00:00."""
    match = _RFC3339.fullmatch(value)
    assert match is not None
    date, time, fraction, offset = match.groups()
    micros = (fraction or "")[:6].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    return datetime.fromisoformat(f"{date}T{time}.{micros}{offset}")


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(
    st.datetimes(),
    st.sampled_from("Tt "),
    st.sampled_from(["", ".5", ".123", ".123456", ".1234567", ".000000"]),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+23:59", "-12:30", "+14:00"]),
)
def test_a_usual_timestamp_read_directly_is_the_one_read_the_long_way(
    at: datetime, separator: str, fraction: str, offset: str
) -> None:
    value = (
        f"{at.year:04}-{at.month:02}-{at.day:02}{separator}"
        f"{at.hour:02}:{at.minute:02}:{at.second:02}{fraction}{offset}"
    )
    parsed, expected = _parse_rfc3339(value), reference_timestamp(value)
    assert isinstance(parsed, datetime)
    assert (parsed, parsed.tzinfo, parsed.microsecond) == (
        expected,
        expected.tzinfo,
        expected.microsecond,
    )
