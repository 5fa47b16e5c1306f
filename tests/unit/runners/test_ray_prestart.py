"""Tune's trial actors may start in the workers Ray prestarted: the runner drops Tune's Lightning-only env var."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.tune")


def test_prestarted_workers_drops_the_lightning_variable_and_restores_it():
    from ray.tune.execution.class_cache import DEFAULT_ENV_VARS

    from taskgraph.runners.ray_tune import _prestarted_workers

    before = dict(DEFAULT_ENV_VARS)
    assert before.get("PL_DISABLE_FORK") == "1"  # what Tune gives every trial actor (Ray 2.60)
    with _prestarted_workers():
        assert "PL_DISABLE_FORK" not in DEFAULT_ENV_VARS
    assert DEFAULT_ENV_VARS == before
    with pytest.raises(RuntimeError), _prestarted_workers():
        raise RuntimeError("a failing fit")
    assert DEFAULT_ENV_VARS == before
