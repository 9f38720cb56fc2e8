"""What `/healthz` judges: the worker does its share of the pipeline.

A worker that holds engine partitions proves itself by its clock ticks
making the round trip: sent to the engine topic, read back and applied by
its own engine. That covers the producer, the broker, the consumer and the
engine at once.

A worker that holds no engine partition (a second worker of the group, or
one taking over later) never reads a tick back, so it is judged on what it
does instead:

- it has joined the consumer group (Faust told it its assignment);
- its clock ticks are delivered: the broker acknowledged one within the
  limit, so the producer reaches the broker (its forwards go the same way);
- ingest keeps up with every input partition it holds: within the limit
  each was either read to an end offset fresh from the broker (caught up,
  see `agents.progress`), or read further. A partition with unread messages
  and no reading for that long, or whose end offset the broker stopped
  telling, is named in the reason.

That is `/healthz`: the pipeline does its share *promptly*. A worker
draining a flood is not prompt (its ticks wait behind the flood: measured
26 to 74 s for a million tiny bad messages), yet it is alive and must not
be restarted. So the probes ask two other questions:

- **live** (`/livez`, :func:`live`): the worker makes progress, however
  slowly: within the limit the engine applied a message (a clock tick
  counts), or ingest processed an input message, or, holding no engine
  partition, its ticks are delivered and every input it holds is caught up
  (nothing to do). A rebalance or a table restore in progress is live too:
  Faust runs no agent meanwhile. Restarting a worker that fails this helps.
- **ready** (`/readyz`, :func:`ready`): healthy as above, no output held
  back, and caught up: every input partition it holds was read to its end
  within the limit. A worker draining a backlog is not ready, and says how
  far behind.

All times are monotonic seconds; nothing here reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IngestProgress:
    """When ingest was last seen keeping up with each input partition it holds.

    Observed on every clock tick: a partition keeps up when it is caught up
    or when the offset read moved since the previous tick. A partition
    newly held starts kept up (reading resumes where the group left it).
    """

    seen: dict[str, tuple[int | None, float]] = field(default_factory=dict)
    """"topic:partition" -> (offset last read, monotonic time last kept up)."""
    caught_up_at: dict[str, float | None] = field(default_factory=dict)
    """"topic:partition" -> monotonic time it was last read to its end (None: not
    since it is held)."""

    def observe(self, now: float, caught_up: dict[str, bool], read: dict[str, int | None]) -> None:
        """`caught_up` per held input partition (from the tick); `read`: offsets last read."""
        seen: dict[str, tuple[int | None, float]] = {}
        for name, done in caught_up.items():
            offset = read.get(name)
            before = self.seen.get(name)
            if done or before is None or offset != before[0]:
                seen[name] = (offset, now)
            else:
                seen[name] = before
        self.seen = seen  # partitions no longer held are forgotten
        self.caught_up_at = {
            name: now if done else self.caught_up_at.get(name) for name, done in caught_up.items()
        }

    def behind(self, now: float, limit_s: float) -> dict[str, float | None]:
        """Held input partitions not read to their end within `limit_s`: name ->
        seconds since they last were (None: not since they are held)."""
        return {
            name: None if at is None else now - at
            for name, at in sorted(self.caught_up_at.items())
            if at is None or now - at > limit_s
        }

    def stalled(self, now: float, limit_s: float) -> dict[str, float]:
        """Held input partitions not kept up for over `limit_s`: name -> seconds."""
        return {name: now - at for name, (_, at) in sorted(self.seen.items()) if now - at > limit_s}


@dataclass(frozen=True)
class Health:
    healthy: bool
    basis: str
    """"engine round trip" or "ticks delivered, ingest keeping up"."""
    reason: str | None = None


ROUND_TRIP = "engine round trip"
DELIVERY = "ticks delivered, ingest keeping up"


def judge(
    now: float,
    limit_s: float,
    *,
    holds_engine: bool,
    tick_seen: float | None,
    joined: bool,
    tick_delivered: float | None,
    ingest: IngestProgress,
) -> Health:
    """Healthy or not, on which basis, and why not (module docstring)."""
    if holds_engine:
        if tick_seen is None:
            return Health(False, ROUND_TRIP, "no clock tick has come back through the broker yet")
        since = now - tick_seen
        if since > limit_s:
            return Health(
                False,
                ROUND_TRIP,
                f"last clock tick came back {since:.0f} s ago (limit {limit_s:.0f} s)",
            )
        return Health(True, ROUND_TRIP)
    if not joined:
        return Health(False, DELIVERY, "not in the consumer group yet (no assignment received)")
    if tick_delivered is None:
        return Health(False, DELIVERY, "no clock tick has been delivered to the broker yet")
    since = now - tick_delivered
    if since > limit_s:
        return Health(
            False,
            DELIVERY,
            f"last clock tick delivered to the broker {since:.0f} s ago (limit {limit_s:.0f} s)",
        )
    stalled = ingest.stalled(now, limit_s)
    if stalled:
        named = ", ".join(f"{name} ({s:.0f} s)" for name, s in stalled.items())
        return Health(
            False,
            DELIVERY,
            f"input partitions neither caught up nor read further within {limit_s:.0f} s: {named}",
        )
    return Health(True, DELIVERY)


LIVE_MOVING = "the pipeline moves"
LIVE_IDLE = "nothing to do, ticks delivered"
LIVE_REBALANCING = "rebalancing or restoring tables"


def live(
    now: float,
    limit_s: float,
    *,
    joined: bool,
    rebalancing: bool,
    holds_engine: bool,
    engine_applied: float | None,
    ingest_processed: float | None,
    tick_delivered: float | None,
    ingest: IngestProgress,
) -> Health:
    """Alive: the worker makes progress, however slowly (module docstring).

    `engine_applied`, `ingest_processed`, `tick_delivered`: monotonic times the
    engine last applied a message, ingest last processed an input message,
    the broker last acknowledged a clock tick.
    """
    if rebalancing:
        return Health(True, LIVE_REBALANCING)
    if not joined:
        return Health(False, LIVE_MOVING, "not in the consumer group yet (no assignment received)")
    moved = [at for at in (engine_applied, ingest_processed) if at is not None]
    if moved and now - max(moved) <= limit_s:
        return Health(True, LIVE_MOVING)
    idle = not holds_engine and not ingest.behind(now, limit_s)
    if idle and tick_delivered is not None and now - tick_delivered <= limit_s:
        return Health(True, LIVE_IDLE)
    last = f"{now - max(moved):.0f} s ago" if moved else "never"
    waiting = "its engine partitions" if holds_engine else "unread input"
    return Health(
        False,
        LIVE_MOVING,
        f"nothing moved within {limit_s:.0f} s with {waiting} waiting "
        f"(engine or ingest last moved {last})",
    )


CAUGHT_UP = "healthy and caught up"


def ready(now: float, limit_s: float, health: Health, ingest: IngestProgress) -> Health:
    """Ready: `health` (the `/healthz` judgement, outputs held back included)
    holds, and every input partition held was read to its end within `limit_s`."""
    if not health.healthy:
        return Health(False, CAUGHT_UP, health.reason)
    behind = ingest.behind(now, limit_s)
    if behind:
        named = ", ".join(
            f"{name} ({'not yet' if s is None else f'{s:.0f} s'})" for name, s in behind.items()
        )
        return Health(False, CAUGHT_UP, f"not caught up within {limit_s:.0f} s: {named}")
    return Health(True, CAUGHT_UP)
