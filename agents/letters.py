"""Dead-letter envelopes: one JSON object per input message or event not applied.

Two places write them, in one shape (README, "Dead letters"):
- ingest (`agents.pipeline.route`), for a message that breaks the contract:
  the original bytes, where it came from, every error;
- the engine partition (`agents.pipeline.Shard`), for a valid event the
  engine refused (`streams.engine.REFUSALS`): the event's contract JSON
  as the value. The engine topic does not carry input offsets, so
  `offset` is null, `key` is the event's key (what the contract asks
  the message key to be) and `engine` names the engine-topic message and
  the refusal's place among its refusals.

Every letter has coordinates no other letter has (`letter_id`): the input
offset, or the engine-topic offset and index. A worker that reads input or
engine messages again after a crash skips the letters already on the topic
(`agents.resume`), so each bad message is there once.

An original larger than `ORIGINAL_BYTES` travels cut to that many bytes
(`truncated`), beside its full `size_bytes` and `sha256`: the envelope must
fit the producer's request and the broker's message limit (Kafka's default
is 1 MB), and the whole original stays in its input topic for its retention.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
from typing import Any

import orjson

TEXT_CHARS = 4096
"""`value_text` is cut at this many characters."""

ORIGINAL_BYTES = 262_144
"""`value_b64` carries at most this many bytes of the original (256 KiB).

With its base64 (4/3), `value_text` (at most 6 bytes a character escaped)
and `ERRORS_KEPT` errors, an envelope stays under 0.6 MB: below the
worker's producer limit (at least 2 MiB) and a default Kafka broker's 1 MB.
"""

ERRORS_KEPT = 100
"""Errors listed in a letter, at most; `errors_total` counts them all."""

ERROR_CHARS = 1000
"""An error message is cut at this many characters."""


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
    engine: dict[str, Any] | None = None,
    original_bytes: int = ORIGINAL_BYTES,
) -> bytes:
    """The dead-letter value; its reason is the first error's.

    `engine`: the engine-topic coordinates of a refusal (`refusal_letter`).
    """
    carried = raw[:original_bytes]
    source: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset, "key": key}
    if engine is not None:
        source["engine"] = engine
    letter: dict[str, Any] = {
        "reason": errors[0]["reason"],
        "errors": [_cut(e) for e in errors[:ERRORS_KEPT]],
        "source": source,
        "valid_events_forwarded": valid_events_forwarded,
        "received_us": received_us,
        "size_bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "truncated": len(carried) < len(raw),
        "value_b64": base64.b64encode(carried).decode(),
    }
    if len(errors) > ERRORS_KEPT:
        letter["errors_total"] = len(errors)
    text = _text(carried, whole=len(carried) == len(raw))
    if text is not None:
        letter["value_text"] = text
    return orjson.dumps(letter)


def _cut(error: dict[str, Any]) -> dict[str, Any]:
    message = error.get("error")
    if isinstance(message, str) and len(message) > ERROR_CHARS:
        return {**error, "error": message[:ERROR_CHARS] + "..."}
    return error


def _text(carried: bytes, *, whole: bool) -> str | None:
    """The first `TEXT_CHARS` characters when the bytes are UTF-8 (all of them when
    `whole`; a cut original may end inside a character), else None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(carried, final=whole)[:TEXT_CHARS]
    except UnicodeDecodeError:
        return None


def letter_id(value: bytes) -> tuple[Any, ...] | None:
    """The coordinates only this letter has: ("input", topic, partition, offset)
    for ingest's, ("engine", topic, partition, offset, index) for a refusal's;
    None for a value that is no letter of this shape (an older version's)."""
    try:
        source = orjson.loads(value)["source"]
        engine = source.get("engine")
        if engine is not None:
            return (
                "engine",
                engine["topic"],
                engine["partition"],
                engine["offset"],
                engine["index"],
            )
        if source["offset"] is None:
            return None
        return ("input", source["topic"], source["partition"], source["offset"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


def split_source(source: str) -> tuple[str, int | None]:
    """`topic:partition` -> (topic, partition); anything else is named as it is."""
    topic, _, partition = source.rpartition(":")
    if not topic or not partition.isdigit():
        return source, None
    return topic, int(partition)


def refusal_letter(
    source: str,
    refused: dict[str, Any],
    key: str | None,
    received_us: int,
    *,
    engine: tuple[str, int, int] | None = None,
) -> tuple[str, str, bytes]:
    """(input topic, reason, envelope) of an event the engine refused.

    `source` is the run's input partition, `topic:partition`; `refused` an
    entry of `Output.rejected`; `engine` the engine-topic message it came in
    (`topic:partition`, offset) and its index among that message's
    refusals. Nothing of the value was applied, so `valid_events_forwarded`
    is 0.
    """
    topic, partition = split_source(source)
    reason = refused["reason"]
    coordinates = None
    if engine is not None:
        engine_topic, engine_partition = split_source(engine[0])
        coordinates = {
            "topic": engine_topic,
            "partition": engine_partition,
            "offset": engine[1],
            "index": engine[2],
        }
    value = envelope(
        orjson.dumps(refused["event"]),
        [{"index": None, "reason": reason, "error": refused["error"]}],
        topic=topic,
        partition=partition,
        offset=None,
        key=key,
        received_us=received_us,
        valid_events_forwarded=0,
        engine=coordinates,
    )
    return topic, reason, value
