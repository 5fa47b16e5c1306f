"""Per-task gradients on the shared parameters in one batched backward pass.

The one place that turns a vector of task losses into per-task gradients. It sits below
both its users (affinity and weighting), so neither imports the other for it.
Affinity estimators and gradient-based loss weightings (GradNorm, PCGrad, ...)
all call it, so there is a single copy of this autograd plumbing.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> losses = torch.stack([w.sum(), (w ** 2).sum()])
    >>> (g,) = per_task_gradients(losses, [w])
    >>> g.tolist()
    [[1.0, 1.0], [2.0, 4.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["flat_per_task_gradients", "per_task_gradients"]


def per_task_gradients(losses: torch.Tensor, params: Sequence[torch.Tensor], *,
                       retain_graph: bool = False, create_graph: bool = False) -> tuple[torch.Tensor, ...]:
    """Gradients of each of ``losses`` (shape (n,)) w.r.t. ``params``.

    Returns one tensor per parameter, of shape ``(n, *param.shape)``; row i is
    ∂losses[i]/∂param. Uses one vmapped backward (``is_grads_batched``).
    Parameters a loss does not reach get zeros.
    """
    n = losses.shape[0]
    eye = torch.eye(n, dtype=losses.dtype, device=losses.device)
    grads = torch.autograd.grad(losses, list(params), grad_outputs=eye, is_grads_batched=True,
                                retain_graph=retain_graph, create_graph=create_graph,
                                allow_unused=True)
    return tuple(torch.zeros((n, *p.shape), dtype=p.dtype, device=p.device) if g is None else g
                 for g, p in zip(grads, params))


def flat_per_task_gradients(losses: torch.Tensor, params: Sequence[torch.Tensor], *,
                            retain_graph: bool = False, create_graph: bool = False) -> torch.Tensor:
    """:func:`per_task_gradients` concatenated into one (n, P) matrix."""
    gs = per_task_gradients(losses, params, retain_graph=retain_graph, create_graph=create_graph)
    return torch.cat([g.reshape(g.shape[0], -1) for g in gs], dim=1)
