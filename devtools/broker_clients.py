"""What a client of the embedded broker needs: quick group settings and topic creation.

Tansu's consumer-group joins are slow with the clients' default timeouts, and
it auto-creates an unknown topic with 4 partitions as soon as any client asks
for its metadata (see :mod:`devtools.broker`). The settings here make joins
quick, and :func:`create_topics` creates topics before a client looks at
them. Both are for tests and local runs; they need no running
:class:`devtools.broker.EmbeddedBroker`, only its address.
"""

from __future__ import annotations

from collections.abc import Mapping

#: aiokafka consumer-group settings that make joins quick against Tansu.  Tansu
#: holds a JoinGroup for about max(1 s, session_timeout / 2), so aiokafka's default
#: 10 s session costs ~5 s per join (and Faust's 60 s default ~30 s); with these a
#: first join takes ~1 s.  A LeaveGroup is acknowledged but the departed member
#: stays the group leader until its session expires, so a restart with the same
#: group id also costs ~2-3 session timeouts.  ``rebalance_timeout_ms`` has no
#: measurable effect on Tansu.  Meant for tests and local runs, not production.
FAST_GROUP_SETTINGS: dict[str, int] = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 200,
    "rebalance_timeout_ms": 2000,
}

#: The same for ``faust.App(**FAST_FAUST_SETTINGS)`` (seconds), plus a short commit
#: interval and no web server (avoids fixed port 6066 clashing between apps).
FAST_FAUST_SETTINGS: dict[str, object] = {
    "broker_session_timeout": 2.0,
    "broker_heartbeat_interval": 0.2,
    "broker_rebalance_timeout": 2.0,
    "broker_commit_interval": 0.2,
    "web_enabled": False,
}


async def create_topics(
    bootstrap: str, names_with_partitions: Mapping[str, int], *, timeout_ms: int = 10_000
) -> None:
    """Create topics (``{name: partitions}``, replication factor 1) on *bootstrap*.

    Idempotent: a topic that already exists is left as it is (even if its
    partition count differs).
    """
    if not names_with_partitions:
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, int(n), 1) for name, n in names_with_partitions.items()],
            timeout_ms=timeout_ms,
        )
        failures = []
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code == 0:
                continue
            error = for_code(code)
            if error is TopicAlreadyExistsError:
                continue
            message = entry[2] if len(entry) > 2 else None
            failures.append(f"{name}: {error.__name__} ({message})")
        if failures:
            raise RuntimeError("could not create topics: " + "; ".join(failures))
    finally:
        await admin.close()
