"""Topologies: bad input raises a clear ModelError / ConfigError / UnknownNameError."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from taskgraph.exceptions import ConfigError, ModelError, UnknownNameError
from taskgraph.models import Branched, CrossStitch, HardSharing, MMoE, TrunkSpec, build_model, make_topology
from taskgraph.models.topology import topology_from_dict
from taskgraph.tasks import Task, TaskSet

TASKS = TaskSet([Task("a"), Task("b"), Task("c")])
TRUNK = TrunkSpec(hidden=(8, 8, 8))


@pytest.mark.parametrize("spec", [HardSharing(), Branched(), CrossStitch(), MMoE()], ids=lambda s: s.name)
def test_grouping_with_unknown_task(spec):
    with pytest.raises(ModelError, match=r"unknown task\(s\) \['zz'\] in group 1; known tasks: a, b, c"):
        build_model(spec, TRUNK, TASKS, (4,), grouping=[["a", "b"], ["zz", "c"]])


def test_grouping_overlap_missing_and_empty():
    with pytest.raises(ModelError, match=r"must not overlap.*task 'b' is in group 0 and in group 1"):
        build_model(HardSharing(), TRUNK, TASKS, (4,), grouping=[["a", "b"], ["b", "c"]])
    with pytest.raises(ModelError, match=r"must cover every task; task\(s\) \['c'\] are in no group"):
        build_model(HardSharing(), TRUNK, TASKS, (4,), grouping=[["a", "b"]])
    with pytest.raises(ModelError, match="group 1 is empty"):
        build_model(HardSharing(), TRUNK, TASKS, (4,), grouping=[["a", "b", "c"], []])
    with pytest.raises(ModelError, match="group 0 must be a sequence of task names"):
        build_model(HardSharing(), TRUNK, TASKS, (4,), grouping=["abc"])


def test_branch_point_deeper_than_the_trunk():
    with pytest.raises(ModelError, match=r"must be <= the trunk's number of stages \(3\), got \(1, 4\)"):
        build_model(Branched(branch_depths=(1, 4)), TRUNK, TASKS, (4,), hierarchy=(("a", "b"), "c"))


def test_branch_depths_negative_or_decreasing():
    with pytest.raises(ModelError, match="non-decreasing"):
        Branched(branch_depths=(2, 1))
    with pytest.raises(ModelError, match="ints >= 0"):
        Branched(branch_depths=(-1,))


def test_hierarchy_with_unknown_missing_or_repeated_tasks():
    with pytest.raises(ModelError, match=r"hierarchy: every leaf must be a task.*\['q'\]"):
        build_model(Branched(), TRUNK, TASKS, (4,), hierarchy=(("a", "q"), ("b", "c")))
    with pytest.raises(ModelError, match=r"repeated \['a'\], missing \['c'\]"):
        build_model(Branched(), TRUNK, TASKS, (4,), hierarchy=(("a", "b"), "a"))
    with pytest.raises(ModelError, match="non-empty tuple"):
        build_model(Branched(), TRUNK, TASKS, (4,), hierarchy=(("a", "b"), ()))
    with pytest.raises(ModelError, match=r"valid scipy linkage of shape \(2, 4\)"):
        build_model(Branched(), TRUNK, TASKS, (4,), hierarchy=(np.zeros((3, 4)), ["a", "b", "c"]))


def test_trunks_that_cannot_be_split_or_stitched():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x)

    with pytest.raises(ModelError, match="needs an nn.Sequential, got Custom"):
        build_model(Branched(), Custom(), TASKS, (4,))
    with pytest.raises(ModelError, match="at least 2 stages"):
        build_model(CrossStitch(), TrunkSpec(hidden=(8,)), TASKS, (4,))
    with pytest.raises(ModelError, match="at least one of"):
        build_model(Branched(), nn.Sequential(nn.ReLU()), TASKS, (4,))
    with pytest.raises(ModelError, match="TrunkSpec or an nn.Module"):
        build_model(HardSharing(), "mlp", TASKS, (4,))


def test_bad_hyper_parameters():
    with pytest.raises(ModelError, match="'n_experts' must be an int >= 1, got 0"):
        MMoE(n_experts=0)
    with pytest.raises(ModelError, match=r"0 < 'self_weight' <= 1 must hold, got 1.5"):
        CrossStitch(self_weight=1.5)
    with pytest.raises(ModelError, match="'head_hidden' must be an int >= 0"):
        HardSharing(head_hidden=-2)


def test_unknown_topology_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="unknown topology 'tree'; valid: branched, cross_stitch, hard, mmoe"):
        make_topology("tree")
    with pytest.raises(UnknownNameError, match="valid: branched"):
        build_model({"topology": "nope"}, TRUNK, TASKS, (4,))


def test_bad_spec_dicts():
    with pytest.raises(ConfigError, match=r"takes the fields \['head_hidden', 'n_experts'\].*\['experts'\]"):
        topology_from_dict({"topology": "mmoe", "experts": 3})
    with pytest.raises(ConfigError, match="with a 'topology' key"):
        topology_from_dict({"n_experts": 3})
    with pytest.raises(ConfigError, match="'topology' must be 'hard'"):
        HardSharing.from_dict({"topology": "mmoe"})
