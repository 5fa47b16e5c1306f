"""Small models, batches and optimizers with real state, shared by the affinity tests."""

from __future__ import annotations

import copy

import torch
from torch import nn

from taskgraph.models import MultiTaskModel, mlp, small_cnn
from taskgraph.tasks import Task, TaskSet

TASKS = TaskSet([
    Task("r1"),
    Task("b1", "binary"),
    Task("m1", "multiclass", num_classes=3),
    Task("r2", loss_scale=2.5),
    Task("b2", "binary"),
])

SHAPES = {"mlp": (8,), "cnn": (1, 10, 10)}

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01,
                                              dampening=0.0),
    "sgd_dampening": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, dampening=0.3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.01),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5),
}


def make_model(kind: str = "mlp", tasks: TaskSet = TASKS, *, seed: int = 0, head_hidden: int | None = None,
               dtype=torch.float64) -> MultiTaskModel:
    torch.manual_seed(seed)
    trunk = mlp(8, (16, 12)) if kind == "mlp" else small_cnn(1, (4, 6), 10)
    return MultiTaskModel(trunk, tasks, input_shape=SHAPES[kind], head_hidden=head_hidden).to(dtype)


def make_batch(kind: str = "mlp", tasks: TaskSet = TASKS, *, seed: int = 1, size: int = 24,
               dtype=torch.float64, drop: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, *SHAPES[kind], generator=g, dtype=dtype)
    ys, ms = {}, {}
    for t in tasks:
        if t.kind == "regression":
            ys[t.name] = torch.randn(size, generator=g, dtype=dtype)
        elif t.kind == "binary":
            ys[t.name] = (torch.rand(size, generator=g) > 0.5).to(dtype)
        else:
            ys[t.name] = torch.randint(0, t.num_classes, (size,), generator=g)
        m = torch.rand(size, generator=g) > drop
        m[0] = True
        ms[t.name] = m
    return x, ys, ms


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, kind: str = "mlp", tasks: TaskSet = TASKS,
                steps: int = 3) -> None:
    """A few real optimizer steps so the optimizer's state is not trivial (on the model's device)."""
    p = next(model.parameters())
    for s in range(steps):
        x, ys, ms = make_batch(kind, tasks, seed=100 + s, dtype=p.dtype)
        x, ys, ms = x.to(p.device), {k: v.to(p.device) for k, v in ys.items()}, \
            {k: v.to(p.device) for k, v in ms.items()}
        opt.zero_grad()
        out = model(x)
        sum(t.loss(out[t.name], ys[t.name], ms[t.name]) for t in tasks).backward()
        opt.step()


def zero_gradient_step(opt: torch.optim.Optimizer, params, model: nn.Module | None = None
                       ) -> tuple[list[torch.Tensor], nn.Module | None]:
    """The reference for the momentum step, independent of the package: deep copies of the
    optimizer, ``params`` (and ``model``), a zero gradient on ``params`` only (every other
    parameter's gradient None, so the optimizer skips it) and one real ``optimizer.step()``.

    Returns the copied ``params`` after the step and the copied model (None without one).
    """
    copy_opt, copy_params, copy_model = copy.deepcopy((opt, list(params), model))  # one memo: shared tensors
    for group in copy_opt.param_groups:
        for p in group["params"]:
            p.grad = None
    for p in copy_params:
        p.grad = torch.zeros_like(p)
    copy_opt.step()
    return [p.detach() for p in copy_params], copy_model


def losses_at(model: nn.Module, batch, tasks: TaskSet = TASKS) -> torch.Tensor:
    """``(n,)`` task losses of ``model`` on ``batch``, detached (what a training step computes)."""
    x, ys, ms = batch
    out = model(x)
    return torch.stack([t.loss(out[t.name], ys[t.name], ms[t.name]).detach() for t in tasks])


def rel_err(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
