"""FAMO: fast adaptive multitask optimisation, balancing the tasks' loss decrease rates in O(1) space and time.

Liu, Liu, Stone and Liu, NeurIPS 2023, "FAMO: Fast Adaptive Multitask
Optimization". Task logits ξ give ``z = softmax(ξ)``; the model descends

    Σ_t z_t · log(L_t + ε) / c,   c = Σ_t z_t / (L_t + ε),

i.e. task t's gradient is weighted by ``z_t / (c·(L_t + ε))`` (positive, from one
backward pass: no per-task gradients). After a step, the logits take a step
(Adam, rate ``lr``, weight decay ``gamma``) along ``J_zᵀ δ`` with
``δ_t = log L_t(before) − log L_t(after)``, which lowers the logit of tasks whose
loss fell fastest. FAMO's reference code measures "after" with a second forward
pass on the same batch; here it is the loss on the *next* batch (no extra
forward pass), a noisier estimate of the same decrease.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor(1.0))
    >>> famo = FAMO()
    >>> state = famo.init_state(["a", "b"], None)
    >>> weights = famo.backward({"a": 2 * w, "b": 4 * w}, None, state, step=0, epoch=0)
    >>> {k: round(v, 4) for k, v in weights.items()}  # z = (1/2, 1/2): weights ∝ z/L, summing to 1
    {'a': 0.6667, 'b': 0.3333}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from taskgraph.exceptions import ConfigError
from taskgraph.weighting.base import LossWeighting, stack_losses

__all__ = ["FAMO", "FAMOState"]


@dataclass
class FAMOState:
    """Task names, the task logits ξ, their optimizer, and the last step's losses."""

    names: tuple[str, ...]
    logits: nn.Parameter
    optimizer: torch.optim.Optimizer
    previous: torch.Tensor | None = None


@dataclass(frozen=True)
class FAMO(LossWeighting):
    """FAMO (Liu et al. 2023).

    Attributes:
        lr: learning rate of the logits' Adam optimizer (> 0; the paper uses 0.025).
        gamma: weight decay of the logits (>= 0; the paper uses 1e-3 to 1e-2).
        eps: added to losses before the logarithm (> 0).

    Raises:
        ConfigError: a hyper-parameter outside its range.
    """

    name: ClassVar[str] = "famo"
    lr: float = 0.025
    gamma: float = 1e-3
    eps: float = 1e-8

    def __post_init__(self) -> None:
        for key, ok, must in (("lr", self.lr > 0, "> 0"), ("gamma", self.gamma >= 0, ">= 0"),
                              ("eps", self.eps > 0, "> 0")):
            v = getattr(self, key)
            if not ok or v != v or v == float("inf"):
                raise ConfigError(f"FAMO: '{key}' must be finite and {must}, got {v!r}", key=key)

    def init_state(self, task_names: Sequence[str], model: nn.Module) -> FAMOState:
        names = tuple(task_names)
        p = next(model.parameters(), None) if model is not None else None
        dev = p.device if p is not None else torch.device("cpu")
        xi = nn.Parameter(torch.zeros(len(names), device=dev))
        return FAMOState(names, xi, torch.optim.Adam([xi], lr=self.lr, weight_decay=self.gamma))

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module, state: FAMOState, *, step: int,
                 epoch: int) -> dict[str, float]:
        vec = stack_losses(losses, state.names)
        now = vec.detach().clamp_min(0) + self.eps
        if state.previous is not None:
            self.update(state, state.previous, now)
        z = torch.softmax(state.logits.detach(), dim=0).to(vec.dtype)
        shifted = vec.clamp_min(0) + self.eps
        c = (z / now).sum()
        (z * shifted.log() / c).sum().backward()
        state.previous = now
        return dict(zip(state.names, (z / (c * now)).tolist()))

    @staticmethod
    def update(state: FAMOState, before: torch.Tensor, after: torch.Tensor) -> None:
        """One step of the logits from the losses before and after a model update."""
        delta = (before.log() - after.log()).to(state.logits.dtype)
        with torch.enable_grad():
            z = torch.softmax(state.logits, dim=0)
            (grad,) = torch.autograd.grad(z, [state.logits], grad_outputs=delta)
        state.optimizer.zero_grad(set_to_none=True)
        state.logits.grad = grad
        state.optimizer.step()
