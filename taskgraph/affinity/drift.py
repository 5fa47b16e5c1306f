"""The optimizer's momentum drift: the part of every lookahead that does not depend on the source task.

D_j = 1 − L_j(update(θ_s, 0)) / L_j(θ_s): the change of task j's loss under one
optimizer step with a zero gradient, i.e. where the optimizer's state alone
(momentum, Adam's moments, decoupled weight decay) would move the shared
parameters. With a momentum optimizer most of a lookahead step
θ_{s|i} = update(θ_s, g_i) is this shared part, so Z_{i→j} swings from step to
step with D_j; :class:`~taskgraph.affinity.tracker.AffinityTracker` measures D at
many more steps than Z and uses it as a control variate.

Two entry points:

- :func:`momentum_drift`: one call, any model (two forwards, or one given the
  losses at θ);
- :class:`StepDrift`: the same numbers from the training step's own losses, with
  everything that does not change between steps (the shared parameters, the
  optimizer's groups, the loss layout, whether the heads are linear) looked up
  once: the tracker's hot path, run at every step it can afford. With linear heads
  :meth:`StepDrift.measure` also returns a proxy of the rest of each lookahead, the
  part the source task's own gradient adds (Z_{i→j} − D_j): P_{i→j} = s_i · s_j / L_j,
  s_i the batch-summed gradient of task i's loss with respect to the trunk's output.
  It comes from the same forward, in closed form, and the tracker uses it as a
  second control variate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from taskgraph.affinity.optim import momentum_step, param_groups_of
from taskgraph.affinity.probe import LossPlan, Probe, StackedLoss, linear_heads, shared_parameters_of, stacked_heads
from taskgraph.data.base import unpack_batch
from taskgraph.tasks import TaskSet

__all__ = ["StepDrift", "momentum_drift"]


def momentum_drift(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Sequence[Any], tasks: TaskSet, *,
                   base: torch.Tensor | None = None,
                   shared: tuple[Sequence[str], Sequence[torch.Tensor]] | None = None) -> np.ndarray:
    """Every task's change under the optimizer's step with a zero gradient: its own momentum.

    D_j = 1 − L_j(update(θ_s, 0)) / L_j(θ_s), with the optimizer's rule and state (for Adam
    the step the moments alone would take; for plain SGD without weight decay D = 0). It is
    the part of every lookahead Z_{i→j} that does not depend on the source task i: with a
    momentum optimizer most of a lookahead step is the shared momentum, so Z_{·→j} moves
    from step to step with D_j. :class:`~taskgraph.affinity.tracker.AffinityTracker` uses
    it as a control variate: cheap (two forwards, or one given ``base``; no backward).

    Args:
        base: the ``(n,)`` task losses at θ_s on ``batch`` when the caller has them already
            (the training step's own, see :meth:`taskgraph.training.Callback.on_losses`): then
            one forward instead of two. Ignored when the model has active dropout (its
            forwards would not see the same masks).
        shared: the model's shared parameters as :func:`~taskgraph.affinity.probe.shared_parameters_of`
            gives them, when the caller keeps them (saves looking them up at every call).

    Returns:
        ``(n,)`` array; NaN for a task without a labelled sample or with a zero or
        non-finite loss.

    Example:
        >>> import torch
        >>> from taskgraph.data import planted_clusters
        >>> from taskgraph.models import MultiTaskModel, mlp
        >>> data = planted_clusters(n_tasks=3, n_clusters=1, n_samples=100, seed=0)
        >>> model = MultiTaskModel(mlp(32, (8,)), data.tasks, input_shape=(32,))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> momentum_drift(model, opt, data.train[list(range(32))], data.tasks).tolist()
        [0.0, 0.0, 0.0]
    """
    if base is not None:
        drift = StepDrift(model, tasks, shared=shared)
        if not drift.random():
            return drift(optimizer, batch, base)
    x, ys, ms = unpack_batch(batch)
    out = np.full(len(tasks), np.nan)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        probe = Probe(model, tasks, x, ys, ms, graph=False)
        if not probe.active:
            return out
        new = momentum_step(optimizer, probe.params)
        both = probe.losses_at([torch.stack([p.detach(), q]) for p, q in zip(probe.params, new)])
        z = (1.0 - both[1] / both[0]).cpu().double().numpy()
    z[~np.isfinite(z)] = np.nan
    out[np.asarray(probe.active)] = z
    return out


class StepDrift:
    """D_j from a step's own losses at θ: one forward at the momentum step, nothing looked up twice.

    Built once per (model, task set); each call takes the optimizer, the step's batch and
    the step's ``(n,)`` losses at θ on that batch, and returns what
    ``momentum_drift(model, optimizer, batch, tasks, base=losses)`` returns. For a
    :class:`~taskgraph.models.base.MultiTaskModel` with linear heads the forward is the
    trunk alone plus one matrix product for every head; otherwise the whole model with
    the shared parameters overridden. Module buffers are never touched (a trunk with
    buffers runs on copies).

    Args:
        model: the model (exposes ``shared_parameters()``).
        tasks: the tasks, in the order of ``base`` and of the result.
        shared: the model's shared parameters when the caller has them already.

    Example:
        >>> import torch
        >>> from taskgraph.data import planted_clusters
        >>> from taskgraph.models import MultiTaskModel, mlp
        >>> data = planted_clusters(n_tasks=3, n_clusters=1, n_samples=100, seed=0)
        >>> model = MultiTaskModel(mlp(32, (8,)), data.tasks, input_shape=(32,))
        >>> opt = torch.optim.Adam(model.parameters(), lr=0.1)
        >>> x, ys, ms = data.train[list(range(32))]
        >>> for _ in range(2):  # two steps: Adam's moments are not zero
        ...     opt.zero_grad(); out = model(x)
        ...     losses = torch.stack([t.loss(out[t.name], ys[t.name], ms[t.name]) for t in data.tasks])
        ...     losses.sum().backward(); opt.step()
        >>> out = model(x)
        >>> base = torch.stack([t.loss(out[t.name], ys[t.name], ms[t.name]) for t in data.tasks]).detach()
        >>> drift = StepDrift(model, data.tasks)
        >>> bool(abs(drift(opt, (x, ys, ms), base) - momentum_drift(model, opt, (x, ys, ms), data.tasks)).max() < 1e-6)
        True
    """

    def __init__(self, model: nn.Module, tasks: TaskSet,
                 shared: tuple[Sequence[str], Sequence[torch.Tensor]] | None = None):
        names, params = shared if shared is not None else shared_parameters_of(model)
        self.model, self.tasks = model, tasks
        self.params = list(params)
        self.plan = LossPlan(tasks)
        self._dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        self._linear = linear_heads(model, names)
        # what the drift's forward runs: the trunk alone with linear heads, else the whole model
        self._module: nn.Module = model.trunk if self._linear else model  # type: ignore[assignment]
        self._buffers = list(self._module.named_buffers())
        self._groups: tuple[torch.optim.Optimizer, int, list[dict[str, Any] | None]] | None = None

    def random(self) -> bool:
        """Whether a forward draws random numbers now (active dropout): then the step's losses are
        not comparable with the drift's forward, and :func:`momentum_drift` takes two forwards."""
        return any(m.p > 0 and m.training for m in self._dropouts)

    def _groups_for(self, optimizer: torch.optim.Optimizer) -> list[dict[str, Any] | None]:
        # the same optimizer object (not merely the same id: a new run's optimizer may reuse a dead one's)
        g = self._groups
        if g is None or g[0] is not optimizer or g[1] != len(optimizer.param_groups):
            g = self._groups = (optimizer, len(optimizer.param_groups), param_groups_of(optimizer, self.params))
        return g[2]

    def __call__(self, optimizer: torch.optim.Optimizer, batch: Sequence[Any], base: torch.Tensor) -> np.ndarray:
        """``(n,)`` drift on ``batch`` given the losses at θ on it; NaN where a task has no label
        or a zero or non-finite loss."""
        return self.measure(optimizer, batch, base)[0]

    @torch.no_grad()
    def measure(self, optimizer: torch.optim.Optimizer, batch: Sequence[Any], base: torch.Tensor, *,
                proxy: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The drift, and with ``proxy`` (linear heads only; else None) the ``(n, n)`` proxy
        P_{i→j} = s_i · s_j / L_j(θ) of what the source task adds to a lookahead, where s_i is
        the batch-summed gradient of task i's loss with respect to the trunk's output at the
        momentum step: the gradient of a bias added to the features, which every task's
        lookahead moves. It costs one closed-form gradient of the losses the drift computes
        anyway; :class:`~taskgraph.affinity.tracker.AffinityTracker` uses it as a second
        control variate."""
        x, ys, ms = unpack_batch(batch)
        new = momentum_step(optimizer, self.params, groups=self._groups_for(optimizer))
        loss = StackedLoss(self.tasks, ys, ms, dtype=new[0].dtype, device=x.device, plan=self.plan)
        P = None
        with torch.random.fork_rng(devices=[]):
            if self._linear:
                feats = self._forward_at(new, x)
                W, b = stacked_heads(self.model, self.tasks.names)
                H = torch.nn.functional.linear(feats, W, b)
                if proxy:
                    after, g = loss.output_grad_sums(H)
                    S = W.new_zeros((self.plan.n, W.shape[1])).index_add_(0, self.plan.column_tasks(W.device),
                                                                          g.unsqueeze(-1) * W)
                    P = ((S @ S.T) / base.to(S)).cpu().double().numpy()
                else:
                    after = loss(H)
            else:
                after = loss(loss.concat(self._forward_at(new, x), self.tasks.names))
        z = (1.0 - after / base.to(after)).cpu().double().numpy()
        bad = ~(np.isfinite(z) & loss.labelled())
        z[bad] = np.nan
        if P is not None:
            P[:, bad] = np.nan
            P[bad, :] = np.nan
        return z, P

    def _forward_at(self, params: list[torch.Tensor], x: torch.Tensor) -> Any:
        # self._module's forward with the shared parameters' storage swapped for `params` (no module
        # re-parametrisation: cheaper than functional_call), then swapped back whatever happens;
        # buffers (BatchNorm statistics) are swapped for copies the same way, so the model's stay untouched
        saved = [p.data for p in self.params]
        bufs = [b.data for _, b in self._buffers]
        try:
            for p, q in zip(self.params, params):
                p.data = q
            for (_, b), d in zip(self._buffers, bufs):
                b.data = d.clone()
            return self._module(x)  # the trunk's features, or the whole model's {task: output}
        finally:
            for p, d in zip(self.params, saved):
                p.data = d
            for (_, b), d in zip(self._buffers, bufs):
                b.data = d
