"""Bad input: clear errors where the user must act, counted skips where a step cannot be measured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from taskgraph.affinity import (
    ESTIMATORS,
    AffinityTracker,
    ExactLookahead,
    FirstOrder,
    GradientCosine,
    Schedule,
    group_lookahead,
    make_estimator,
    measure_affinity,
)
from taskgraph.exceptions import AffinityError, TaskGraphError, UnknownNameError
from taskgraph.tasks import Task, TaskSet

from .helpers import OPTIMIZERS, TASKS, make_batch, make_model

REG = TaskSet([Task("a"), Task("b"), Task("c")])


class NoShared(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 1)

    def forward(self, x):
        return {"a": self.lin(x)}


class Stranger(NoShared):
    def shared_parameters(self):
        yield "x", nn.Parameter(torch.zeros(2))


def test_model_without_shared_parameters():
    with pytest.raises(AffinityError, match="must define shared_parameters"):
        ExactLookahead().measure(NoShared(), torch.optim.SGD(NoShared().parameters(), lr=0.1),
                                 make_batch(tasks=REG), REG)
    with pytest.raises(AffinityError, match="not one of model.named_parameters"):
        ExactLookahead().measure(Stranger(), torch.optim.SGD(Stranger().parameters(), lr=0.1),
                                 make_batch(tasks=REG), REG)


def test_model_with_frozen_trunk_has_no_shared_parameters():
    model = make_model(tasks=REG)
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    with pytest.raises(AffinityError, match="at least one trainable parameter"):
        ExactLookahead().measure(model, torch.optim.SGD(model.parameters(), lr=0.1), make_batch(tasks=REG), REG)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid: cosine, exact, first_order"):
        make_estimator("tag")
    with pytest.raises(UnknownNameError, match="unknown affinity estimator 'nope'; valid: cosine, exact, first_order"):
        AffinityTracker("nope")
    assert ESTIMATORS.names() == ["cosine", "exact", "first_order"]


def test_optimizer_errors():
    model = make_model(tasks=REG)
    batch = make_batch(tasks=REG)
    heads_only = torch.optim.SGD(model.heads.parameters(), lr=0.1)
    with pytest.raises(AffinityError, match="none of the .* shared parameters"):
        ExactLookahead().measure(model, heads_only, batch, REG)
    lbfgs = torch.optim.LBFGS(model.parameters())
    with pytest.raises(AffinityError, match="element-wise optimizer; supported: SGD, Adam"):
        ExactLookahead().measure(model, lbfgs, batch, REG)
    with pytest.raises(AffinityError, match="needs the optimizer"):
        FirstOrder().measure(model, None, batch, REG)
    with pytest.raises(AffinityError, match="chunk_size"):
        ExactLookahead(chunk_size=0)


def test_batch_without_labels_for_a_task():
    model = make_model(tasks=REG)
    x, ys, ms = make_batch(tasks=REG)
    del ys["b"]
    with pytest.raises(AffinityError, match="no labels for task 'b'"):
        ExactLookahead().measure(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, ys, ms), REG)


@pytest.mark.parametrize("est", [ExactLookahead(), FirstOrder(), GradientCosine()], ids=lambda e: e.name)
def test_task_without_labelled_sample_is_skipped(est):
    model = make_model(tasks=REG)
    opt = OPTIMIZERS["adam"](model.parameters())
    x, ys, ms = make_batch(tasks=REG)
    ms["b"] = torch.zeros_like(ms["b"])
    step = est.measure(model, opt, (x, ys, ms), REG)
    assert step.skipped == {"b": "no labelled sample"}
    assert np.isnan(step.values[1]).all() and np.isnan(step.values[:, 1]).all()
    keep = [0, 2]
    sub = est.measure(model, opt, (x, ys, ms), REG.subset(["a", "c"])).values
    np.testing.assert_allclose(step.values[np.ix_(keep, keep)], sub, rtol=1e-10)


def test_no_labelled_task_at_all():
    model = make_model(tasks=REG)
    x, ys, ms = make_batch(tasks=REG)
    ms = {k: torch.zeros_like(v) for k, v in ms.items()}
    step = ExactLookahead().measure(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, ys, ms), REG)
    assert np.isnan(step.values).all() and set(step.skipped) == {"a", "b", "c"}


def test_zero_loss_column_is_skipped_never_divided():
    model = make_model(tasks=REG)
    opt = OPTIMIZERS["sgd"](model.parameters())
    x, ys, ms = make_batch(tasks=REG)
    with torch.no_grad():  # task c is already perfect: L_c = 0 exactly
        model.heads["c"].weight.zero_()
        model.heads["c"].bias.zero_()
    ys["c"] = torch.zeros_like(ys["c"])
    with np.errstate(all="raise"):
        step = ExactLookahead().measure(model, opt, (x, ys, ms), REG)
    assert step.skipped == {"c": "zero loss"}
    assert np.isnan(step.values[:, 2]).all()
    assert np.isfinite(step.values[:, :2]).all()


def test_non_finite_loss_is_skipped_and_does_not_poison_others():
    for head_hidden in (None, 4):  # stacked-heads path and generic path
        model = make_model(tasks=REG, head_hidden=head_hidden)
        opt = OPTIMIZERS["adam"](model.parameters())
        x, ys, ms = make_batch(tasks=REG)
        with torch.no_grad():
            next(model.heads["a"].parameters()).fill_(float("inf"))
        step = ExactLookahead().measure(model, opt, (x, ys, ms), REG)
        assert step.skipped == {"a": "non-finite loss"}
        assert np.isnan(step.values[0]).all() and np.isnan(step.values[:, 0]).all()
        assert np.isfinite(step.values[1:, 1:]).all()


def test_group_lookahead_errors():
    model = make_model()
    opt = OPTIMIZERS["sgd"](model.parameters())
    with pytest.raises(AffinityError, match="empty group"):
        group_lookahead(model, opt, make_batch(), TASKS, [[]])
    with pytest.raises(AffinityError, match="unknown task"):
        group_lookahead(model, opt, make_batch(), TASKS, [["zz"]])


def test_schedule_and_tracker_errors():
    with pytest.raises(AffinityError, match="not both"):
        Schedule(every=2, budget=0.1)
    with pytest.raises(AffinityError, match="'every' must be an int >= 1"):
        Schedule(every=0)
    with pytest.raises(AffinityError, match="'budget' must be a finite number > 0"):
        Schedule(budget=-1.0)
    with pytest.raises(AffinityError, match="'start'"):
        Schedule(start=-1)
    with pytest.raises(AffinityError, match="confidence"):
        AffinityTracker(confidence=1.5)
    for share in (0, 1.0, -0.2, "half"):
        with pytest.raises(AffinityError, match=f"0 < 'control_share' < 1 must hold, got {share!r}"):
            AffinityTracker(control_share=share)
    tracker = AffinityTracker()
    with pytest.raises(AffinityError, match="no step was measured"):
        tracker.matrix()
    model = make_model()
    with pytest.raises(AffinityError, match="task set is unknown"):
        tracker.measure(model, torch.optim.SGD(model.parameters(), lr=0.1), make_batch())
    assert issubclass(AffinityError, TaskGraphError)


def test_measure_affinity_bad_steps():
    model = make_model(tasks=REG)
    loader = [make_batch(tasks=REG)]
    with pytest.raises(AffinityError, match="'steps' must be an int >= 1"):
        measure_affinity(model, REG, loader, steps=0)


def test_bad_sub_batch_and_memory_budget():
    with pytest.raises(AffinityError, match="'sub_batch' must be an int >= 1 or None, got 0"):
        AffinityTracker("exact", sub_batch=0)
    with pytest.raises(AffinityError, match="memory_budget must be a finite number > 0, got -1"):
        ExactLookahead(memory_budget=-1)
