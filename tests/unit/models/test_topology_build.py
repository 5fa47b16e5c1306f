"""Topologies: JSON round-trip, parameter counts from the spec, shared parameters, training on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from taskgraph.data import load_dataset, planted_clusters
from taskgraph.gradients import per_task_gradients
from taskgraph.models import (
    TOPOLOGIES,
    Branched,
    CrossStitch,
    HardSharing,
    MMoE,
    TrunkSpec,
    build_model,
    split_stages,
    topology_from_dict,
)
from taskgraph.models.branched import normalize_tree
from taskgraph.tasks import Task, TaskSet
from taskgraph.training import TrainConfig, fit

D_IN = 6
HIDDEN = (8, 5, 7)  # three stages with distinct sizes, so a miscount cannot cancel out
TASKS = TaskSet([Task("a"), Task("b", "binary"), Task("c", "multiclass", num_classes=3), Task("d")])
TRUNK = TrunkSpec(hidden=HIDDEN)


def stage_params() -> list[int]:
    """Parameters of each MLP stage, from the widths alone (Linear: in*out + out)."""
    widths = (D_IN, *HIDDEN)
    return [widths[i] * widths[i + 1] + widths[i + 1] for i in range(len(HIDDEN))]


def head_params(task_names, hidden: int = 0) -> int:
    f = HIDDEN[-1]
    total = 0
    for n in task_names:
        out = TASKS[n].out_dim
        total += (f * hidden + hidden + hidden * out + out) if hidden else (f * out + out)
    return total


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- JSON round-trip -------------------------------------------------------------------------------

specs = st.one_of(
    st.builds(HardSharing, head_hidden=st.integers(0, 64)),
    st.builds(Branched, branch_depths=st.lists(st.integers(0, 5), max_size=4).map(lambda v: tuple(sorted(v))),
              head_hidden=st.integers(0, 64)),
    st.builds(CrossStitch, self_weight=st.floats(0.01, 1.0), head_hidden=st.integers(0, 64)),
    st.builds(MMoE, n_experts=st.integers(1, 16), head_hidden=st.integers(0, 64)),
)


@given(specs)
def test_every_spec_round_trips_through_json(spec):
    text = json.dumps(spec.to_dict())
    back = topology_from_dict(json.loads(text))
    assert back == spec
    assert type(back) is type(spec)
    assert json.loads(text)["topology"] == spec.name


def test_registry_lists_the_four_topologies():
    assert TOPOLOGIES.names() == ["branched", "cross_stitch", "hard", "mmoe"]


# --- parameter counts --------------------------------------------------------------------------------

@pytest.mark.parametrize(("grouping", "head_hidden"), [
    (None, 0),                                   # all-in-one
    ([["a"], ["b"], ["c"], ["d"]], 0),           # single-task
    ([["a", "b"], ["c", "d"]], 3),
    ([["a", "c", "d"], ["b"]], 0),
])
def test_hard_sharing_has_one_trunk_per_group(grouping, head_hidden):
    model = build_model(HardSharing(head_hidden=head_hidden), TRUNK, TASKS, (D_IN,), grouping=grouping)
    n_groups = 1 if grouping is None else len(grouping)
    assert n_params(model) == n_groups * sum(stage_params()) + head_params(TASKS.names, head_hidden)


@pytest.mark.parametrize(("depths", "hierarchy", "stage_copies"), [
    # stage_copies[s] = how many blocks run stage s; the tree is ((a, b), (c, d))
    ((), (("a", "b"), ("c", "d")), [1, 1, 1]),          # never splits: all-in-one
    ((0,), (("a", "b"), ("c", "d")), [2, 2, 2]),        # root splits at once, groups share to the heads
    ((1,), (("a", "b"), ("c", "d")), [1, 2, 2]),
    ((1, 2), (("a", "b"), ("c", "d")), [1, 2, 4]),
    ((3,), (("a", "b"), ("c", "d")), [1, 1, 1]),        # splits after the last stage: heads only
    ((1, 1), (("a", "b"), ("c", "d")), [1, 4, 4]),
    ((1, 2), (("a", "b"), "c", "d"), [1, 3, 4]),          # c and d are leaves: own columns from stage 1
    ((2, 3), ((("a", "b"), "c"), "d"), [1, 1, 2]),        # ((a,b),c) | d at 2; (a,b) | c at 3 (heads)
])
def test_branched_runs_each_stage_once_per_block(depths, hierarchy, stage_copies):
    model = build_model(Branched(branch_depths=depths), TRUNK, TASKS, (D_IN,), hierarchy=hierarchy)
    expected = sum(k * p for k, p in zip(stage_copies, stage_params())) + head_params(TASKS.names)
    assert n_params(model) == expected, model.describe()


def test_branched_tree_from_grouping_when_no_hierarchy():
    model = build_model(Branched(branch_depths=(2,)), TRUNK, TASKS, (D_IN,), grouping=[["a", "b"], ["c", "d"]])
    p = stage_params()
    assert n_params(model) == p[0] + p[1] + 2 * p[2] + head_params(TASKS.names)


@pytest.mark.parametrize("grouping", [None, [["a", "b"], ["c", "d"]], [["a", "b", "c", "d"]]])
def test_cross_stitch_has_columns_and_one_alpha_per_stage_boundary(grouping):
    model = build_model(CrossStitch(), TRUNK, TASKS, (D_IN,), grouping=grouping)
    c = len(TASKS) if grouping is None else len(grouping)
    stitches = (len(HIDDEN) - 1) * c * c
    assert n_params(model) == c * sum(stage_params()) + stitches + head_params(TASKS.names)
    for alpha in model.alphas:
        assert torch.allclose(alpha.sum(dim=1), torch.ones(c))


@pytest.mark.parametrize("n_experts", [1, 3, 6])
def test_mmoe_has_experts_and_a_gate_per_task(n_experts):
    model = build_model(MMoE(n_experts=n_experts, head_hidden=4), TRUNK, TASKS, (D_IN,))
    gates = len(TASKS) * (D_IN * n_experts + n_experts)
    assert n_params(model) == n_experts * sum(stage_params()) + gates + head_params(TASKS.names, 4)


# --- forward and shared parameters ------------------------------------------------------------------

ALL = [
    (HardSharing(), {"grouping": [["a", "b"], ["c", "d"]]}),
    (HardSharing(), {}),
    (Branched(branch_depths=(1, 2)), {"hierarchy": (("a", "b"), ("c", "d"))}),
    (Branched(branch_depths=(0,)), {"grouping": [["a", "b", "c"], ["d"]]}),
    (CrossStitch(), {}),
    (CrossStitch(), {"grouping": [["a", "b"], ["c", "d"]]}),
    (MMoE(n_experts=3), {}),
]


@pytest.mark.parametrize(("spec", "kw"), ALL, ids=lambda v: getattr(v, "name", ""))
def test_forward_gives_every_task_its_output_shape(spec, kw):
    model = build_model(spec, TRUNK, TASKS, (D_IN,), **kw)
    out = model(torch.randn(5, D_IN))
    assert list(out) == list(TASKS.names)
    for t in TASKS:
        assert out[t.name].shape == (5, t.out_dim)
    assert model.tasks == TASKS


@pytest.mark.parametrize(("spec", "kw"), ALL, ids=lambda v: getattr(v, "name", ""))
def test_shared_parameters_are_exactly_those_two_tasks_reach(spec, kw):
    torch.manual_seed(0)
    model = build_model(spec, TRUNK, TASKS, (D_IN,), **kw)
    x = torch.randn(32, D_IN)
    out = model(x)
    losses = torch.stack([out[n].pow(2).mean() for n in TASKS.names])
    names, params = zip(*model.named_parameters())
    grads = per_task_gradients(losses, params)
    reached = {n for n, g in zip(names, grads) if int((g.reshape(len(TASKS), -1).abs().sum(1) > 0).sum()) > 1}
    assert {n for n, _ in model.shared_parameters()} == reached


def test_branched_accepts_a_scipy_linkage_and_a_user_sequential():
    from scipy.cluster.hierarchy import linkage

    names = list(TASKS.names)
    z = linkage(np.array([[0.0], [0.1], [5.0], [5.2]]), method="average")  # (a, b) and (c, d)
    tree = normalize_tree((z, names), TASKS)
    assert sorted(sorted(g) if isinstance(g, tuple) else [g] for g in tree) == [["a", "b"], ["c", "d"]]
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(D_IN, 8), nn.Tanh(), nn.Sequential(nn.Linear(8, 4), nn.ReLU()))
    assert [len(s) for s in split_stages(trunk)] == [3, 2]
    model = build_model(Branched(branch_depths=(1,)), trunk, TASKS, (D_IN,), hierarchy=(z, names))
    assert model(torch.randn(3, D_IN))["c"].shape == (3, 3)
    # the user's module is copied, never shared or modified
    assert all(p is not q for p in trunk.parameters() for q in model.parameters())


def test_branched_and_cross_stitch_split_a_cnn_trunk():
    tasks = TaskSet([Task("x"), Task("y")])
    cnn = TrunkSpec(kind="cnn", hidden=(4, 6), out_features=5)
    assert len(split_stages(cnn.build((1, 8, 8)))) == 3  # conv, conv (+pool, flatten), linear
    for spec in (Branched(branch_depths=(2,)), CrossStitch(), MMoE(n_experts=2)):
        model = build_model(spec, cnn, tasks, (1, 8, 8))
        assert model(torch.randn(2, 1, 8, 8))["y"].shape == (2, 1)


def test_a_grouping_object_with_groups_attribute_is_accepted():
    class Grouping:  # the shape of taskgraph.grouping.Grouping
        groups = (("a", "b"), ("c", "d"))

    model = build_model(HardSharing(), TRUNK, TASKS, (D_IN,), grouping=Grouping())
    assert len(model.groups) == 2


# --- every topology trains on real and planted data -------------------------------------------------

@pytest.fixture(scope="module")
def planted():
    return planted_clusters(n_tasks=6, n_clusters=3, n_samples=600, seed=0)


@pytest.fixture(scope="module")
def yeast():
    return load_dataset("yeast")


TRAINABLE = [HardSharing(), Branched(branch_depths=(1,)), CrossStitch(), MMoE(n_experts=3)]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["planted", "yeast"])
@pytest.mark.parametrize("spec", TRAINABLE, ids=lambda s: s.name)
def test_every_topology_trains(spec, dataset, request):
    data = request.getfixturevalue(dataset)
    grouping = data.ground_truth or [data.tasks.names[:7], data.tasks.names[7:]]
    model = build_model(spec, TrunkSpec(hidden=(32, 32)), data.tasks, data.input_shape, grouping=grouping)
    before = fit(model, data, TrainConfig(epochs=1, max_steps=1, lr=1e-3, seed=0, restore_best=False))
    result = fit(model, data, TrainConfig(epochs=2, lr=3e-3, seed=0, restore_best=False))
    assert set(result.test.metrics) == set(data.tasks.names)
    assert all(np.isfinite(v) for v in result.test.losses.values())
    assert result.val.mean_loss < before.val.mean_loss  # it learned something
