"""Affinity estimators: one measurement of Z_{i→j} on one batch.

Every estimator takes the model, its optimizer (read, never modified), one
batch and the task set, and returns an :class:`AffinityStep`: an ``(n, n)``
array whose entry ``[i, j]`` says how much a step on task i's gradient helps
task j, plus which tasks were skipped and why.

- :class:`ExactLookahead` (``"exact"``) — TAG's lookahead (Fifty et al.,
  "Efficiently Identifying Task Groupings for Multi-Task Learning",
  NeurIPS 2021): θ_{s|i} = update(θ_s, ∇_{θ_s} L_i) with the optimizer's own rule
  and state, then Z_{i→j} = 1 − L_j(θ_{s|i}) / L_j(θ_s); heads unchanged.
- :class:`FirstOrder` (``"first_order"``) — its first-order Taylor expansion,
  Z_{i→j} ≈ −Δ_i·g_j / L_j with Δ_i = θ_{s|i} − θ_s the optimizer's actual step
  for task i (for plain SGD Δ_i = −η g_i, so Z_{i→j} ≈ η g_i·g_j / L_j).
- :class:`GradientCosine` (``"cosine"``) — cos(g_i, g_j) (Yu et al.,
  "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, use its sign as
  conflict); symmetric, 1 on the diagonal, independent of the optimizer.

All three share one batched backward for the per-task gradients (chunked over
tasks); the exact estimator adds one vmapped forward per chunk of lookaheads.
:func:`group_lookahead` is TAG's higher-order variant: the lookahead of a
*group* of tasks (summed gradient) onto every task.

Skips: a task with no labelled sample in the batch gets NaN in its row and
column; a task whose current loss is zero gets NaN in its column (the ratio is
undefined) and one whose loss is not finite NaN in its row and column. Each
skip is reported in :attr:`AffinityStep.skipped`.

Example:
    >>> import torch
    >>> from taskgraph.data import planted_clusters
    >>> from taskgraph.models import MultiTaskModel, mlp
    >>> data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=200, seed=0)
    >>> model = MultiTaskModel(mlp(32, (16,)), data.tasks, input_shape=(32,))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> step = ESTIMATORS.get("exact")().measure(model, opt, data.train[list(range(64))], data.tasks)
    >>> step.values.shape, step.skipped
    ((4, 4), {})
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from taskgraph.affinity.drift import momentum_drift
from taskgraph.affinity.optim import lookahead_parameters, update_directions
from taskgraph.affinity.probe import Probe
from taskgraph.data.base import unpack_batch
from taskgraph.exceptions import AffinityError
from taskgraph.registry import Registry
from taskgraph.tasks import TaskSet

__all__ = [
    "CUDA_FREE_SHARE",
    "DEFAULT_CHUNK",
    "ESTIMATORS",
    "AffinityEstimator",
    "AffinityStep",
    "ExactLookahead",
    "FirstOrder",
    "GradientCosine",
    "group_lookahead",
    "momentum_drift",
    "make_estimator",
]


#: tasks per chunk of :func:`group_lookahead` (one chunk up to 10 groups; balanced chunks beyond)
DEFAULT_CHUNK = 10
#: on a CUDA device the automatic chunk may use this share of the device's free memory even
#: when that is more than ``memory_budget`` plain steps: a GPU pass costs kernel launches, not
#: arithmetic, so one chunk of all tasks is ~9x faster than chunks of 2 at n = 40 on an H200
#: (``benchmarks/affinity_speed.py --device cuda --only memory``), while the memory it takes is
#: small next to the device's
CUDA_FREE_SHARE = 0.25


@dataclass(frozen=True)
class AffinityStep:
    """One measured step.

    Attributes:
        values: ``(n, n)`` Z_{i→j} (NaN where skipped).
        losses: ``(n,)`` task losses at the current parameters (NaN if unlabelled).
        skipped: ``{task: reason}`` for tasks left out of a row and/or column.
    """

    values: np.ndarray
    losses: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)


class AffinityEstimator(ABC):
    """Base class: measure Z_{i→j} for all task pairs on one batch.

    Args:
        chunk_size: tasks per batched backward / lookahead. None (the default) chooses it per
            batch from a memory budget (:meth:`~taskgraph.affinity.probe.Probe.auto_chunk`):
            extra memory ≈ one forward's activations + chunk_size × (one copy of the shared
            parameters + one forward's activations), kept within ``memory_budget`` × a plain
            training step's footprint (parameters, gradients, optimizer state, activations),
            so the peak stays within about (1 + memory_budget)× a plain step's; larger chunks
            are faster, smaller ones leaner. On a CUDA device the budget is at least
            :data:`CUDA_FREE_SHARE` of the device's free memory.
        memory_budget: the budget of the automatic chunk, in plain training steps (default 1.5; the
            per-task estimate is conservative: on the benchmark MLP 1.5 gives chunk 2 and a measured
            peak of 1.85× a plain step at n = 40).

    Subclasses implement :meth:`_compute` on a :class:`~taskgraph.affinity.probe.Probe`.
    """

    name: ClassVar[str] = ""
    #: whether the estimator depends on the optimizer's update rule
    uses_optimizer: ClassVar[bool] = True
    #: whether it evaluates losses at lookahead parameters (and so can take them on another batch)
    evaluates_losses: ClassVar[bool] = False

    def __init__(self, *, chunk_size: int | None = None, memory_budget: float = 1.5):
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise AffinityError(f"chunk_size must be an int >= 1 or None, got {chunk_size!r}")
        if not (isinstance(memory_budget, int | float) and 0 < memory_budget < float("inf")):
            raise AffinityError(f"memory_budget must be a finite number > 0, got {memory_budget!r}")
        self.chunk_size = chunk_size
        self.memory_budget = float(memory_budget)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(chunk_size={self.chunk_size}, memory_budget={self.memory_budget})"

    def chunk_for(self, probe: Probe, optimizer: torch.optim.Optimizer | None = None) -> int:
        """The chunk size used on ``probe``'s batch (given, or from the memory budget)."""
        if self.chunk_size:
            return self.chunk_size
        state = 0 if optimizer is None else sum(
            v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values()
            if isinstance(v, torch.Tensor))
        floor = 0
        if probe.x.is_cuda:
            free, _ = torch.cuda.mem_get_info(probe.x.device)
            floor = int(CUDA_FREE_SHARE * free)
        return probe.auto_chunk(self.memory_budget, state, floor_bytes=floor)

    def measure(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, batch: Sequence[Any],
                tasks: TaskSet, *, eval_batch: Sequence[Any] | None = None) -> AffinityStep:
        """Measure on one batch without changing the model, the optimizer or the RNG stream.

        Args:
            model: exposes ``shared_parameters()``; ``model(x)`` → ``{task: pred}``.
            optimizer: the optimizer training ``model`` (its current state is used).
            batch: ``(x, {task: y}[, {task: mask}])`` on the model's device.
            tasks: the tasks to measure, in matrix order.
            eval_batch: estimators that evaluate losses (``exact``): take the gradients on
                ``batch`` and every loss (before and after the lookahead) on ``eval_batch``,
                typically ``batch`` a random part of ``eval_batch``. Gradients from a part and
                losses on the whole have the same expectation, to first order, as both on the
                whole batch, where both on the part overstate how much tasks agree; the batched
                backward, the expensive half, runs on the part. Tasks without a labelled sample
                in ``batch`` are skipped. Ignored by the other estimators.

        Raises:
            AffinityError: no shared parameters, an unsupported optimizer, labels missing.
        """
        if self.uses_optimizer and optimizer is None:
            raise AffinityError(f"estimator {self.name!r} needs the optimizer that trains the model, got None")
        x, ys, ms = unpack_batch(batch)
        n = len(tasks)
        values = np.full((n, n), np.nan)
        losses = np.full(n, np.nan)
        with torch.random.fork_rng(devices=[]):
            probe = Probe(model, tasks, x, ys, ms)
            skipped = dict(probe.skipped)
            if not probe.active:
                return AffinityStep(values, losses, skipped)
            evaluator = probe
            if eval_batch is not None and self.evaluates_losses:
                xe, yse, mse = unpack_batch(eval_batch)
                evaluator = Probe(model, probe.tasks, xe, yse, mse, graph=False)
                with torch.no_grad():
                    evaluator.base = evaluator.losses_at([p.detach().unsqueeze(0) for p in probe.params])[0]
            base = evaluator.base
            act = np.asarray(probe.active)
            losses[act] = base.cpu().double().numpy()
            z = self._compute(probe, optimizer, evaluator).cpu().double().numpy()  # (n_active, n_active)
            zero = (base == 0).cpu().numpy()
            for k in zero.nonzero()[0]:
                skipped[tasks[probe.active[k]].name] = "zero loss"
            z[:, zero] = np.nan
            z[~np.isfinite(z)] = np.nan
            values[np.ix_(act, act)] = z
        return AffinityStep(values, losses, skipped)

    @abstractmethod
    def _compute(self, probe: Probe, optimizer: torch.optim.Optimizer | None, evaluator: Probe) -> torch.Tensor:
        """``(n_active, n_active)`` affinities among the probe's active tasks (``evaluator``: where
        losses are evaluated; ``probe`` itself unless ``measure`` got an ``eval_batch``)."""


