"""Engine-topic forwards read back with their events as contract JSON.

Ingest forwards events in the engine topic's trusted form (`to_wire`);
tests written against contract JSON read forwards through `read_forward`.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.decode import trusted_event
from streams.events import event_to_json


def read_forward(value: bytes) -> dict[str, Any]:
    """An engine-topic forward, its runs' events as contract JSON."""
    forward: dict[str, Any] = orjson.loads(value)
    for run in forward.get("runs", ()):
        run["events"] = [event_to_json(trusted_event(e)) for e in run["events"]]
    return forward
