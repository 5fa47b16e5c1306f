"""Canary for the one private name the suite's own scheduling relies on (tests/conftest.py).

``make test`` runs on pytest-xdist workers with the Ray tests kept together on one worker by a
scheduler that overrides ``LoadScopeScheduling._split_scope`` (xdist's own ``loadgroup`` loses its
groups under this pytest). If xdist renames that method, the override would silently stop applying
and the Ray tests would run on both workers at once: this test fails first.
"""

import inspect

import pytest


def test_xdist_scope_scheduling_still_splits_work_by_split_scope():
    scheduler = pytest.importorskip("xdist.scheduler")
    split = getattr(scheduler.LoadScopeScheduling, "_split_scope", None)
    assert callable(split), "xdist.scheduler.LoadScopeScheduling._split_scope is gone: see tests/conftest.py"
    assert list(inspect.signature(split).parameters) == ["self", "nodeid"]