class ExactLookahead(AffinityEstimator):
    """TAG lookahead with the optimizer's own update rule (Fifty et al., NeurIPS 2021).

    For each source task i (batched over ``chunk_size`` tasks): one step of the real
    optimizer's rule from its current state with task i's gradient alone, applied to
    the shared parameters only; Z_{i→j} = 1 − L_j(θ_{s|i}) / L_j(θ_s).
    """

    name = "exact"
    evaluates_losses = True

    def _compute(self, probe: Probe, optimizer: torch.optim.Optimizer | None, evaluator: Probe) -> torch.Tensor:
        assert optimizer is not None  # measure() refuses None for an estimator that uses the optimizer
        w = torch.eye(len(probe.active), dtype=probe.base.dtype, device=probe.x.device)
        out = []
        chunks = list(probe.chunks(len(w), self.chunk_for(probe, optimizer)))
        for k, sl in enumerate(chunks):
            grads = probe.gradients(w[sl], last=k == len(chunks) - 1)
            new = lookahead_parameters(optimizer, probe.params, grads, inplace=True)
            del grads
            out.append(1.0 - evaluator.losses_at(new) / evaluator.base)
        return torch.cat(out)


class FirstOrder(AffinityEstimator):
    """First-order TAG: Z_{i→j} ≈ −Δ_i·g_j / L_j, Δ_i the optimizer's step for task i.

    For plain SGD this is η g_i·g_j / L_j; for Adam and momentum it dots the actual
    update direction (state included) with g_j. Equals the exact estimator to first
    order in the learning rate.
    """

    name = "first_order"

    def _compute(self, probe: Probe, optimizer: torch.optim.Optimizer | None, evaluator: Probe) -> torch.Tensor:
        assert optimizer is not None  # measure() refuses None for an estimator that uses the optimizer
        n = len(probe.active)
        eye = torch.eye(n, dtype=probe.base.dtype, device=probe.x.device)
        chunks = list(probe.chunks(n, self.chunk_for(probe, optimizer)))
        gs, ds = [], []
        for k, sl in enumerate(chunks):
            g = probe.gradients(eye[sl], last=k == len(chunks) - 1)
            d = update_directions(optimizer, probe.params, g)
            gs.append(torch.cat([t.reshape(t.shape[0], -1) for t in g], 1))
            ds.append(torch.cat([t.reshape(t.shape[0], -1) for t in d], 1))
        G, D = torch.cat(gs), torch.cat(ds)
        return -(D @ G.T) / probe.base


