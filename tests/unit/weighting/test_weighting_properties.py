"""Loss weightings: mathematical properties (hypothesis), checked with tolerances."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taskgraph.gradients import flat_per_task_gradients
from taskgraph.models import MultiTaskModel, mlp
from taskgraph.tasks import Task, TaskSet
from taskgraph.weighting import (
    FAMO,
    DynamicWeightAverage,
    EqualWeighting,
    FixedWeighting,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
)
from taskgraph.weighting.dwa import dwa_weights
from taskgraph.weighting.pcgrad import pcgrad_project, pcgrad_steps, random_orders

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
positive_loss = st.floats(1e-4, 1e3, allow_nan=False)


def vectors(n: int, dim: int):
    return st.lists(st.lists(finite, min_size=dim, max_size=dim), min_size=n, max_size=n).map(
        lambda rows: torch.tensor(rows, dtype=torch.float64))


def small_model(n_tasks: int, seed: int):
    torch.manual_seed(seed)
    tasks = TaskSet([Task(f"t{i}") for i in range(n_tasks)])
    return tasks, MultiTaskModel(mlp(3, (5,)), tasks, input_shape=(3,))


def batch_losses(model, tasks, seed: int, scales):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=g)
    out = model(x)
    return {n: s * (out[n].squeeze(1) - torch.randn(16, generator=g)).pow(2).mean()
            for n, s in zip(tasks.names, scales)}


# --- PCGrad ------------------------------------------------------------------------------------------

@given(vectors(2, 4), st.integers(0, 10))
def test_pcgrad_leaves_no_conflict_between_two_projected_gradients(g, seed):
    proj = pcgrad_project(g, random_orders(2, torch.Generator().manual_seed(seed)))
    scale = float(g.norm(dim=1).prod()) + 1e-12
    tol = 1e-9 * scale
    assert float(proj[0] @ g[1]) >= -tol  # each projected gradient no longer opposes the other task's
    assert float(proj[1] @ g[0]) >= -tol
    assert float(proj[0] @ proj[1]) >= -tol  # nor do the two projected gradients oppose each other


@given(st.integers(3, 6).flatmap(lambda n: st.tuples(vectors(n, 5), st.integers(0, 100))))
def test_pcgrad_each_projection_removes_the_conflict_it_targets(case):
    g, seed = case
    n = g.shape[0]
    steps = list(pcgrad_steps(g, random_orders(n, torch.Generator().manual_seed(seed))))
    assert len(steps) == n * (n - 1)
    for i, j, before, after in steps:
        assert i != j
        dot = float(before @ g[j])
        if dot < 0 and float(g[j] @ g[j]) > 0:
            # after the projection onto g_j's normal plane, g_i no longer has a component along g_j
            assert abs(float(after @ g[j])) <= 1e-9 * (float(before.norm() * g[j].norm()) + 1e-12)
            assert float(after.norm()) <= float(before.norm()) + 1e-9
        else:
            assert torch.equal(after, before)  # no conflict: untouched


@given(vectors(3, 4))
def test_pcgrad_without_conflict_is_the_plain_sum(g):
    g = g.abs()  # all pairwise dot products >= 0
    assert torch.allclose(pcgrad_project(g, random_orders(3)).sum(0), g.sum(0))


def test_pcgrad_writes_the_projected_sum_on_shared_and_plain_gradients_on_heads():
    tasks, model = small_model(3, seed=1)
    losses = batch_losses(model, tasks, 0, [1.0, 1.0, 1.0])
    shared = [p for _, p in model.shared_parameters()]
    vec = torch.stack([losses[n] for n in tasks.names])
    g = flat_per_task_gradients(vec, shared, retain_graph=True)
    expected = pcgrad_project(g, random_orders(3, torch.Generator().manual_seed(7))).sum(0)
    head_grads = torch.autograd.grad(vec.sum(), list(model.heads.parameters()), retain_graph=True)
    pc = PCGrad(seed=7)
    weights = pc.backward(losses, model, pc.init_state(tasks.names, model), step=0, epoch=0)
    assert weights == dict.fromkeys(tasks.names, 1.0)
    assert torch.allclose(torch.cat([p.grad.reshape(-1) for p in shared]), expected, atol=1e-6)
    for p, hg in zip(model.heads.parameters(), head_grads):
        assert torch.allclose(p.grad, hg, atol=1e-6)


# --- GradNorm ----------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(0, 1000), st.lists(st.floats(0.01, 100), min_size=5, max_size=5),
       st.floats(0.0, 3.0))
def test_gradnorm_weights_stay_positive_and_renormalise_to_the_number_of_tasks(n, seed, scales, alpha):
    tasks, model = small_model(n, seed)
    gn = GradNorm(alpha=alpha, lr=0.1)
    state = gn.init_state(tasks.names, model)
    for step in range(4):
        model.zero_grad()
        used = gn.backward(batch_losses(model, tasks, seed + step, scales[:n]), model, state, step=step, epoch=0)
        assert math.isclose(sum(used.values()), n, rel_tol=1e-5)
        w = state.weights.detach()
        assert torch.isfinite(w).all() and (w > 0).all()
        assert math.isclose(float(w.sum()), n, rel_tol=1e-5)


def test_gradnorm_moves_weight_towards_the_task_with_the_smaller_gradient():
    tasks, model = small_model(2, 0)
    gn = GradNorm(alpha=0.0, lr=0.05)  # alpha 0: equalise gradient norms
    state = gn.init_state(tasks.names, model)
    for step in range(30):
        model.zero_grad()
        gn.backward(batch_losses(model, tasks, step, [100.0, 1.0]), model, state, step=step, epoch=0)
    w = state.weights.detach()
    assert w[1] > w[0]  # task 1's gradients are ~100x smaller, so it gets the larger weight


# --- uncertainty, DWA, FAMO, fixed, equal ------------------------------------------------------------

@given(st.lists(st.tuples(positive_loss, st.floats(-5, 5)), min_size=1, max_size=6))
def test_uncertainty_weights_are_positive_and_its_gradient_is_the_papers(items):
    losses_v = [a for a, _ in items]
    names = [f"t{i}" for i in range(len(items))]
    uw = UncertaintyWeighting()
    state = uw.init_state(names, None)
    with torch.no_grad():
        state.log_vars.copy_(torch.tensor([s for _, s in items]))
    w = torch.nn.Parameter(torch.ones(()))
    weights = uw.backward({n: w * v for n, v in zip(names, losses_v)}, None, state, step=0, epoch=0)
    assert all(math.isfinite(v) and v > 0 for v in weights.values())
    for k, (loss, s) in enumerate(items):
        assert math.isclose(weights[names[k]], 0.5 * math.exp(-s), rel_tol=1e-5)
        # d/ds [1/2 e^{-s} L + s/2] = -1/2 e^{-s} L + 1/2
        assert math.isclose(float(state.log_vars.grad[k]), -0.5 * math.exp(-s) * loss + 0.5, rel_tol=1e-4,
                            abs_tol=1e-4)


def test_uncertainty_uses_the_classification_factor_for_classification_tasks():
    tasks = TaskSet([Task("r"), Task("c", "binary")])
    model = MultiTaskModel(mlp(3, (4,)), tasks, input_shape=(3,))
    uw = UncertaintyWeighting()
    state = uw.init_state(tasks.names, model)
    assert state.factors.tolist() == [0.5, 1.0]
    assert uw.extra_parameters(state) == [state.log_vars]


@given(st.lists(st.tuples(positive_loss, positive_loss), min_size=1, max_size=8), st.floats(0.05, 50))
def test_dwa_weights_are_positive_and_sum_to_the_number_of_tasks(pairs, temperature):
    w = dwa_weights([a for a, _ in pairs], [b for _, b in pairs], temperature=temperature)
    assert all(math.isfinite(v) and v > 0 for v in w)
    assert math.isclose(sum(w), len(pairs), rel_tol=1e-9)
    # the task whose loss fell least (highest ratio) gets the highest weight
    ratios = [a / b for a, b in pairs]
    assert w[ratios.index(max(ratios))] == pytest.approx(max(w))


def test_dwa_is_equal_for_two_epochs_then_follows_the_ratios():
    dwa = DynamicWeightAverage(temperature=2.0)
    state = dwa.init_state(["a", "b"], None)
    w = torch.nn.Parameter(torch.ones(()))
    assert dwa.backward({"a": w, "b": w}, None, state, step=0, epoch=0) == {"a": 1.0, "b": 1.0}
    dwa.on_epoch_end(state, {"a": 2.0, "b": 2.0}, 0)
    assert state.weights == [1.0, 1.0]
    dwa.on_epoch_end(state, {"a": 1.0, "b": 2.0}, 1)
    assert state.weights == pytest.approx(dwa_weights([1.0, 2.0], [2.0, 2.0], temperature=2.0))
    assert state.weights[1] > state.weights[0]


@settings(deadline=None)
@given(st.lists(positive_loss, min_size=2, max_size=6), st.lists(st.floats(0.1, 10), min_size=6, max_size=6))
def test_famo_weights_are_positive_and_sum_to_one(losses_v, decay):
    names = [f"t{i}" for i in range(len(losses_v))]
    famo = FAMO()
    state = famo.init_state(names, None)
    w = torch.nn.Parameter(torch.ones(()))
    for step in range(3):  # losses shrink by per-task factors, so the logits move
        vals = [v / decay[k] ** step for k, v in enumerate(losses_v)]
        weights = famo.backward({n: w * v for n, v in zip(names, vals)}, None, state, step=step, epoch=0)
        assert all(math.isfinite(v) and v > 0 for v in weights.values())
        assert math.isclose(sum(weights.values()), 1.0, rel_tol=1e-5)


def test_famo_lowers_the_logit_of_the_task_that_improves_fastest():
    famo = FAMO(lr=0.1, gamma=0.0)
    state = famo.init_state(["fast", "slow"], None)
    w = torch.nn.Parameter(torch.ones(()))
    for step in range(5):
        famo.backward({"fast": w * 0.5 ** step, "slow": w * 0.99 ** step}, None, state, step=step, epoch=0)
    z = torch.softmax(state.logits.detach(), 0)
    assert z[1] > z[0]


@given(st.lists(st.tuples(st.floats(0, 10), positive_loss), min_size=1, max_size=6).filter(
    lambda items: any(a > 0 for a, _ in items)))
def test_fixed_weighting_gradient_is_the_weighted_sum(items):
    names = [f"t{i}" for i in range(len(items))]
    fw = FixedWeighting([a for a, _ in items])
    state = fw.init_state(names, None)
    w = torch.nn.Parameter(torch.ones((), dtype=torch.float64))
    weights = fw.backward({n: w * b for n, (_, b) in zip(names, items)}, None, state, step=0, epoch=0)
    assert list(weights.values()) == [float(a) for a, _ in items]
    assert math.isclose(float(w.grad), sum(a * b for a, b in items), rel_tol=1e-9)


def test_equal_weights_are_one():
    w = torch.nn.Parameter(torch.ones(()))
    assert EqualWeighting().backward({"a": w, "b": 2 * w}, None, None, step=0, epoch=0) == {"a": 1.0, "b": 1.0}
    assert float(w.grad) == 3.0
