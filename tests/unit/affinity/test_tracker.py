"""The tracker in the training loop and in a user's own loop; the matrix it produces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from taskgraph.affinity import AffinityMatrix, AffinityTracker, ExactLookahead, FirstOrder, Schedule, measure_affinity
from taskgraph.data import MultiTaskDataset, planted_clusters
from taskgraph.models import MultiTaskModel, mlp
from taskgraph.tasks import Task, TaskSet
from taskgraph.training import Callback, TrainConfig, train

from .helpers import OPTIMIZERS, TASKS, losses_at, make_batch, make_model, rel_err, train_steps


@pytest.fixture(scope="module")
def data():
    return planted_clusters(n_tasks=4, n_clusters=2, n_samples=600, seed=0)


def _model(data, seed=0):
    torch.manual_seed(seed)
    return MultiTaskModel(mlp(32, (16,)), data.tasks, input_shape=data.input_shape)


def test_tracking_does_not_change_training(data):
    cfg = TrainConfig(epochs=2, max_steps=12, lr=1e-2, seed=3, device="cpu")
    a, b = _model(data), _model(data)
    loader = data.train.loader(64, shuffle=True, seed=3)
    train(a, data.tasks, loader, config=cfg)
    tracker = AffinityTracker("exact", schedule=Schedule(every=1))
    train(b, data.tasks, data.train.loader(64, shuffle=True, seed=3), config=cfg, callbacks=[tracker])
    assert len(tracker.steps) == 12
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


def test_every_schedule_start_and_max_samples(data):
    tracker = AffinityTracker("first_order", schedule=Schedule(every=3, start=2, max_samples=3))
    train(_model(data), data.tasks, data.train.loader(64, shuffle=True),
          config=TrainConfig(epochs=2, max_steps=20, device="cpu"), callbacks=[tracker])
    assert tracker.steps == [2, 5, 8]
    m = tracker.matrix()
    assert m.estimator == "first_order" and m.samples.shape == (3, 4, 4)
    assert m.schedule["every"] == 3 and m.schedule["start"] == 2 and m.schedule["measured_steps"] == 3
    assert (m.n_samples == 3).all()


def test_budget_schedule_spends_about_its_share(data):
    """Default schedule: time measuring ≤ budget × the rest of the run (plus one measurement)."""
    tracker = AffinityTracker("exact")
    assert tracker.schedule.budget == 0.2
    t0 = __import__("time").perf_counter()
    train(_model(data), data.tasks, data.train.loader(32, shuffle=True),
          config=TrainConfig(epochs=2, device="cpu"), callbacks=[tracker])
    total = __import__("time").perf_counter() - t0
    assert 1 <= len(tracker.steps) < 2 * len(data.train) // 32
    assert tracker.seconds <= 0.2 * (total - tracker.seconds) + 2 * tracker._cost
    # never the first step (fresh optimizer state); each in the middle of the stretch paying for it
    assert tracker.steps[0] > 0 and tracker.steps == sorted(tracker.steps)


def test_control_share_bounds_the_drift_time_under_a_budget(data):
    """The drift takes at most control_share of the budget; a larger share buys more drift steps."""
    loader = data.train.loader(32, shuffle=True, seed=0)
    cfg = TrainConfig(epochs=3, device="cpu", seed=0)
    got = {}
    for share in (0.1, 0.9):
        tracker = AffinityTracker("exact", control_share=share)
        t0 = __import__("time").perf_counter()
        train(_model(data), data.tasks, loader, config=cfg, callbacks=[tracker])
        rest = __import__("time").perf_counter() - t0 - tracker.seconds
        assert tracker._drift_seconds <= share * 0.2 * rest + 2 * tracker._drift_cost
        got[share] = len(tracker._drifts) - len(tracker.steps)  # drifts of unmeasured steps
    assert got[0.9] > got[0.1]


def test_budget_schedule_measures_by_the_middle_of_a_run_it_cannot_afford(data):
    """A budget too small for even one measurement: train() still gets one, at the middle of the run."""
    tracker = AffinityTracker("exact", schedule=Schedule(budget=1e-6))
    seen = []

    class Total(Callback):
        def on_train_begin(self, state):
            seen.append(state.total_steps)

    train(_model(data), data.tasks, data.train.loader(64, shuffle=True),
          config=TrainConfig(epochs=3, max_steps=20, device="cpu"), callbacks=[tracker, Total()])
    assert seen == [20]
    assert tracker.steps == [10]


def test_own_loop_with_maybe_measure_and_measure():
    model = make_model()
    opt = OPTIMIZERS["adam"](model.parameters())
    tracker = AffinityTracker("exact", tasks=TASKS, schedule=Schedule(every=2))
    for step in range(6):
        x, ys, ms = make_batch(seed=step)
        tracker.maybe_measure(model, opt, (x, ys, ms), step=step)
        opt.zero_grad()
        out = model(x)
        sum(t.loss(out[t.name], ys[t.name], ms[t.name]) for t in TASKS).backward()
        opt.step()
    assert tracker.steps == [0, 2, 4]
    extra = tracker.measure(model, opt, make_batch(seed=99))
    np.testing.assert_allclose(extra.values, ExactLookahead().measure(model, opt, make_batch(seed=99), TASKS).values)
    m = tracker.matrix()
    assert m.names == TASKS.names and int(m.n_samples.max()) == 4


def test_skips_are_counted_and_entries_average_what_was_measured():
    tasks = TaskSet([Task("a"), Task("b")])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    mask_b = torch.zeros(64, dtype=torch.bool)
    mask_b[:16] = True  # b labelled only in the first batch of 16
    ds = MultiTaskDataset(tasks, x, {"a": torch.randn(64, generator=g), "b": torch.randn(64, generator=g)},
                          {"b": mask_b})
    torch.manual_seed(0)
    model = MultiTaskModel(mlp(8, (8,)), tasks, input_shape=(8,))
    m = measure_affinity(model, tasks, ds.loader(16), steps=4, every=1, config=TrainConfig(device="cpu"))
    assert m.schedule["skipped"] == {"b": {"no labelled sample": 3}}
    assert m.n_samples.tolist() == [[4, 1], [1, 1]]
    assert np.isnan(m.stderr[1, 1]) and np.isfinite(m.mean[1, 1])


def test_matrix_round_trip_and_heatmap(tmp_path, data):
    m = measure_affinity(_model(data), data.tasks, data.train.loader(64, shuffle=True), steps=6, every=1,
                         config=TrainConfig(device="cpu"))
    back = AffinityMatrix.load(m.save(tmp_path / "m.json"))
    assert back.names == m.names and back.estimator == "exact"
    np.testing.assert_allclose(back.mean, m.mean)
    np.testing.assert_allclose(back.samples, m.samples)
    png = m.heatmap(tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = m.summary_rows()
    assert len(rows) == 4 and rows[0][0] == "t0"


@pytest.mark.slow
def test_planted_opposed_clusters_signs_after_150_steps():
    """Within a cluster Z > 0, across opposed clusters Z < 0, every CI excluding zero, after 150 steps.

    planted_clusters(relation="opposed"): clusters {t0, t1} and {t2, t3} read the same latent
    directions through mirrored nonlinearities; a narrow trunk (64 → 8) must share them.
    """
    data = planted_clusters(n_tasks=4, n_clusters=2, relation="opposed", n_samples=2000, seed=0)
    torch.manual_seed(0)
    model = MultiTaskModel(mlp(32, (64, 8)), data.tasks, input_shape=data.input_shape)
    m = measure_affinity(model, data.tasks, data.train.loader(128, shuffle=True, seed=0), steps=150, every=1,
                         config=TrainConfig(lr=0.05, optimizer="sgd", momentum=0.0, seed=0, device="cpu"))
    expect = np.array([[1, 1, -1, -1], [1, 1, -1, -1], [-1, -1, 1, 1], [-1, -1, 1, 1]])
    sign = (m.ci_low > 0).astype(int) - (m.ci_high < 0).astype(int)
    assert (sign == expect).all(), (m.mean, m.ci_low, m.ci_high)


def test_sub_batch_measures_a_seeded_subset_and_leaves_the_rng_alone():
    """A sub-batch tracker measures on 64 random samples of a larger batch, drawn from its own generator."""
    model = make_model()
    opt = OPTIMIZERS["adam"](model.parameters())
    x, ys, ms = make_batch(seed=5, size=100)
    assert AffinityTracker("exact").sub_batch is None  # the default: the whole batch
    tracker = AffinityTracker("first_order", tasks=TASKS, seed=7, sub_batch=64)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    got = tracker.measure(model, opt, (x, ys, ms)).values
    assert torch.equal(torch.rand(3), before)  # the global stream is untouched
    idx = torch.randperm(100, generator=torch.Generator().manual_seed(7))[:64]
    sub = (x[idx], {k: v[idx] for k, v in ys.items()}, {k: v[idx] for k, v in ms.items()})
    np.testing.assert_allclose(got, FirstOrder().measure(model, opt, sub, TASKS).values)
    whole = AffinityTracker("first_order", tasks=TASKS, sub_batch=None).measure(model, opt, (x, ys, ms)).values
    np.testing.assert_allclose(whole, FirstOrder().measure(model, opt, (x, ys, ms), TASKS).values)
    assert not np.allclose(got, whole)
    assert tracker.matrix().schedule["sub_batch"] == 64


@pytest.mark.parametrize("opt_name", ["adam", "sgd_momentum_wd"])
@pytest.mark.parametrize("heads", ["linear", "mlp"])
def test_exact_gradients_on_a_part_losses_on_the_whole_equal_the_naive_loop(opt_name, heads):
    """eval_batch: gradients from the sub-batch, every loss on the whole batch (naive reference)."""
    from taskgraph.affinity import naive_lookahead

    model = make_model(head_hidden=None if heads == "linear" else 6)
    opt = OPTIMIZERS[opt_name](model.parameters())
    train_steps(model, opt)
    x, ys, ms = make_batch(seed=5, size=100)
    sub = (x[:30], {k: v[:30] for k, v in ys.items()}, {k: v[:30] for k, v in ms.items()})
    got = ExactLookahead().measure(model, opt, sub, TASKS, eval_batch=(x, ys, ms))
    want = naive_lookahead(model, opt, sub, TASKS, eval_batch=(x, ys, ms))
    assert rel_err(got.values, want) < 1e-5
    whole = ExactLookahead().measure(model, opt, (x, ys, ms), TASKS)
    np.testing.assert_allclose(got.losses, whole.losses, rtol=1e-12)  # the losses at θ: the whole batch's
    assert not np.allclose(got.values, whole.values)
    # a sub-batch tracker measures exactly that on a seeded 64-sample part of a larger batch
    tracker = AffinityTracker("exact", tasks=TASKS, seed=7, sub_batch=64)
    idx = torch.randperm(100, generator=torch.Generator().manual_seed(7))[:64]
    part = (x[idx], {k: v[idx] for k, v in ys.items()}, {k: v[idx] for k, v in ms.items()})
    np.testing.assert_allclose(tracker.measure(model, opt, (x, ys, ms)).values,
                               ExactLookahead().measure(model, opt, part, TASKS, eval_batch=(x, ys, ms)).values)


def test_sub_batch_larger_than_the_batch_uses_it_whole():
    model = make_model()
    opt = OPTIMIZERS["sgd"](model.parameters())
    batch = make_batch(seed=2)  # 24 samples
    got = AffinityTracker("exact", tasks=TASKS, sub_batch=64).measure(model, opt, batch).values
    np.testing.assert_allclose(got, ExactLookahead().measure(model, opt, batch, TASKS).values)


def test_momentum_drift_is_a_real_zero_gradient_step():
    """D_j = 1 − L_j(θ') / L_j(θ), θ' from a deep copy of the model and the optimizer stepped by
    ``optimizer.step()`` with a zero gradient on the shared (trunk) parameters, heads untouched."""
    from taskgraph.affinity import momentum_drift

    from .helpers import zero_gradient_step

    model = make_model()
    opt = OPTIMIZERS["adam"](model.parameters())

    train_steps(model, opt)
    batch = make_batch(seed=4)
    got = momentum_drift(model, opt, batch, TASKS)
    _, stepped = zero_gradient_step(opt, model.trunk.parameters(), model)
    with torch.no_grad():
        want = (1 - losses_at(stepped, batch) / losses_at(model, batch)).numpy()
    assert np.isfinite(want).all()  # make_batch labels every task at least once
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert np.nanmax(np.abs(got)) > 0  # Adam's moments move the parameters
    plain = OPTIMIZERS["sgd"](model.parameters())
    assert np.nanmax(np.abs(momentum_drift(model, plain, batch, TASKS))) == 0


def _beta(rest, proxies):
    """The least-squares slope of Z − D on P within each task pair, off the diagonal (a plain loop)."""
    k, n, _ = rest.shape
    num = den = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                r = rest[:, i, j] - rest[:, i, j].mean()
                q = proxies[:, i, j] - proxies[:, i, j].mean()
                num += float(r @ q)
                den += float(q @ q)
    return num / den


def test_control_variates_correct_the_average(data):
    """matrix = mean over measured steps of (Z − D − βP) + mean of D and of βP over all drift steps."""
    tracker = AffinityTracker("exact", schedule=Schedule(every=4), control=1)
    train(_model(data), data.tasks, data.train.loader(64, shuffle=True), config=TrainConfig(
        epochs=2, max_steps=9, lr=1e-2, device="cpu"), callbacks=[tracker])
    assert tracker.steps == [0, 4, 8] and len(tracker._drifts) == 9 and len(tracker._proxies) == 9
    paired, drifts = np.stack(tracker._paired), np.stack(tracker._drifts)
    pp, pall = np.stack(tracker._paired_proxies), np.stack(tracker._proxies)
    rest = tracker.samples - paired[:, None, :]
    beta = _beta(rest, pp)
    want = rest.mean(0) + drifts.mean(0)[None, :] - beta * (pp.mean(0) - pall.mean(0))
    m = tracker.matrix()
    np.testing.assert_allclose(m.mean, want, rtol=1e-10)
    assert tracker.proxy_beta == pytest.approx(beta, rel=1e-10)
    assert m.schedule["control"] == {"every": 1, "drift_steps": 9, "proxy_beta": round(beta, 6)}
    off = AffinityTracker("exact", schedule=Schedule(every=4), control=None)
    assert off.control is None and AffinityTracker("cosine").control is None


def test_without_a_proxy_the_drift_alone_corrects_the_average(data):
    """Heads that are not linear give no proxy: the matrix is mean(Z − D) + mean(D), as before."""
    torch.manual_seed(0)
    model = MultiTaskModel(mlp(32, (16,)), data.tasks, input_shape=(32,), head_hidden=8)
    tracker = AffinityTracker("exact", schedule=Schedule(every=4), control=1)
    train(model, data.tasks, data.train.loader(64, shuffle=True), config=TrainConfig(
        epochs=2, max_steps=9, lr=1e-2, device="cpu"), callbacks=[tracker])
    assert all(p is None for p in tracker._proxies) and len(tracker._drifts) == 9
    paired, drifts = np.stack(tracker._paired), np.stack(tracker._drifts)
    want = (tracker.samples - paired[:, None, :]).mean(0) + drifts.mean(0)[None, :]
    m = tracker.matrix()
    np.testing.assert_allclose(m.mean, want, rtol=1e-12)
    assert tracker.proxy_beta is None and m.schedule["control"] == {"every": 1, "drift_steps": 9}


def test_step_drift_proxy_is_the_feature_gradient_product_at_the_momentum_step():
    """P_{i→j} = s_i · s_j / L_j(θ), s_i = Σ_b ∂L_i/∂features at the momentum step (autograd reference);
    an unlabelled task's row and column are NaN; the model is left as it was."""
    from taskgraph.affinity.drift import StepDrift
    from taskgraph.affinity.probe import shared_parameters_of

    from .helpers import zero_gradient_step

    model = make_model()
    opt = OPTIMIZERS["adam"](model.parameters())
    train_steps(model, opt)
    x, ys, ms = make_batch(seed=5)
    ms = {**ms, "b1": torch.zeros_like(ms["b1"])}
    base = losses_at(model, (x, ys, ms))
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    z, P = StepDrift(model, TASKS).measure(opt, (x, ys, ms), base, proxy=True)
    assert all(torch.equal(v, before[n]) for n, v in model.state_dict().items())
    names, params = shared_parameters_of(model)
    new, _ = zero_gradient_step(opt, params)
    feats = torch.func.functional_call(model.trunk, {n[len("trunk."):]: q for n, q in zip(names, new)}, (x,))
    feats = feats.detach().requires_grad_(True)
    s = []
    for t in TASKS:
        loss = t.loss(model.heads[t.name](feats), ys[t.name], ms[t.name])
        s.append(torch.autograd.grad(loss, feats)[0].sum(0) if ms[t.name].any() else torch.full((12,), float("nan")))
    S = torch.stack(s).detach().double()
    want = ((S @ S.T) / base[None, :]).numpy()
    assert np.isnan(P[1]).all() and np.isnan(P[:, 1]).all() and np.isnan(z[1])
    np.testing.assert_allclose(P, want, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(z, StepDrift(model, TASKS)(opt, (x, ys, ms), base), rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("opt_name", ["adam", "adamw", "sgd_momentum_wd", "rmsprop"])
@pytest.mark.parametrize("heads", ["linear", "mlp"])
def test_momentum_drift_from_the_steps_own_losses_equals_the_two_forward_drift(opt_name, heads):
    """Given the losses at θ (what the training step computed), one forward gives the same D
    (linear heads: the trunk alone plus one matrix product; other heads: the whole model)."""
    from taskgraph.affinity import momentum_drift

    model = make_model(head_hidden=None if heads == "linear" else 6)
    opt = OPTIMIZERS[opt_name](model.parameters())
    train_steps(model, opt)
    batch = make_batch(seed=5)
    base = losses_at(model, batch)
    params = {n: p.detach().clone() for n, p in model.state_dict().items()}
    np.testing.assert_allclose(momentum_drift(model, opt, batch, TASKS, base=base),
                               momentum_drift(model, opt, batch, TASKS), rtol=1e-10, equal_nan=True)
    assert all(torch.equal(v, params[n]) for n, v in model.state_dict().items())


def test_drift_with_active_dropout_ignores_the_given_losses():
    from taskgraph.affinity import momentum_drift

    torch.manual_seed(0)
    model = MultiTaskModel(mlp(8, (16,), dropout=0.5), TASKS, input_shape=(8,)).double().train()
    opt = OPTIMIZERS["adam"](model.parameters())

    train_steps(model, opt)
    batch = make_batch(seed=6)
    wrong = torch.full((len(TASKS),), 123.0, dtype=torch.float64)
    got = momentum_drift(model, opt, batch, TASKS, base=wrong)
    np.testing.assert_allclose(got, momentum_drift(model, opt, batch, TASKS), rtol=1e-10, equal_nan=True)


def test_training_loop_drift_uses_the_step_losses_and_keeps_the_trajectory(data):
    """In train(), unmeasured steps take their drift from on_losses; training is unchanged."""
    cfg = TrainConfig(epochs=2, max_steps=10, lr=1e-2, seed=3, device="cpu", optimizer="adam")
    a, b = _model(data), _model(data)
    train(a, data.tasks, data.train.loader(64, shuffle=True, seed=3), config=cfg)
    tracker = AffinityTracker("exact", schedule=Schedule(every=5), control=1)
    seen = []


    orig = tracker.on_losses

    def on_losses(state, batch, losses):
        seen.append(state.step)
        orig(state, batch, losses)

    tracker.on_losses = on_losses
    train(b, data.tasks, data.train.loader(64, shuffle=True, seed=3), config=cfg, callbacks=[tracker])
    assert seen == list(range(10)) and tracker.steps == [0, 5]
    assert len(tracker._drifts) == 10 and len(tracker._paired) == 2
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


def test_step_drift_with_batchnorm_and_an_unlabelled_task_equals_the_two_forward_drift():
    """StepDrift (built once, reused across steps): trunk buffers untouched, NaN for a task without labels."""
    from taskgraph.affinity import momentum_drift
    from taskgraph.affinity.drift import StepDrift

    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 12))
    model = MultiTaskModel(trunk, TASKS, input_shape=(8,)).double().train()
    opt = OPTIMIZERS["adamw"](model.parameters())
    train_steps(model, opt)
    drift = StepDrift(model, TASKS)
    for seed in (5, 6):
        x, ys, ms = make_batch(seed=seed)
        ms = {**ms, "b1": torch.zeros_like(ms["b1"])}
        base = losses_at(model, (x, ys, ms))
        bufs = {n: b.clone() for n, b in model.named_buffers()}
        got = drift(opt, (x, ys, ms), base)
        assert all(torch.equal(b, bufs[n]) for n, b in model.named_buffers())
        want = momentum_drift(model, opt, (x, ys, ms), TASKS)
        assert np.isnan(got[1]) and np.isnan(want[1])
        np.testing.assert_allclose(got, want, rtol=1e-10, equal_nan=True)


def test_step_drift_follows_a_new_optimizer():
    """A StepDrift kept across runs (as the tracker keeps it per model) reads each call's optimizer."""
    from taskgraph.affinity import momentum_drift
    from taskgraph.affinity.drift import StepDrift

    model = make_model()
    drift = StepDrift(model, TASKS)
    x, ys, ms = make_batch(seed=5)
    for lr in (1e-2, 1e-1):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        train_steps(model, opt)
        base = losses_at(model, (x, ys, ms))
        np.testing.assert_allclose(drift(opt, (x, ys, ms), base), momentum_drift(model, opt, (x, ys, ms), TASKS),
                                   rtol=1e-10, equal_nan=True)
