"""Dynamic Weight Average: weight each task by how slowly its loss is falling.

Liu, Johns and Davison, CVPR 2019, "End-to-End Multi-Task Learning with
Attention". With ``r_t = L_t(e−1) / L_t(e−2)`` the ratio of a task's mean
training losses over the last two epochs and temperature ``T``,

    w_t(e) = K · exp(r_t / T) / Σ_k exp(r_k / T)

over K tasks; ``w_t = 1`` for the first two epochs. The weights are positive
and sum to K.

Example:
    >>> [round(w, 4) for w in dwa_weights([1.0, 1.0], [2.0, 1.0], temperature=2.0)]  # task 0 halved, 1 stalled
    [0.8756, 1.1244]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from taskgraph.exceptions import ConfigError
from taskgraph.weighting.base import LossWeighting, stack_losses

__all__ = ["DWAState", "DynamicWeightAverage", "dwa_weights"]


def dwa_weights(last: Sequence[float], before: Sequence[float], *, temperature: float,
                floor: float = 1e-6) -> list[float]:
    """DWA weights from the last two epochs' mean losses.

    A ratio with a zero denominator counts as 1. The softmax is computed stably;
    a weight that would underflow (ratios hundreds of temperatures apart) is
    raised to ``floor`` times the largest before renormalising to K, so every
    weight stays positive as the method intends.
    """
    ratios = [a / b if b > 0 else 1.0 for a, b in zip(last, before)]
    m = max(r / temperature for r in ratios)
    e = [max(math.exp(r / temperature - m), floor) for r in ratios]
    s = sum(e)
    return [len(e) * v / s for v in e]


@dataclass
class DWAState:
    """Task names, per-epoch mean training losses so far, and the weights of the current epoch."""

    names: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class DynamicWeightAverage(LossWeighting):
    """DWA (Liu et al. 2019).

    Attributes:
        temperature: softness of the weighting (> 0); large values give equal weights.

    Raises:
        ConfigError: ``temperature`` not finite and > 0.
    """

    name: ClassVar[str] = "dwa"
    temperature: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or not (0 < self.temperature < float("inf")):
            raise ConfigError(f"DynamicWeightAverage: 'temperature' must be finite and > 0, got "
                              f"{self.temperature!r}", key="temperature")

    def init_state(self, task_names: Sequence[str], model: nn.Module) -> DWAState:
        return DWAState(tuple(task_names), weights=[1.0] * len(task_names))

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module, state: DWAState, *, step: int,
                 epoch: int) -> dict[str, float]:
        vec = stack_losses(losses, state.names)
        w = torch.tensor(state.weights, dtype=vec.dtype, device=vec.device)
        (w * vec).sum().backward()
        return dict(zip(state.names, state.weights))

    def on_epoch_end(self, state: DWAState, epoch_losses: Mapping[str, float], epoch: int) -> None:
        state.history.append({n: float(epoch_losses[n]) for n in state.names})
        if len(state.history) >= 2:
            last, before = state.history[-1], state.history[-2]
            state.weights = dwa_weights([last[n] for n in state.names], [before[n] for n in state.names],
                                        temperature=self.temperature)
