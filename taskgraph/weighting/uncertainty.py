"""Uncertainty weighting: learn each task's homoscedastic noise and weight by its inverse.

Kendall, Gal and Cipolla, CVPR 2018, "Multi-Task Learning Using Uncertainty to
Weigh Losses for Scene Geometry and Semantics". With ``s_t = log σ_t²`` learned
jointly with the model, the objective is

    L = Σ_t c_t · exp(−s_t) · L_t + ½ s_t,

where ``c_t = ½`` for regression (a Gaussian likelihood) and ``c_t = 1`` for
classification (a Boltzmann likelihood), as derived in the paper. The
``s_t`` are :meth:`extra_parameters` (the training loop adds them to its
optimizer) and live in the state object, not in the strategy.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor(1.0))
    >>> uw = UncertaintyWeighting()
    >>> state = uw.init_state(["a", "b"], None)
    >>> uw.backward({"a": 2 * w, "b": w}, None, state, step=0, epoch=0)  # s = 0: c_t = 1/2 by default
    {'a': 0.5, 'b': 0.5}
    >>> [round(float(g), 2) for g in state.log_vars.grad]  # ∂L/∂s_t = −c·e^{−s}·L_t + 1/2
    [-0.5, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from taskgraph.exceptions import ConfigError
from taskgraph.weighting.base import LossWeighting, stack_losses

__all__ = ["UncertaintyState", "UncertaintyWeighting"]


@dataclass
class UncertaintyState:
    """Task names, the learned log-variances ``s_t`` and the likelihood factors ``c_t``."""

    names: tuple[str, ...]
    log_vars: nn.Parameter
    factors: torch.Tensor


@dataclass(frozen=True)
class UncertaintyWeighting(LossWeighting):
    """Learned per-task log-variances (Kendall et al. 2018).

    Attributes:
        init_log_var: initial ``s_t`` for every task (finite).

    Raises:
        ConfigError: a non-finite ``init_log_var``.
    """

    name: ClassVar[str] = "uncertainty"
    init_log_var: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.init_log_var, (int, float)) or not abs(self.init_log_var) < float("inf"):
            raise ConfigError(f"UncertaintyWeighting: 'init_log_var' must be finite, got {self.init_log_var!r}",
                              key="init_log_var")

    def init_state(self, task_names: Sequence[str], model: nn.Module | None) -> UncertaintyState:
        names = tuple(task_names)
        p = next(model.parameters(), None) if model is not None else None
        dev = p.device if p is not None else torch.device("cpu")
        tasks = getattr(model, "tasks", None)
        factors = [1.0 if tasks is not None and n in tasks and tasks[n].kind != "regression" else 0.5
                   for n in names]
        return UncertaintyState(names, nn.Parameter(torch.full((len(names),), float(self.init_log_var), device=dev)),
                                torch.tensor(factors, device=dev))

    def extra_parameters(self, state: UncertaintyState) -> list[nn.Parameter]:
        return [state.log_vars]

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module, state: UncertaintyState, *, step: int,
                 epoch: int) -> dict[str, float]:
        vec = stack_losses(losses, state.names)
        precision = state.factors.to(vec.dtype) * torch.exp(-state.log_vars.to(vec.dtype))
        (precision * vec + 0.5 * state.log_vars).sum().backward()
        return dict(zip(state.names, precision.detach().tolist()))
