"""GradNorm: learn task weights that balance the tasks' gradient norms on the shared parameters.

Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018, "GradNorm: Gradient
Normalization for Adaptive Loss Balancing in Deep Multitask Networks".
At each step, with ``G_t = w_t·‖∇_W L_t‖`` on the shared parameters W, ``Ḡ`` its
mean, ``L̃_t = L_t / L_t(0)`` and ``r_t = L̃_t / mean(L̃)``, the weights take a
gradient step on

    L_grad = Σ_t | G_t − Ḡ · r_t^α |      (the target Ḡ·r_t^α held constant)

and are renormalised to sum to the number of tasks K. The model's gradient is
that of ``Σ_t w_t L_t`` with the weights before the update (Algorithm 1 of the
paper). The per-task gradients come from
:func:`taskgraph.gradients.flat_per_task_gradients` over
``model.shared_parameters()`` (the paper uses the last shared layer; this uses
every shared parameter). The weights' optimizer (Adam, rate ``lr``) lives in the
state object.

Example:
    >>> import torch
    >>> from taskgraph.models import MultiTaskModel, mlp
    >>> from taskgraph.tasks import Task, TaskSet
    >>> tasks = TaskSet([Task("a"), Task("b")])
    >>> model = MultiTaskModel(mlp(4, (8,)), tasks, input_shape=(4,))
    >>> gn = GradNorm(alpha=1.5)
    >>> state = gn.init_state(tasks.names, model)
    >>> out = model(torch.randn(16, 4))
    >>> losses = {n: (out[n] ** 2).mean() for n in tasks.names}
    >>> w = gn.backward(losses, model, state, step=0, epoch=0)
    >>> w  # the weights used for this step (the first step uses the initial ones)
    {'a': 1.0, 'b': 1.0}
    >>> round(float(state.weights.detach().sum()), 6)  # after the update: renormalised to K = 2
    2.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from taskgraph.exceptions import ConfigError
from taskgraph.gradients import flat_per_task_gradients
from taskgraph.weighting.base import LossWeighting, shared_parameter_list, stack_losses

__all__ = ["GradNorm", "GradNormState"]


@dataclass
class GradNormState:
    """Task names, the current weights (sum K), their optimizer, and the first step's losses."""

    names: tuple[str, ...]
    weights: nn.Parameter
    optimizer: torch.optim.Optimizer
    initial: torch.Tensor | None = None
    history: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class GradNorm(LossWeighting):
    """GradNorm (Chen et al. 2018).

    Attributes:
        alpha: restoring-force strength (>= 0; 0 equalises gradient norms, larger pulls
            slow tasks harder). The paper uses 0.12–3.0, 1.5 for its main results.
        lr: learning rate of the weights' Adam optimizer (> 0).
        min_weight: floor a weight is clamped to before renormalisation (> 0).

    Raises:
        ConfigError: a hyper-parameter outside its range.
    """

    name: ClassVar[str] = "gradnorm"
    alpha: float = 1.5
    lr: float = 0.025
    min_weight: float = 1e-3

    def __post_init__(self) -> None:
        for key, ok, must in (("alpha", self.alpha >= 0, ">= 0"), ("lr", self.lr > 0, "> 0"),
                              ("min_weight", self.min_weight > 0, "> 0")):
            v = getattr(self, key)
            if not ok or v != v or v == float("inf"):
                raise ConfigError(f"GradNorm: '{key}' must be finite and {must}, got {v!r}", key=key)

    def init_state(self, task_names: Sequence[str], model: nn.Module) -> GradNormState:
        names = tuple(task_names)
        p = next(model.parameters(), None) if model is not None else None
        dev = p.device if p is not None else torch.device("cpu")
        w = nn.Parameter(torch.ones(len(names), device=dev))
        return GradNormState(names, w, torch.optim.Adam([w], lr=self.lr))

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module, state: GradNormState, *, step: int,
                 epoch: int) -> dict[str, float]:
        vec = stack_losses(losses, state.names)
        used = state.weights.detach().clone()
        shared = shared_parameter_list(model, "GradNorm")
        if state.initial is None:
            state.initial = vec.detach().clamp_min(1e-12)
        if shared and len(state.names) > 1:
            grads = flat_per_task_gradients(vec, shared, retain_graph=True)
            self.update(state, grads.norm(dim=1), vec.detach())
        (used.to(vec.dtype) * vec).sum().backward()
        return dict(zip(state.names, used.tolist()))

    def update(self, state: GradNormState, grad_norms: torch.Tensor, losses: torch.Tensor) -> None:
        """One GradNorm step on the weights from per-task gradient norms and losses, then renormalise."""
        k = len(state.names)
        w = state.weights
        g = w * grad_norms.to(w.dtype)
        if state.initial is None:  # called before any backward: these losses are the reference L(0)
            state.initial = losses.detach().clamp_min(1e-12)
        ratio = losses.to(w.dtype) / state.initial.to(w.dtype)
        rel = ratio / ratio.mean().clamp_min(1e-12)
        target = (g.mean() * rel.pow(self.alpha)).detach()
        gn_loss = (g - target).abs().sum()
        state.optimizer.zero_grad(set_to_none=True)
        (grad,) = torch.autograd.grad(gn_loss, [w])
        w.grad = grad
        state.optimizer.step()
        with torch.no_grad():
            w.clamp_(min=self.min_weight)
            w.mul_(k / w.sum())
        state.history.append(w.detach().tolist())
