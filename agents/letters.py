"""Dead-letter envelopes: one JSON object per input message or event not applied.

Two places write them, in one shape (README, "Dead letters"):
- ingest (`agents.pipeline.route`), for a message that breaks the contract:
  the original bytes, where it came from, every error;
- the engine partition (`agents.pipeline.Shard`), for a valid event the
  engine refused (`streams.engine.REFUSALS`): the event's contract JSON
  as the value. The engine topic does not carry input offsets or keys, so
  `offset` is null and `key` is the event's key (what the contract asks
  the message key to be).
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import orjson

TEXT_CHARS = 4096
"""`value_text` is cut at this many characters; `value_b64` keeps every byte."""


def envelope(
    raw: bytes,
    errors: list[dict[str, Any]],
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: str | None,
    received_us: int,
    valid_events_forwarded: int,
) -> bytes:
    """The dead-letter value; its reason is the first error's."""
    letter: dict[str, Any] = {
        "reason": errors[0]["reason"],
        "errors": errors,
        "source": {"topic": topic, "partition": partition, "offset": offset, "key": key},
        "valid_events_forwarded": valid_events_forwarded,
        "received_us": received_us,
        "value_b64": base64.b64encode(raw).decode(),
    }
    with contextlib.suppress(UnicodeDecodeError):
        letter["value_text"] = raw.decode("utf-8")[:TEXT_CHARS]
    return orjson.dumps(letter)


def refusal_letter(
    source: str, refused: dict[str, Any], key: str | None, received_us: int
) -> tuple[str, str, bytes]:
    """(input topic, reason, envelope) of an event the engine refused.

    `source` is the run's input partition, `topic:partition`; `refused` an
    entry of `Output.rejected`. Nothing of the value was applied, so
    `valid_events_forwarded` is 0.
    """
    topic, _, partition = source.rpartition(":")
    if not topic or not partition.isdigit():
        topic, partition = source, ""  # not `topic:partition`: name it as it is
    reason = refused["reason"]
    value = envelope(
        orjson.dumps(refused["event"]),
        [{"index": None, "reason": reason, "error": refused["error"]}],
        topic=topic,
        partition=int(partition) if partition else None,
        offset=None,
        key=key,
        received_us=received_us,
        valid_events_forwarded=0,
    )
    return topic, reason, value
