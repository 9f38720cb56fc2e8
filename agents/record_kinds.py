"""Output record kinds the shell does not know: logged once, never dropped in silence.

Records are dicts whose `kpi` names their kind (`oee`, `perfect_order`,
`pchart`, `chain`, `safety_stock`; see `streams.records`). The metrics
collector and the wall each dispatch on it through one table; a kind
missing from a table (a record kind the engine gained later) is noted here
and logged the first time each place meets it, so it shows in the log
instead of vanishing from `/metrics` or the wall.
"""

from __future__ import annotations

import logging

log = logging.getLogger("kpimon")


class UnknownKinds:
    """The record kinds one place (`where`) met without a handler; each logged once."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.seen: set[str] = set()

    def note(self, kind: str) -> None:
        if kind in self.seen:
            return
        self.seen.add(kind)
        log.warning("%s: records of kind %r are not handled here (left out)", self.where, kind)
