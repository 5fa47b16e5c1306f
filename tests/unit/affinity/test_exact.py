"""The vectorised exact TAG lookahead equals the naive definition (deepcopy + optimizer.step())."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from taskgraph.affinity import ExactLookahead, naive_lookahead
from taskgraph.affinity.optim import lookahead_parameters, momentum_step
from taskgraph.affinity.probe import Probe
from taskgraph.tasks import Task, TaskSet

from .helpers import OPTIMIZERS, TASKS, make_batch, make_model, rel_err, train_steps, zero_gradient_step


@pytest.mark.parametrize("kind", ["mlp", pytest.param("cnn", marks=pytest.mark.slow)])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_exact_equals_naive_reference(kind, opt_name):
    model = make_model(kind)
    opt = OPTIMIZERS[opt_name](model.parameters())
    train_steps(model, opt, kind)
    batch = make_batch(kind)
    ref = naive_lookahead(model, opt, batch, TASKS)
    got = ExactLookahead(chunk_size=2).measure(model, opt, batch, TASKS)
    assert got.skipped == {}
    assert np.isfinite(ref).all()
    assert rel_err(got.values, ref) < 1e-5
    # every entry, not only the largest, is close
    np.testing.assert_allclose(got.values, ref, rtol=1e-5, atol=1e-9 * np.abs(ref).max())


def test_first_step_adam_and_sgd_without_state():
    """An optimizer that never stepped: empty state (no momentum buffer, step 0)."""
    for name in ("adam", "sgd_momentum_wd"):
        model = make_model()
        opt = OPTIMIZERS[name](model.parameters())
        batch = make_batch()
        assert rel_err(ExactLookahead().measure(model, opt, batch, TASKS).values,
                       naive_lookahead(model, opt, batch, TASKS)) < 1e-5


def test_float32_close_to_reference():
    model = make_model(dtype=torch.float32)
    opt = OPTIMIZERS["adam"](model.parameters())
    train_steps(model, opt)
    batch = make_batch(dtype=torch.float32)
    assert rel_err(ExactLookahead().measure(model, opt, batch, TASKS).values,
                   naive_lookahead(model, opt, batch, TASKS)) < 1e-3


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 100])
def test_chunk_size_does_not_change_values(chunk):
    model = make_model()
    opt = OPTIMIZERS["adamw"](model.parameters())
    train_steps(model, opt)
    batch = make_batch()
    full = ExactLookahead(chunk_size=100).measure(model, opt, batch, TASKS).values
    np.testing.assert_allclose(ExactLookahead(chunk_size=chunk).measure(model, opt, batch, TASKS).values, full,
                               rtol=1e-12, atol=1e-15)


def test_chunks_are_balanced():
    assert [s.stop - s.start for s in Probe.chunks(9, 8)] == [5, 4]
    assert [s.stop - s.start for s in Probe.chunks(40, 8)] == [8] * 5
    assert [s.stop - s.start for s in Probe.chunks(3, None)] == [3]


def test_generic_path_nonlinear_heads_equals_reference():
    """Heads that are not nn.Linear take the generic functional_call path."""
    model = make_model(head_hidden=6)
    opt = OPTIMIZERS["sgd_nesterov"](model.parameters())
    train_steps(model, opt)
    batch = make_batch()
    assert not Probe(model, TASKS, *batch).stacked
    assert rel_err(ExactLookahead(chunk_size=3).measure(model, opt, batch, TASKS).values,
                   naive_lookahead(model, opt, batch, TASKS)) < 1e-5


class BNModel(nn.Module):
    """A user model that is not a MultiTaskModel: batch norm in the trunk, a dict of heads."""

    def __init__(self, tasks: TaskSet):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 10), nn.BatchNorm1d(10), nn.Tanh())
        self.out = nn.ModuleDict({t.name: nn.Linear(10, t.out_dim) for t in tasks})

    def shared_parameters(self):
        return self.body.parameters()  # bare parameters are accepted too

    def forward(self, x):
        z = self.body(x)
        return {k: h(z) for k, h in self.out.items()}


def test_generic_path_user_model_with_batchnorm_and_buffers_restored():
    torch.manual_seed(0)
    model = BNModel(TASKS).double().train()
    opt = OPTIMIZERS["adam"](model.parameters())
    train_steps(model, opt)
    batch = make_batch()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    got = ExactLookahead(chunk_size=2).measure(model, opt, batch, TASKS).values
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert rel_err(got, naive_lookahead(model, opt, batch, TASKS)) < 1e-5


def test_measuring_changes_nothing():
    model = make_model()
    opt = OPTIMIZERS["adam_amsgrad"](model.parameters())
    train_steps(model, opt)
    params = copy.deepcopy(model.state_dict())
    state = copy.deepcopy(opt.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]  # the last training step's
    rng = torch.get_rng_state()
    ExactLookahead().measure(model, opt, make_batch(), TASKS)
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k])
    after = opt.state_dict()
    for pid, st in state["state"].items():
        for k, v in st.items():
            assert torch.equal(after["state"][pid][k], v)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))


def test_lookahead_parameters_param_groups_and_missing_params():
    """Per-group hyper-parameters are honoured; a parameter outside the optimizer does not move."""
    a = nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = nn.Parameter(torch.ones(2, dtype=torch.float64))
    c = nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}], lr=0.5)
    grads = [torch.ones(2, 3, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64),
             torch.ones(2, 2, dtype=torch.float64)]
    na, nb, nc = lookahead_parameters(opt, [a, b, c], grads)
    assert torch.allclose(na, torch.full((2, 3), 0.9, dtype=torch.float64))
    assert torch.allclose(nb, torch.zeros(2, 2, dtype=torch.float64))
    assert torch.equal(nc, torch.ones(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("steps", [0, 3])
def test_momentum_step_is_the_zero_gradient_lookahead(opt_name, steps):
    """The drift's momentum step (a foreach shortcut for Adam/AdamW) = a deep copy's real optimizer.step()
    with a zero gradient."""
    model = make_model()
    opt = OPTIMIZERS[opt_name](model.parameters())
    train_steps(model, opt, steps=steps)
    params = list(model.trunk.parameters())
    want, _ = zero_gradient_step(opt, params)
    got = momentum_step(opt, params)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)


def test_momentum_step_param_groups_and_a_parameter_outside_the_optimizer():
    model = make_model()
    trunk = list(model.trunk.parameters())
    opt = torch.optim.AdamW([{"params": trunk[:2], "lr": 0.1, "weight_decay": 0.2},
                             {"params": trunk[2:], "lr": 0.01}])
    train_steps(model, opt, steps=2)
    outside = nn.Parameter(torch.ones(3, dtype=torch.float64))
    params = [*trunk, outside]
    want, _ = zero_gradient_step(opt, params)
    got = momentum_step(opt, params)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)
    assert torch.equal(got[-1], outside.detach())


def test_sparse_labels_match_reference_on_labelled_tasks():
    tasks = TaskSet([Task("a"), Task("b")])
    model = make_model(tasks=tasks)
    opt = OPTIMIZERS["sgd"](model.parameters())
    x, ys, ms = make_batch(tasks=tasks, drop=0.7)
    got = ExactLookahead().measure(model, opt, (x, ys, ms), tasks).values
    assert rel_err(got, naive_lookahead(model, opt, (x, ys, ms), tasks)) < 1e-5


def test_automatic_chunk_follows_the_memory_budget_and_keeps_values():
    """chunk_size=None picks the chunk from the memory budget; values equal one big chunk's."""
    model = make_model()
    opt = OPTIMIZERS["adam"](model.parameters())
    batch = make_batch(seed=3)
    x, ys, ms = batch
    probe = Probe(model, TASKS, x, ys, ms)
    assert probe.act_bytes > 0 and probe.shared_bytes <= probe.param_bytes
    chunks = [ExactLookahead(memory_budget=b).chunk_for(probe, opt) for b in (0.01, 1.5, 4.0, 50.0)]
    assert chunks[0] == 1 and chunks == sorted(chunks) and chunks[-1] > chunks[1]
    plain = 2 * probe.param_bytes + probe.act_bytes  # no optimizer state counted
    per_task = probe.shared_bytes + probe.act_bytes
    assert probe.auto_chunk(4.0) == max(1, int((4 * plain - probe.act_bytes) // per_task))
    # a floor (a share of a GPU's free memory) only ever raises the chunk
    assert probe.auto_chunk(0.01, floor_bytes=probe.act_bytes + 7 * per_task) == 7
    assert probe.auto_chunk(4.0, floor_bytes=1) == probe.auto_chunk(4.0)
    full = ExactLookahead(chunk_size=100).measure(model, opt, batch, TASKS).values
    for b in (0.01, 4.0):
        np.testing.assert_allclose(ExactLookahead(memory_budget=b).measure(model, opt, batch, TASKS).values, full,
                                   rtol=1e-10, atol=1e-12)
