"""Fixtures of the runner unit tests: a SQLite storage whose heartbeats are fast."""

from __future__ import annotations

import pytest

from taskgraph.runners.storage import open_storage


@pytest.fixture
def fast_heartbeat(monkeypatch):
    """Heartbeats every 1 s, stale after 2 s (the defaults are 10 and 60)."""
    monkeypatch.setenv("TASKGRAPH_HEARTBEAT_S", "1")
    monkeypatch.setenv("TASKGRAPH_HEARTBEAT_GRACE_S", "2")


@pytest.fixture
def storage(tmp_path, fast_heartbeat):
    """A new SQLite storage with fast heartbeats."""
    return open_storage(f"sqlite:///{tmp_path / 's.db'}")
