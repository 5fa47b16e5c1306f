"""The loss-weighting interface the training loop calls.

A weighting turns the per-task losses of one batch into gradients on the
model's parameters. The training loop never asks *which* weighting it runs: it
calls :meth:`LossWeighting.backward` and steps the optimizer.

Strategies are immutable (frozen dataclasses whose fields are their typed
hyper-parameters); anything that changes during training (learned
log-variances, loss history, ...) lives in the state object that
:meth:`LossWeighting.init_state` returns and the training loop keeps.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor(2.0))
    >>> losses = {"a": w * 1.0, "b": w * 3.0}
    >>> EqualWeighting().backward(losses, None, None, step=0, epoch=0)
    {'a': 1.0, 'b': 1.0}
    >>> float(w.grad)
    4.0
    >>> EqualWeighting().to_dict()
    {'weighting': 'equal'}
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from taskgraph.exceptions import ModelError

__all__ = ["EqualWeighting", "LossWeighting", "assign_flat_grad", "shared_parameter_list", "stack_losses"]


class LossWeighting(ABC):
    """Base class: combine per-task losses into parameter gradients.

    Subclasses are frozen dataclasses (their fields are the hyper-parameters)
    that set ``name`` and implement :meth:`backward`; stateful ones also
    implement :meth:`init_state` (and :meth:`extra_parameters` for learnable
    parameters the training loop must optimise, :meth:`on_epoch_end` for
    per-epoch updates).
    """

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

    def to_dict(self) -> dict[str, Any]:
        """``{"weighting": name, hyper-parameter: value, ...}`` (JSON types); ``make_weighting(**d)`` inverts it."""
        out: dict[str, Any] = {"weighting": self.name}
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                v = getattr(self, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v
        return out


@dataclass(frozen=True)
class EqualWeighting(LossWeighting):
    """Sum of task losses, every weight 1 (the usual all-in-one baseline)."""

    name: ClassVar[str] = "equal"

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module, state: Any, *, step: int,
                 epoch: int) -> dict[str, float]:
        total = torch.stack(list(losses.values())).sum()
        total.backward()
        return dict.fromkeys(losses, 1.0)


# --- helpers shared by the weightings ------------------------------------------------------------

def stack_losses(losses: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """The losses as a vector in ``names`` order.

    Raises:
        ModelError: the losses are not exactly the tasks the state was built for.
    """
    if set(losses) != set(names):
        raise ModelError(f"a weighting was set up for tasks {list(names)} but got losses for {sorted(losses)}")
    return torch.stack([losses[n] for n in names])


def shared_parameter_list(model: nn.Module, who: str) -> list[nn.Parameter]:
    """``model.shared_parameters()`` as a list of parameters (may be empty: no task shares anything).

    Raises:
        ModelError: the model has no ``shared_parameters()`` method.
    """
    fn = getattr(model, "shared_parameters", None)
    if fn is None:
        raise ModelError(f"{who} needs per-task gradients on shared parameters: the model must expose "
                         f"shared_parameters() (as MultiTaskModel and built topologies do), got "
                         f"{type(model).__name__}")
    return [p for _, p in fn()]


def assign_flat_grad(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Write one flat vector (P,) into the ``.grad`` of ``params`` (in order), replacing what was there."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
