"""PCGrad: project away the part of each task's gradient that conflicts with another's.

Yu, Kumar, Gupta, Levine, Hausman and Finn, NeurIPS 2020, "Gradient Surgery
for Multi-Task Learning". For each task i, in a random order over the other
tasks j: if ``g_i·g_j < 0``, replace ``g_i ← g_i − (g_i·g_j / ‖g_j‖²) g_j``
(projection onto the normal plane of ``g_j``, against the *original* ``g_j``).
The shared parameters get the sum of the projected gradients; task-specific
parameters their ordinary gradients. Per-task gradients come from
:func:`taskgraph.gradients.flat_per_task_gradients` over
``model.shared_parameters()``.

Example:
    >>> import torch
    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    >>> pcgrad_project(g, torch.tensor([[1], [0]]))
    tensor([[0.5000, 0.5000],
            [0.0000, 1.0000]])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from taskgraph.exceptions import ConfigError
from taskgraph.gradients import flat_per_task_gradients
from taskgraph.weighting.base import LossWeighting, assign_flat_grad, shared_parameter_list, stack_losses

__all__ = ["PCGrad", "PCGradState", "pcgrad_project", "pcgrad_steps", "random_orders"]


def random_orders(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each task i, a random order of the other n−1 tasks: shape (n, n−1)."""
    rows = []
    for i in range(n):
        others = torch.tensor([j for j in range(n) if j != i], dtype=torch.long)
        rows.append(others[torch.randperm(n - 1, generator=generator)])
    return torch.stack(rows) if rows else torch.empty((0, 0), dtype=torch.long)


def pcgrad_steps(grads: torch.Tensor, orders: torch.Tensor
                 ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """Each projection PCGrad considers: ``(i, j, g_i before, g_i after)``.

    ``grads`` is (n, P); ``orders[i]`` lists the tasks j that task i is checked
    against, in order. "After" equals "before" when ``g_i·g_j >= 0``.
    """
    n = grads.shape[0]
    sq = (grads * grads).sum(dim=1)
    for i in range(n):
        gi = grads[i].clone()
        for j in orders[i].tolist():
            dot = torch.dot(gi, grads[j])
            if dot < 0 and sq[j] > 0:
                new = gi - (dot / sq[j]) * grads[j]
            else:
                new = gi
            yield i, j, gi, new
            gi = new


def pcgrad_project(grads: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """The projected gradients (n, P) (sum them for the update)."""
    out = grads.clone()
    for i, _, _, after in pcgrad_steps(grads, orders):
        out[i] = after
    return out


@dataclass
class PCGradState:
    """Task names and the generator of the random projection orders."""

    names: tuple[str, ...]
    generator: torch.Generator


@dataclass(frozen=True)
class PCGrad(LossWeighting):
    """PCGrad (Yu et al. 2020); every task weight is 1.

    Attributes:
        seed: seeds the random projection orders (>= 0).

    Raises:
        ConfigError: a negative seed.
    """

    name: ClassVar[str] = "pcgrad"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"PCGrad: 'seed' must be an int >= 0, got {self.seed!r}", key="seed")

    def init_state(self, task_names: Sequence[str], model: nn.Module) -> PCGradState:
        return PCGradState(tuple(task_names), torch.Generator().manual_seed(self.seed))

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module, state: PCGradState, *, step: int,
                 epoch: int) -> dict[str, float]:
        vec = stack_losses(losses, state.names)
        shared = shared_parameter_list(model, "PCGrad")
        n = len(state.names)
        if not shared or n < 2:
            vec.sum().backward()
            return dict.fromkeys(state.names, 1.0)
        grads = flat_per_task_gradients(vec, shared, retain_graph=True)
        projected = pcgrad_project(grads, random_orders(n, state.generator)).sum(dim=0)
        vec.sum().backward()  # task-specific parameters: ordinary gradients
        assign_flat_grad(shared, projected)
        return dict.fromkeys(state.names, 1.0)
