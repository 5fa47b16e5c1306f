"""Grouping from affinity measured by the engine (not given), and the one-call auto_group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import taskgraph
from taskgraph.affinity import measure_affinity
from taskgraph.data import planted_clusters
from taskgraph.exceptions import GroupingError
from taskgraph.grouping import group_tasks
from taskgraph.models import MultiTaskModel, mlp
from taskgraph.training import TrainConfig

SGD = TrainConfig(lr=0.05, optimizer="sgd", momentum=0.0, seed=0, device="cpu")


@pytest.mark.slow
def test_measured_affinity_recovers_planted_clusters():
    """Six tasks in three planted clusters (unrelated): the exact grouping of the measured matrix
    is the planted one."""
    from sklearn.metrics import adjusted_rand_score

    data = planted_clusters(n_tasks=6, n_clusters=3, relation="unrelated", n_samples=1500, seed=0)
    torch.manual_seed(0)
    model = MultiTaskModel(mlp(32, (64, 8)), data.tasks, input_shape=data.input_shape)
    m = measure_affinity(model, data.tasks, data.train.loader(128, shuffle=True, seed=0), steps=60, every=3,
                         config=SGD)
    best = group_tasks(m, k=3, variant="partition")[0]
    truth = data.info["cluster_of"]
    assert adjusted_rand_score(truth, best.labels()) == 1.0, (best, m.mean)


@pytest.mark.slow
def test_auto_group_beats_the_all_in_one_model_on_opposed_clusters(tmp_path):
    data = planted_clusters(n_tasks=4, n_clusters=2, relation="opposed", n_samples=1200, seed=0)
    tr, va, te = data.loaders(128, seed=0)
    result = taskgraph.auto_group(
        lambda: mlp(32, (64, 8)), data.tasks, tr, va, test_loader=te, input_shape=data.input_shape,
        k=2, top_m=2, check_config=TrainConfig(epochs=6, lr=3e-3, batch_size=128, seed=0, device="cpu"),
        affinity_config=TrainConfig(epochs=2, optimizer="sgd", lr=0.05, momentum=0.0, batch_size=128, seed=0,
                                    device="cpu"),
        out_dir=tmp_path, quiet=True)
    one = result.all_in_one
    chosen = next(c for c in result.candidates if c.grouping == result.grouping)
    assert one is not None and chosen is not one
    assert chosen.test_loss < one.test_loss, result.summary()
    # the affinity proposes the planted clusters; the checks then keep whichever candidate is best
    # (here single-task beats them on validation and on test), and say how sure they are
    planted = next(c for c in result.candidates if c.source == "affinity #1")
    assert planted.grouping.groups == data.ground_truth, result.summary()
    assert planted.test_loss < one.test_loss
    d = result.decision
    assert d.left_all_in_one and d.interval[1] < 0 and result.k == result.grouping.n_groups
    # the evidence travels with the result
    assert result.matrix.names == data.tasks.names and np.isfinite(result.matrix.ci_low).any()
    assert set(result.graph.graph.nodes) == set(data.tasks.names)
    for png in result.pictures.values():
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert [c.val_loss for c in result.candidates] == sorted(c.val_loss for c in result.candidates)
    assert all(len(c.val_totals) == 3 for c in result.candidates)  # paired over the default 3 seeds
    assert "all-in-one" in result.summary()


def test_auto_group_rejects_bad_input():
    data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=200, seed=0)
    tr, va, _ = data.loaders(64)
    with pytest.raises(GroupingError, match="trunk factory"):
        taskgraph.auto_group(42, data.tasks, tr, va, quiet=True)
    with pytest.raises(GroupingError, match="top_m"):
        taskgraph.auto_group(lambda: mlp(32, (8,)), data.tasks, tr, va, top_m=0, quiet=True)
    with pytest.raises(GroupingError, match="variant"):
        taskgraph.auto_group(lambda: mlp(32, (8,)), data.tasks, tr, va, variant="tree", quiet=True)
    other = planted_clusters(n_tasks=3, n_clusters=1, n_samples=200, seed=0)
    model = MultiTaskModel(mlp(32, (8,)), other.tasks, input_shape=other.input_shape)
    with pytest.raises(GroupingError, match="model's tasks"):
        taskgraph.auto_group(model, data.tasks, tr, va, quiet=True)
