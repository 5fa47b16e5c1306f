"""The naive TAG lookahead: deep copies, one task at a time, the optimizer's own ``step``.

Slow on purpose: it is the definition the vectorised estimator is tested
against (and the baseline of ``benchmarks/affinity_speed.py``). For each task
i it deep-copies the model together with its optimizer (so the copy's
optimizer holds the copy's parameters and a copy of the state), back-propagates
task i's loss alone, keeps the gradient on the shared parameters only (heads
get ``None`` and so are not stepped), calls ``optimizer.step()`` and
evaluates every task's loss on the same batch.

Example:
    >>> import torch
    >>> from taskgraph.data import planted_clusters
    >>> from taskgraph.models import MultiTaskModel, mlp
    >>> data = planted_clusters(n_tasks=3, n_clusters=3, n_samples=200, seed=0)
    >>> model = MultiTaskModel(mlp(32, (16,)), data.tasks, input_shape=(32,))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> naive_lookahead(model, opt, data.train[list(range(64))], data.tasks).shape
    (3, 3)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from taskgraph.affinity.probe import shared_parameters_of
from taskgraph.data.base import unpack_batch
from taskgraph.tasks import TaskSet

__all__ = ["naive_lookahead"]


def _losses(model: nn.Module, tasks: TaskSet, x: torch.Tensor, ys: Mapping[str, torch.Tensor],
            ms: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    out = model(x)
    return [t.loss(out[t.name], ys[t.name], ms[t.name]) for t in tasks]


def naive_lookahead(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Sequence[Any], tasks: TaskSet, *,
                    eval_batch: Sequence[Any] | None = None) -> np.ndarray:
    """Z_{i→j} = 1 − L_j(θ_{s|i}) / L_j(θ_s), one deep copy and one real ``step()`` per task.

    Returns an ``(n, n)`` array. Does not skip anything: it is meant for
    batches where every task is labelled and every loss is positive.
    ``eval_batch``: take the losses L_j on it (the gradients still on ``batch``).
    """
    xg, ysg, msg = unpack_batch(batch)
    x, ys, ms = unpack_batch(batch if eval_batch is None else eval_batch)
    shared_names = set(shared_parameters_of(model)[0])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        saved = {name: b.clone() for name, b in model.named_buffers()}
        before = torch.stack(_losses(model, tasks, x, ys, ms))
        for name, b in model.named_buffers():
            b.copy_(saved[name])
    n = len(tasks)
    z = np.empty((n, n))
    for i, task in enumerate(tasks):
        m2, opt2 = copy.deepcopy((model, optimizer))
        with torch.random.fork_rng(devices=[]):
            opt2.zero_grad(set_to_none=True)
            out = m2(xg)
            task.loss(out[task.name], ysg[task.name], msg[task.name]).backward()
            for name, p in m2.named_parameters():
                if name not in shared_names:
                    p.grad = None
            opt2.step()
            for name, b in m2.named_buffers():
                b.copy_(saved[name])
            with torch.no_grad():
                after = torch.stack(_losses(m2, tasks, x, ys, ms))
        z[i] = (1.0 - after / before).double().cpu().numpy()
    return z
