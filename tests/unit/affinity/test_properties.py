"""Mathematical properties of the estimators: equivariance, scaling, first-order limit, group lookahead."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from taskgraph.affinity import (
    ESTIMATORS,
    ExactLookahead,
    FirstOrder,
    GradientCosine,
    flat_per_task_gradients,
    group_lookahead,
)
from taskgraph.affinity.probe import StackedLoss
from taskgraph.tasks import Task, TaskSet

from .helpers import OPTIMIZERS, TASKS, make_batch, make_model, rel_err, train_steps


@pytest.mark.parametrize("name", ["exact", "first_order", "cosine"])
def test_permuting_tasks_permutes_the_matrix(name):
    model = make_model()
    opt = OPTIMIZERS["adam"](model.parameters())
    train_steps(model, opt)
    batch = make_batch()
    est = ESTIMATORS.get(name)(chunk_size=2)
    z = est.measure(model, opt, batch, TASKS).values
    perm = [3, 0, 4, 2, 1]
    permuted = TaskSet([TASKS[i] for i in perm])
    zp = est.measure(model, opt, batch, permuted).values
    np.testing.assert_allclose(zp, z[np.ix_(perm, perm)], rtol=1e-10, atol=1e-13)


def _scaled(tasks: TaskSet, name: str, c: float) -> TaskSet:
    return TaskSet([Task(t.name, t.kind, t.metric, t.num_classes, loss_scale=t.loss_scale * (c if t.name == name
                                                                                              else 1.0))
                    for t in tasks])


@pytest.mark.parametrize("opt_name", ["sgd_momentum_wd", "adam"])
def test_loss_scale_leaves_the_target_ratios_unchanged(opt_name):
    """Z_{i→k} = 1 − L_k(θ_{s|i})/L_k(θ_s): scaling L_k by c cancels in the ratio (i ≠ k)."""
    model = make_model()
    opt = OPTIMIZERS[opt_name](model.parameters())
    train_steps(model, opt)
    batch = make_batch()
    k = 1
    z = ExactLookahead().measure(model, opt, batch, TASKS).values
    zs = ExactLookahead().measure(model, opt, batch, _scaled(TASKS, TASKS[k].name, 7.0)).values
    others = [i for i in range(len(TASKS)) if i != k]
    np.testing.assert_allclose(zs[others, k], z[others, k], rtol=1e-9)
    np.testing.assert_allclose(zs[np.ix_(others, others)], z[np.ix_(others, others)], rtol=1e-9)
    assert not np.allclose(zs[k, others], z[k, others])  # the source row does change (a longer step)


def test_loss_scale_first_order_sgd_row_scales_linearly():
    """First-order SGD: Z_{k→j} = η c g_k·g_j / L_j is linear in c; Z_{i→k} does not move."""
    model = make_model()
    opt = OPTIMIZERS["sgd"](model.parameters())
    batch = make_batch()
    k, c = 2, 3.0
    z = FirstOrder().measure(model, opt, batch, TASKS).values
    zs = FirstOrder().measure(model, opt, batch, _scaled(TASKS, TASKS[k].name, c)).values
    others = [i for i in range(len(TASKS)) if i != k]
    np.testing.assert_allclose(zs[k, others], c * z[k, others], rtol=1e-9)
    np.testing.assert_allclose(zs[others, k], z[others, k], rtol=1e-9)
    np.testing.assert_allclose(zs[k, k], c * z[k, k], rtol=1e-9)


def test_first_order_sgd_is_the_formula():
    model = make_model()
    opt = OPTIMIZERS["sgd"](model.parameters())
    x, ys, ms = make_batch()
    out = model(x)
    losses = torch.stack([t.loss(out[t.name], ys[t.name], ms[t.name]) for t in TASKS])
    G = flat_per_task_gradients(losses, [p for _, p in model.shared_parameters()])
    expect = (0.1 * G @ G.T / losses.detach()).numpy()
    np.testing.assert_allclose(FirstOrder().measure(model, opt, (x, ys, ms), TASKS).values, expect, rtol=1e-10)


@pytest.mark.parametrize("opt_name", ["sgd", "sgd_momentum_wd", "adam"])
def test_first_order_converges_to_exact_as_lr_goes_to_zero(opt_name):
    model = make_model()
    opt = OPTIMIZERS[opt_name](model.parameters())
    train_steps(model, opt)
    batch = make_batch()
    errors = []
    for lr in (1e-2, 1e-3, 1e-4, 1e-5):
        for g in opt.param_groups:
            g["lr"] = lr
        ex = ExactLookahead().measure(model, opt, batch, TASKS).values
        fo = FirstOrder().measure(model, opt, batch, TASKS).values
        errors.append(rel_err(fo, ex))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-4 and errors[-1] < errors[0] / 100, errors


def test_cosine_is_symmetric_bounded_with_unit_diagonal():
    model = make_model()
    z = GradientCosine().measure(model, None, make_batch(), TASKS).values
    np.testing.assert_allclose(z, z.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(z), 1.0, atol=1e-12)
    assert (np.abs(z) <= 1 + 1e-12).all()


def test_stacked_loss_equals_task_loss():
    x, ys, ms = make_batch()
    model = make_model()
    out = model(x)
    sl = StackedLoss(TASKS, ys, ms, dtype=torch.float64, device=x.device)
    got = sl(sl.concat(out, TASKS.names))
    expect = torch.stack([t.loss(out[t.name], ys[t.name], ms[t.name]) for t in TASKS])
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-14)
    # with leading batch dimensions (as under vmap)
    stacked = sl.concat({k: v.unsqueeze(0).expand(3, *v.shape) for k, v in out.items()}, TASKS.names)
    torch.testing.assert_close(sl(stacked), expect.expand(3, -1), rtol=1e-12, atol=1e-14)


def _naive_group(model, opt, batch, tasks, group):
    x, ys, ms = batch
    shared = {n for n, _ in model.shared_parameters()}
    with torch.no_grad():
        out = model(x)
        before = torch.stack([t.loss(out[t.name], ys[t.name], ms[t.name]) for t in tasks])
    m2, o2 = copy.deepcopy((model, opt))
    o2.zero_grad(set_to_none=True)
    out = m2(x)
    sum(tasks[t].loss(out[t], ys[t], ms[t]) for t in group).backward()
    for n, p in m2.named_parameters():
        if n not in shared:
            p.grad = None
    o2.step()
    with torch.no_grad():
        out = m2(x)
        after = torch.stack([t.loss(out[t.name], ys[t.name], ms[t.name]) for t in tasks])
    return (1 - after / before).numpy()


def test_group_lookahead_singletons_equal_exact_and_groups_equal_naive():
    model = make_model()
    opt = OPTIMIZERS["adam"](model.parameters())
    train_steps(model, opt)
    batch = make_batch()
    single = group_lookahead(model, opt, batch, TASKS, [[n] for n in TASKS.names], chunk_size=2)
    exact = ExactLookahead().measure(model, opt, batch, TASKS).values
    np.testing.assert_allclose(single, exact, rtol=1e-10)
    groups = [["r1", "b1"], ["m1", "r2", "b2"], list(TASKS.names)]
    got = group_lookahead(model, opt, batch, TASKS, groups)
    for row, g in zip(got, groups):
        np.testing.assert_allclose(row, _naive_group(model, opt, batch, TASKS, g), rtol=1e-6)
