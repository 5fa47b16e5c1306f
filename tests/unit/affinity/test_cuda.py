"""The affinity engine on a CUDA device: the same values as the naive reference and as on the CPU.

Skipped where no CUDA device is present (CI); run where there is one with
``pytest tests/unit/affinity/test_cuda.py``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from taskgraph.affinity import AffinityTracker, ExactLookahead, FirstOrder, GradientCosine, Schedule, naive_lookahead
from taskgraph.data import planted_clusters
from taskgraph.models import MultiTaskModel, mlp
from taskgraph.training import TrainConfig, train

from .helpers import (
    OPTIMIZERS,
    TASKS,
    losses_at,
    make_batch,
    make_model,
    rel_err,
    train_steps,
    zero_gradient_step,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA_OPTIMIZERS = {
    **OPTIMIZERS,
    "adam_fused": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.01, fused=True),
    "adamw_foreach": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05, foreach=True),
}


def _to(batch, device):
    x, ys, ms = batch
    return x.to(device), {k: v.to(device) for k, v in ys.items()}, {k: v.to(device) for k, v in ms.items()}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("opt_name", sorted(CUDA_OPTIMIZERS))
def test_exact_on_cuda_equals_naive_reference(kind, opt_name):
    model = make_model(kind).cuda()
    opt = CUDA_OPTIMIZERS[opt_name](model.parameters())
    train_steps(model, opt, kind)
    batch = _to(make_batch(kind), "cuda")
    ref = naive_lookahead(model, opt, batch, TASKS)
    got = ExactLookahead(chunk_size=2).measure(model, opt, batch, TASKS)
    assert got.skipped == {}
    assert rel_err(got.values, ref) < 1e-5


def _twins(opt_name: str, head_hidden: int | None = None):
    """The same trained model and optimizer state on the CPU and on the GPU."""
    cpu = make_model("mlp", head_hidden=head_hidden)
    opt_cpu = OPTIMIZERS[opt_name](cpu.parameters())
    train_steps(cpu, opt_cpu)
    gpu = copy.deepcopy(cpu).cuda()
    opt_gpu = OPTIMIZERS[opt_name](gpu.parameters())
    opt_gpu.load_state_dict(opt_cpu.state_dict())
    return cpu, opt_cpu, gpu, opt_gpu


@pytest.mark.parametrize("estimator", [ExactLookahead, FirstOrder, GradientCosine])
def test_cuda_values_equal_cpu_values(estimator):
    cpu, opt_cpu, gpu, opt_gpu = _twins("adam")
    batch = make_batch("mlp")
    a = estimator().measure(cpu, opt_cpu, batch, TASKS).values
    b = estimator().measure(gpu, opt_gpu, _to(batch, "cuda"), TASKS).values
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


def test_tracked_training_on_cuda_follows_the_untracked_run():
    data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=600, seed=0)
    torch.manual_seed(0)
    base = MultiTaskModel(mlp(32, (32, 16)), data.tasks, input_shape=(32,))
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=64, device="cuda", restore_best=False, seed=0)
    runs = []
    for callbacks in ([], [AffinityTracker("exact", schedule=Schedule(every=3))]):
        model = copy.deepcopy(base)
        train(model, data.tasks, data.train.loader(64, shuffle=True, seed=0), config=cfg, callbacks=callbacks)
        runs.append((model, callbacks))
    (plain, _), (tracked, [tracker]) = runs
    assert next(tracked.parameters()).is_cuda
    for a, b in zip(plain.parameters(), tracked.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    m = tracker.matrix()
    assert m.names == data.tasks.names and int(m.n_samples.min()) >= 5
    assert np.isfinite(m.mean).all()


def test_automatic_chunk_on_cuda_takes_every_task_of_a_small_model():
    from taskgraph.affinity.probe import Probe

    model = make_model("mlp").cuda()
    opt = OPTIMIZERS["adam"](model.parameters())
    train_steps(model, opt)
    batch = _to(make_batch("mlp"), "cuda")
    est = ExactLookahead()
    assert est.chunk_for(Probe(model, TASKS, *batch), opt) >= len(TASKS)
    assert rel_err(est.measure(model, opt, batch, TASKS).values, naive_lookahead(model, opt, batch, TASKS)) < 1e-5


def test_group_lookahead_and_momentum_drift_on_cuda_equal_cpu():
    from taskgraph.affinity import group_lookahead, momentum_drift

    cpu, opt_cpu, gpu, opt_gpu = _twins("sgd_momentum_wd")
    batch = make_batch("mlp")
    groups = [["r1", "b1"], ["m1", "r2", "b2"], list(TASKS.names)]
    np.testing.assert_allclose(group_lookahead(gpu, opt_gpu, _to(batch, "cuda"), TASKS, groups),
                               group_lookahead(cpu, opt_cpu, batch, TASKS, groups), rtol=1e-9)
    np.testing.assert_allclose(momentum_drift(gpu, opt_gpu, _to(batch, "cuda"), TASKS),
                               momentum_drift(cpu, opt_cpu, batch, TASKS), rtol=1e-9)


@pytest.mark.parametrize("opt_name", sorted(CUDA_OPTIMIZERS))
def test_momentum_step_on_cuda_is_the_zero_gradient_lookahead(opt_name):
    """The foreach shortcut also reads fused / foreach Adam state (a step count kept on the device)."""
    from taskgraph.affinity.optim import momentum_step

    model = make_model().cuda()
    opt = CUDA_OPTIMIZERS[opt_name](model.parameters())
    train_steps(model, opt)
    params = list(model.trunk.parameters())
    want, _ = zero_gradient_step(opt, params)
    got = momentum_step(opt, params)
    for w, g in zip(want, got):
        assert g.is_cuda
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("heads", ["linear", "mlp"])
def test_drift_from_the_steps_losses_and_eval_batch_on_cuda_equal_cpu(heads):
    """The tracker's cheap drift (given the step's losses) and exact with losses on a larger batch."""
    from taskgraph.affinity import momentum_drift

    cpu, opt_cpu, gpu, opt_gpu = _twins("adamw", head_hidden=None if heads == "linear" else 6)
    x, ys, ms = make_batch(seed=5, size=100)
    base = losses_at(gpu, _to((x, ys, ms), "cuda"))
    got = momentum_drift(gpu, opt_gpu, _to((x, ys, ms), "cuda"), TASKS, base=base)
    np.testing.assert_allclose(got, momentum_drift(cpu, opt_cpu, (x, ys, ms), TASKS), rtol=1e-9, equal_nan=True)

    sub = (x[:30], {k: v[:30] for k, v in ys.items()}, {k: v[:30] for k, v in ms.items()})
    want = naive_lookahead(cpu, opt_cpu, sub, TASKS, eval_batch=(x, ys, ms))
    got = ExactLookahead().measure(gpu, opt_gpu, _to(sub, "cuda"), TASKS, eval_batch=_to((x, ys, ms), "cuda"))
    assert rel_err(got.values, want) < 1e-5


def test_step_drift_and_its_proxy_on_cuda_equal_cpu():
    """The drift with the trunk's storage swapped on the GPU, its feature-gradient proxy, and the
    model left exactly as it was."""
    from taskgraph.affinity.drift import StepDrift

    cpu, opt_cpu, gpu, opt_gpu = _twins("adam")
    x, ys, ms = make_batch(seed=5, size=100)
    before = {n: p.clone() for n, p in gpu.state_dict().items()}
    z, P = StepDrift(gpu, TASKS).measure(opt_gpu, _to((x, ys, ms), "cuda"), losses_at(gpu, _to((x, ys, ms), "cuda")),
                                         proxy=True)
    assert all(torch.equal(v, before[n]) for n, v in gpu.state_dict().items())
    zc, Pc = StepDrift(cpu, TASKS).measure(opt_cpu, (x, ys, ms), losses_at(cpu, (x, ys, ms)), proxy=True)
    np.testing.assert_allclose(z, zc, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(P, Pc, rtol=1e-9, equal_nan=True)


def test_budget_tracked_training_on_cuda_measures_mid_run_and_drifts():
    """The default tracker (budget schedule, drift control variate) in train() on the GPU."""
    data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=600, seed=0)
    torch.manual_seed(0)
    model = MultiTaskModel(mlp(32, (32, 16)), data.tasks, input_shape=(32,))
    cfg = TrainConfig(epochs=4, lr=1e-2, batch_size=64, device="cuda", restore_best=False, seed=0)
    tracker = AffinityTracker()
    train(model, data.tasks, data.train.loader(64, shuffle=True, seed=0), config=cfg, callbacks=[tracker])
    m = tracker.matrix()
    assert tracker.steps and 0 not in tracker.steps
    assert np.isfinite(m.mean).all() and int(m.n_samples.min()) >= 1
    assert len(tracker._drifts) > len(tracker.steps)
    # the proxy control variate needs two measured steps to fit its slope
    assert (tracker.proxy_beta is not None and np.isfinite(tracker.proxy_beta)) == (len(tracker.steps) >= 2)
