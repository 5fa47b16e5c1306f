"""Mistakes a Python user makes with auto_group and train: each gets the project's own one-line error,
naming the loader, task or field and what must hold, before any training."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import taskgraph
from taskgraph.exceptions import ConfigError, DataError, GroupingError, TaskGraphError
from taskgraph.models import mlp
from taskgraph.pipeline import GroupingPolicy
from taskgraph.training import TrainConfig, train

DATA = taskgraph.planted_clusters(n_tasks=3, n_clusters=1, n_samples=300, seed=0)
TR, VA, TE = DATA.loaders(64)
X, YS, MS = next(iter(TR))
FAST = GroupingPolicy(affinity_epochs=1, check_seeds=2, check_epochs=1)


class Batches:
    """A user's own loader: yields the given batches."""

    def __init__(self, batches):
        self.batches = list(batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def auto(**changes):
    args = dict(model=lambda: mlp(DATA.input_shape[0], (16, 4)), tasks=DATA.tasks, train_loader=TR, val_loader=VA,
                policy=FAST, quiet=True)
    args.update(changes)
    return taskgraph.auto_group(**args)


class TwoOutputs(nn.Module):
    """A trunk that returns two tensors, as some users' encoders do."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(DATA.input_shape[0], 8)

    def forward(self, x):
        return self.lin(x), self.lin(x)


NAN_VAL = Batches([(X, {k: torch.full_like(v, float("nan")) for k, v in YS.items()})])
CASES = [
    ("float masks", dict(train_loader=Batches([(X, YS, {k: v.float() for k, v in MS.items()})] * 2)), DataError,
     r"task 't0''s mask must be a bool tensor \(True: labelled\), got torch.float32"),
    ("labels shorter than x", dict(train_loader=Batches([(X, {k: v[:-3] for k, v in YS.items()})] * 2)), DataError,
     r"every label tensor must have one row per sample of x \(64\); task 't0' has 61"),
    ("x a numpy array", dict(train_loader=Batches([(X.numpy(), YS, MS)] * 2)), DataError,
     r"x must be a torch.Tensor, got ndarray"),
    ("a bare tensor for a batch", dict(train_loader=Batches([X] * 2)), DataError,
     r"a batch must be \(x, labels\) or \(x, labels, masks\), got Tensor"),
    ("NaN validation labels", dict(val_loader=NAN_VAL), GroupingError,
     r"val_loader: every labelled entry must be finite; task 't0' has a NaN or infinite label in batch 0"),
    ("an empty training loader", dict(train_loader=Batches([])), GroupingError,
     r"train_loader: a loader must yield at least one batch, got an empty one"),
    ("a task's labels missing", dict(train_loader=Batches([(X, {k: v for k, v in list(YS.items())[:2]})] * 2)),
     GroupingError, r"task\(s\) \['t2'\] missing"),
    ("k above the task count", dict(k=7), GroupingError, r"1 <= k <= 3 \(the number of tasks\) must hold, got k=7"),
    ("an unknown solver", dict(solver="nope"), TaskGraphError, r"unknown grouping solver 'nope'"),
    ("a trunk of the wrong input width", dict(model=lambda: mlp(5, (16, 4))), TaskGraphError,
     r"trunk Sequential failed on input_shape \(32,\)"),
    ("a trunk returning a tuple", dict(model=lambda: TwoOutputs()), TaskGraphError,
     r"trunk TwoOutputs must return one tensor \(batch, features\), got tuple"),
]


@pytest.mark.parametrize(("name", "changes", "error", "match"), CASES, ids=[c[0] for c in CASES])
def test_auto_group_refuses_a_mistake_at_once_with_one_line(name, changes, error, match):
    t0 = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        auto(**changes)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - t0 < 5.0, f"{name}: refused only after training"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only build's message")
def test_a_cuda_device_without_cuda_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"TrainConfig.device: 'cuda' needs a CUDA build of torch .*\[key 'device'\]"):
        auto(check_config=TrainConfig(epochs=1, device="cuda"))
    with pytest.raises(ConfigError, match=r"torch.cuda.is_available\(\) is False"):
        train(nn.Linear(1, 1), DATA.tasks, TR, config=TrainConfig(epochs=1, device="cuda:0"))