class GradientCosine(AffinityEstimator):
    """cos(g_i, g_j) of per-task gradients on the shared parameters (NaN for a zero gradient)."""

    name = "cosine"
    uses_optimizer = False

    def _compute(self, probe: Probe, optimizer: torch.optim.Optimizer | None, evaluator: Probe) -> torch.Tensor:
        n = len(probe.active)
        eye = torch.eye(n, dtype=probe.base.dtype, device=probe.x.device)
        chunks = list(probe.chunks(n, self.chunk_for(probe, optimizer)))
        gs = []
        for k, sl in enumerate(chunks):
            g = probe.gradients(eye[sl], last=k == len(chunks) - 1)
            gs.append(torch.cat([t.reshape(t.shape[0], -1) for t in g], 1))
        G = torch.cat(gs)
        norm = G.norm(dim=1)
        Gn = G / torch.where(norm > 0, norm, torch.nan).unsqueeze(1)
        return Gn @ Gn.T


ESTIMATORS: Registry[type[AffinityEstimator]] = Registry("affinity estimator")
for _cls in (ExactLookahead, FirstOrder, GradientCosine):
    ESTIMATORS.register(_cls.name, _cls)


def make_estimator(estimator: str | AffinityEstimator, **params: Any) -> AffinityEstimator:
    """An estimator instance from a name (see :data:`ESTIMATORS`) or an instance as is.

    Raises:
        UnknownNameError: the name is not registered (the message lists the valid ones).
    """
    if isinstance(estimator, AffinityEstimator):
        return estimator
    return ESTIMATORS.get(estimator, key="estimator")(**params)


