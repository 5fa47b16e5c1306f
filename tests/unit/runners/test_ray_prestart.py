"""The Ray runner's start-up and reporting parts: prestarted workers, preloaded modules, reports at ASHA's rungs."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace as NS

import pytest

pytest.importorskip("ray.tune")


def test_canary_tunes_trial_actor_environment_is_where_the_one_private_hook_expects_it():
    """Fails when a Ray release moves or changes Tune's per-actor environment (then revisit tune_actor_env)."""
    from taskgraph.runners.ray_tune import tune_actor_env

    env = tune_actor_env()
    assert isinstance(env, dict), "Ray Tune no longer keeps its trial actors' env_vars where tune_actor_env looks"
    assert env.get("PL_DISABLE_FORK") == "1", env  # what Tune gives every trial actor (Ray 2.60)


def test_prestarted_workers_drops_the_lightning_variable_and_restores_it():
    from taskgraph.runners.ray_tune import _prestarted_workers, tune_actor_env

    env = tune_actor_env()
    before = dict(env)
    with _prestarted_workers():
        assert "PL_DISABLE_FORK" not in env
    assert env == before
    with pytest.raises(RuntimeError, match="a failing fit"), _prestarted_workers():
        raise RuntimeError("a failing fit")
    assert env == before


@pytest.mark.parametrize(("epochs", "grace", "rf"), [(2, 1, 2), (3, 1, 2), (5, 1, 2), (8, 1, 2), (9, 1, 3),
                                                     (10, 1, 3), (27, 1, 3), (40, 1, 3), (40, 2, 3), (50, 3, 4),
                                                     (100, 5, 2), (6, 6, 3)])
def test_report_epochs_are_the_epochs_where_ray_asha_decides(epochs, grace, rf):
    from ray.tune.schedulers import ASHAScheduler

    from taskgraph.runners.ray_tune import report_epochs

    budget = NS(early_stopping="asha", epochs=epochs, grace_epochs=grace, reduction_factor=rf)
    got = report_epochs(budget)
    if epochs <= grace:  # the runner uses no ASHA then (FIFO)
        assert got == frozenset()
        return
    sched = ASHAScheduler(time_attr="epoch", metric="objective", mode="min", max_t=epochs, grace_period=grace,
                          reduction_factor=rf)
    # the first epoch at or past each rung below the last epoch: where an every-epoch reporter gets ASHA's decision
    rungs = {math.ceil(m) for m, _ in sched._brackets[0]._rungs}
    assert got == frozenset(e for e in rungs if e < epochs)
    assert report_epochs(NS(early_stopping="none", epochs=epochs, grace_epochs=grace, reduction_factor=rf)) == set()


def test_a_local_ray_gets_the_cpus_its_slots_use_at_most_the_machines():
    from taskgraph.runners.ray_tune import _local_cpus

    here = len(os.sched_getaffinity(0))
    assert _local_cpus(NS(concurrent=1, cpus=1)) == 1
    assert _local_cpus(NS(concurrent=2, cpus=1)) == min(here, 2)
    assert _local_cpus(NS(concurrent=3, cpus=0.5)) == min(here, 2)
    assert _local_cpus(NS(concurrent=10_000, cpus=2)) == here
