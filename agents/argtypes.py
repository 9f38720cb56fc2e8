"""Option types for the `kpimon` commands: a bad value is one line naming it."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import datetime


def _number(
    kind: type, *, low: float | None = None, above: float | None = None, high: float | None = None
) -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` within the bounds, else a one-line error."""
    bounds = []
    if above is not None:
        bounds.append(f"> {above:g}")
    if low is not None:
        bounds.append(f">= {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    name = "an integer" if kind is int else "a number"
    wanted = f"{name} {' and '.join(bounds)}".strip()

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if (
            not math.isfinite(value)
            or (above is not None and value <= above)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"{text} is not {wanted}")
        return value

    parse.__name__ = wanted  # argparse names the type in some messages
    return parse


positive = _number(float, above=0)
non_negative = _number(float, low=0)
share = _number(float, low=0, high=1)
positive_int = _number(int, low=1)
tcp_port = _number(int, low=1, high=65535)


def rfc3339(text: str) -> str:
    """An argparse type: an RFC 3339 time with its offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time such as 2026-11-02T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no offset (add Z or +01:00)")
    return text