def group_lookahead(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Sequence[Any], tasks: TaskSet,
                    groups: Sequence[Sequence[str]], *, chunk_size: int | None = DEFAULT_CHUNK) -> np.ndarray:
    """TAG's group→task affinity: lookahead with the summed gradient of each group.

    Z_{G→j} = 1 − L_j(θ_{s|G}) / L_j(θ_s) with θ_{s|G} = update(θ_s, Σ_{i∈G} ∇L_i).
    Used to score candidate groups directly (Fifty et al. 2021, higher-order
    approximation).

    Args:
        groups: task-name lists (non-empty, names in ``tasks``).

    Returns:
        ``(len(groups), n)`` array; NaN for skipped target tasks, and for a group
        none of whose tasks is labelled in the batch.

    Raises:
        AffinityError: an empty group or an unknown task name.

    Example:
        >>> import torch
        >>> from taskgraph.data import planted_clusters
        >>> from taskgraph.models import MultiTaskModel, mlp
        >>> data = planted_clusters(n_tasks=4, n_clusters=2, n_samples=200, seed=0)
        >>> model = MultiTaskModel(mlp(32, (16,)), data.tasks, input_shape=(32,))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> z = group_lookahead(model, opt, data.train[list(range(64))], data.tasks, [["t0", "t1"], ["t2"]])
        >>> z.shape
        (2, 4)
    """
    for g in groups:
        if not g:
            raise AffinityError("group_lookahead: every group must hold at least one task, got an empty group")
        unknown = [t for t in g if t not in tasks.names]
        if unknown:
            raise AffinityError(f"group_lookahead: unknown task(s) {unknown}; known: {', '.join(tasks.names)}")
    x, ys, ms = unpack_batch(batch)
    n = len(tasks)
    out = np.full((len(groups), n), np.nan)
    with torch.random.fork_rng(devices=[]):
        probe = Probe(model, tasks, x, ys, ms)
        if not probe.active:
            return out
        pos = {tasks[i].name: k for k, i in enumerate(probe.active)}
        W = torch.zeros(len(groups), len(probe.active), dtype=probe.base.dtype, device=probe.x.device)
        for r, g in enumerate(groups):
            for t in g:
                if t in pos:
                    W[r, pos[t]] = 1.0
        keep = (W.sum(1) > 0).nonzero().flatten()
        if not len(keep):
            return out
        W = W[keep]
        base = probe.base
        res = []
        chunks = list(probe.chunks(len(keep), chunk_size))
        for k, sl in enumerate(chunks):
            grads = probe.gradients(W[sl], last=k == len(chunks) - 1)
            res.append(1.0 - probe.losses_at(lookahead_parameters(optimizer, probe.params, grads, inplace=True)) / base)
        z = torch.cat(res).cpu().double().numpy()
        z[:, ~(torch.isfinite(base) & (base != 0)).cpu().numpy()] = np.nan
        z[~np.isfinite(z)] = np.nan
        out[np.ix_(keep.cpu().numpy(), np.asarray(probe.active))] = z
    return out
