import math

import pytest
import torch

from taskgraph.data import MultiTaskData, planted_clusters
from taskgraph.exceptions import ConfigError, TaskGraphError
from taskgraph.models import MultiTaskModel, mlp
from taskgraph.tasks import Task, TaskSet
from taskgraph.training import (
    Callback,
    TrainConfig,
    TrainingDiverged,
    delta_m,
    evaluate,
    fit,
    per_task_delta,
    train_partition,
)


def small():
    return planted_clusters(n_tasks=4, n_clusters=2, n_samples=400, seed=0)


def model_for(data, seed=0):
    torch.manual_seed(seed)
    return MultiTaskModel(mlp(32, (16, 8)), data.tasks, input_shape=data.input_shape)


def test_training_lowers_every_task_loss():
    data = small()
    m = model_for(data)
    before = evaluate(m, data.val.loader(512), data.tasks)
    res = fit(m, data, TrainConfig(epochs=15, lr=3e-3))
    for t in data.tasks.names:
        assert res.val.losses[t] < before.losses[t]
    assert len(res.history) == 15 and res.steps == 15 * math.ceil(len(data.train) / 256)


def test_seeded_runs_are_reproducible_on_cpu():
    data = small()
    cfg = TrainConfig(epochs=3, seed=5, device="cpu")
    r1 = fit(model_for(data), data, cfg)
    r2 = fit(model_for(data), data, cfg)
    assert r1.test.losses == r2.test.losses
    r3 = fit(model_for(data), data, cfg.replace(seed=6))
    assert r3.test.losses != r1.test.losses


class _Record(Callback):
    """Per step: the optimizer, the learning rate the step uses, and the gradient norm it stepped with."""

    def __init__(self):
        self.optimizers, self.lrs, self.norms = [], [], []

    def on_step_begin(self, state, batch):
        self.optimizers.append(state.optimizer)
        self.lrs.append(state.optimizer.param_groups[0]["lr"])

    def on_step_end(self, state, batch, losses):
        # optimizer.step() leaves .grad as clipping left it
        grads = [p.grad for p in state.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("opt", [{"optimizer": "sgd", "momentum": 0.9, "nesterov": True},
                                 {"optimizer": "adamw", "weight_decay": 0.01, "scheduler": "cosine"},
                                 {"optimizer": "adam", "scheduler": "step", "grad_clip": 0.01}])
def test_optimizers_and_schedules(opt):
    """The optimizer named is the one that steps (with its settings, over every parameter), the
    scheduler sets each step's lr by its formula, and clipping bounds the gradient norm stepped with."""
    data = small()
    model = model_for(data)
    rec = _Record()
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.01, **opt)
    res = fit(model, data, cfg, callbacks=[rec])
    assert all(math.isfinite(v) for v in res.test.losses.values())
    total = res.steps
    assert total == 2 * math.ceil(len(data.train) / 64) and len(rec.lrs) == total
    used = rec.optimizers[0]
    assert all(o is used for o in rec.optimizers)
    assert {id(p) for g in used.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    group = used.param_groups[0]
    if opt["optimizer"] == "sgd":
        assert type(used) is torch.optim.SGD and group["momentum"] == 0.9 and group["nesterov"] is True
    elif opt["optimizer"] == "adamw":
        assert type(used) is torch.optim.AdamW and group["weight_decay"] == 0.01
    else:
        assert type(used) is torch.optim.Adam and group["weight_decay"] == 0.0
    scheduler = opt.get("scheduler")
    if scheduler == "cosine":  # to 0 over the run
        want = [0.01 * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)]
    elif scheduler == "step":  # x0.1 at 2/3 of the run
        want = [0.01 if t < (2 * total) // 3 else 0.001 for t in range(total)]
    else:
        want = [0.01] * total
    assert rec.lrs == pytest.approx(want, rel=1e-9)
    if "grad_clip" in opt:  # every raw norm is far above 0.01: every step is clipped to it
        assert rec.norms == pytest.approx([0.01] * total, rel=1e-4)
    else:
        assert max(rec.norms) > 0.01


def test_missing_labels_do_not_count():
    tasks = TaskSet([Task("a"), Task("b")])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g)
    ya = x[:, 0].clone()
    yb = x[:, 1].clone()
    mb = torch.rand(300, generator=g) < 0.5
    yb[~mb] = float("nan")  # unlabelled entries may hold garbage
    data = MultiTaskData.from_arrays("masked", tasks, x, {"a": ya, "b": yb}, {"b": mb}, seed=0)
    res = fit(MultiTaskModel(mlp(5, (8,)), tasks, input_shape=(5,)), data, TrainConfig(epochs=5))
    assert math.isfinite(res.test.losses["b"])
    assert res.test.counts["b"] == int(data.test.masks["b"].sum()) < len(data.test)


def test_callbacks_see_every_step_and_can_stop():
    class Count(Callback):
        def __init__(self):
            self.begin = self.end = 0

        def on_step_begin(self, state, batch):
            self.begin += 1

        def on_step_end(self, state, batch, losses):
            self.end += 1
            assert set(losses) == set(state.tasks.names)
            if state.step == 3:
                state.stop = True

    data = small()
    cb = Count()
    res = fit(model_for(data), data, TrainConfig(epochs=10), callbacks=[cb])
    assert cb.begin == cb.end == 3 == res.steps


def test_divergence_is_reported_with_task_name():
    data = small()
    with pytest.raises(TrainingDiverged, match=r"t\d") as e:
        fit(model_for(data), data, TrainConfig(epochs=3, lr=1e12, optimizer="sgd", momentum=0.0))
    assert isinstance(e.value, TaskGraphError)


@pytest.mark.parametrize("kwargs,key", [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"),
                                         ({"optimizer": "lbfgs"}, "optimizer"),
                                         ({"nesterov": True}, "nesterov")])
def test_bad_config(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        TrainConfig(**kwargs)


def test_delta_m_convention():
    ts = TaskSet([Task("r"), Task("acc", "binary")])
    # regression improves 10%, accuracy drops from 0.8 to 0.72 (10% worse)
    d = per_task_delta({"r": 0.9, "acc": 0.72}, {"r": 1.0, "acc": 0.8}, ts)
    assert d["r"] == pytest.approx(-10.0) and d["acc"] == pytest.approx(10.0)
    assert delta_m({"r": 0.9, "acc": 0.72}, {"r": 1.0, "acc": 0.8}, ts) == pytest.approx(0.0)
    with pytest.raises(TaskGraphError, match="baseline"):
        delta_m({"r": 1.0}, {"r": 0.0}, ts)


def test_train_partition_covers_all_tasks():
    data = small()
    out = train_partition(lambda: mlp(32, (8,)), data, [["t0", "t2"], ["t1"], ["t3"]], TrainConfig(epochs=1))
    assert list(out["test"].metrics) == ["t0", "t2", "t1", "t3"]
