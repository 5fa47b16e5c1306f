"""The loss-weighting interface the training loop calls.

A weighting turns the per-task losses of one batch into gradients on the
model's parameters. The training loop never asks *which* weighting it runs: it
calls :meth:`LossWeighting.backward` and steps the optimizer.

Strategies are immutable and take their hyper-parameters in ``__init__``;
anything that changes during training (learned log-variances, loss history,
...) lives in the state object that :meth:`LossWeighting.init_state` returns and
the training loop keeps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["EqualWeighting", "LossWeighting"]


class LossWeighting(ABC):
    """Base class: combine per-task losses into parameter gradients."""

    #: name used in study files and the CLI registry
    name: ClassVar[str] = ""

    def init_state(self, task_names: Sequence[str], model: nn.Module) -> Any:
        """Per-run mutable state; ``None`` for stateless weightings."""
        return None

    def extra_parameters(self, state: Any) -> list[nn.Parameter]:
        """Learnable parameters of the weighting itself (added to the optimizer)."""
        return []

    @abstractmethod
    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        model: nn.Module,
        state: Any,
        *,
        step: int,
        epoch: int,
    ) -> Mapping[str, float]:
        """Write gradients into ``.grad`` of the parameters; return the task weights used."""

    def on_epoch_end(self, state: Any, epoch_losses: Mapping[str, float], epoch: int) -> None:
        """Hook for weightings that adapt per epoch (e.g. DWA). Default: nothing."""


class EqualWeighting(LossWeighting):
    """Sum of task losses, every weight 1 (the usual all-in-one baseline)."""

    name = "equal"

    def backward(self, losses, model, state, *, step, epoch):
        total = torch.stack(list(losses.values())).sum()
        total.backward()
        return dict.fromkeys(losses, 1.0)
