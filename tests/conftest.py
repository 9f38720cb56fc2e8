"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[EmbeddedBroker]:
    """One memory-only Tansu broker for the whole test session.

    Shared state: use unique topic and group names per test (e.g. with a
    ``uuid4().hex`` suffix), don't stop or restart it (start your own
    :class:`EmbeddedBroker` for that), and pre-create topics with
    ``embedded_broker.create_topics_sync`` -- a Metadata request for an unknown
    topic makes Tansu auto-create it with 4 partitions.
    """
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def shared_broker() -> Iterator[EmbeddedBroker]:
    """One embedded broker for the session; tests isolate themselves by topic names."""
    with EmbeddedBroker() as broker:
        yield broker
