"""A trial's resources against what one node of the Ray cluster offers (checked before the study is created)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from taskgraph.exceptions import ConfigError, TaskGraphError
from taskgraph.runners.ray_tune import check_resources

NODES = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 4.0, "GPU": 1.0}]


def _spec(cpus=1.0, gpus=0.0):
    return NS(resources=NS(cpus=cpus, gpus=gpus), file="study.toml")


def test_a_trial_that_fits_on_the_largest_node_is_accepted_and_gets_its_gpus():
    assert check_resources(_spec(cpus=4, gpus=0.5), NODES, where="the cluster") == 0.5
    assert check_resources(_spec(cpus=1, gpus=1), NODES, where="the cluster") == 1.0
    assert check_resources(_spec(cpus=0.5), NODES, where="the cluster") == 0.0


def test_cpus_above_every_node_name_the_key_what_one_node_offers_and_the_file():
    with pytest.raises(ConfigError, match=r"'resources.cpus' must be at most the CPUs that one node of the cluster "
                                          r"offers \(4\); got 6: .* \[study.toml, key 'resources.cpus'\]") as e:
        check_resources(_spec(cpus=6), NODES, where="the cluster")
    assert isinstance(e.value, TaskGraphError) and len(str(e.value).splitlines()) == 1


def test_cpus_summed_over_nodes_do_not_count_a_trial_runs_on_one_node():
    with pytest.raises(ConfigError, match=r"offers \(2\); got 3"):
        check_resources(_spec(cpus=3), [{"CPU": 2.0}, {"CPU": 2.0}], where="the cluster")


def test_gpus_above_every_node_are_refused_and_gpus_on_a_cpu_only_cluster_run_on_cpu():
    with pytest.raises(ConfigError, match=r"'resources.gpus' must be at most the GPUs that one node of the cluster "
                                          r"offers \(1\); got 2"):
        check_resources(_spec(gpus=2), NODES, where="the cluster")
    assert check_resources(_spec(gpus=2), [{"CPU": 2.0}], where="the cluster") == 0.0


def test_a_cluster_without_alive_nodes_offers_nothing():
    with pytest.raises(ConfigError, match=r"offers \(0\); got 1"):
        check_resources(_spec(), [], where="the cluster")
