"""Fixtures for tests that need the embedded broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agents.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def shared_broker() -> Iterator[EmbeddedBroker]:
    """One embedded broker for the session; tests isolate themselves by topic names."""
    with EmbeddedBroker() as broker:
        yield broker
