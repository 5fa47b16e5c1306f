"""Fixed per-task weights: the linear scalarisation a hyper-parameter search tunes.

``L = Σ_t w_t · L_t`` with constant ``w_t ≥ 0``. Simple scalarisation, tuned
well, is a strong baseline for multi-task optimisation (Xin et al., NeurIPS
2022, "Do Current Multi-Task Optimization Methods in Deep Learning Even Help?";
Kurin et al., NeurIPS 2022, "In Defense of the Unitary Scalarization").

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor(1.0))
    >>> fw = FixedWeighting({"a": 2.0, "b": 0.5})
    >>> state = fw.init_state(["a", "b"], None)
    >>> fw.backward({"a": 3 * w, "b": 4 * w}, None, state, step=0, epoch=0)
    {'a': 2.0, 'b': 0.5}
    >>> float(w.grad)  # 2*3 + 0.5*4
    8.0
    >>> from taskgraph.exceptions import ConfigError
    >>> try:
    ...     FixedWeighting([1.0, -1.0])
    ... except ConfigError as e:
    ...     print(e)
    FixedWeighting: every weight must be finite and >= 0, got -1.0 at index 1 [key 'weights']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from taskgraph.exceptions import ConfigError
from taskgraph.weighting.base import LossWeighting, stack_losses

__all__ = ["FixedWeighting"]


@dataclass(frozen=True)
class FixedWeighting(LossWeighting):
    """Constant task weights.

    Attributes:
        weights: one weight per task, in the task set's order, or ``{task: weight}``
            covering every task; finite, >= 0, not all zero.

    Raises:
        ConfigError: a negative or non-finite weight, all zero (at construction); a length or
            set of names that does not match the tasks (at :meth:`init_state`).
    """

    name: ClassVar[str] = "fixed"
    weights: tuple[float, ...] | Mapping[str, float] = ()

    def __post_init__(self) -> None:
        w = self.weights
        items: list[tuple[str | int, Any]]  # checked below
        if isinstance(w, Mapping):
            items = [(str(k), v) for k, v in w.items()]
        elif isinstance(w, Sequence) and not isinstance(w, str):
            items = list(enumerate(w))
        else:
            raise ConfigError(f"FixedWeighting: 'weights' must be a list of numbers or a {{task: weight}} "
                              f"mapping, got {w!r}", key="weights")
        if not items:
            raise ConfigError("FixedWeighting: 'weights' must hold one weight per task, got none", key="weights")
        for k, v in items:
            where = f"task {k!r}" if isinstance(k, str) else f"index {k}"
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"FixedWeighting: every weight must be finite and >= 0, got {v!r} at {where}",
                                  key="weights")
        if all(v == 0 for _, v in items):
            raise ConfigError("FixedWeighting: at least one weight must be > 0, got all zero", key="weights")
        frozen = {k: float(v) for k, v in items} if isinstance(w, Mapping) else tuple(float(v) for _, v in items)
        object.__setattr__(self, "weights", frozen)

    def resolve(self, task_names: Sequence[str]) -> dict[str, float]:
        """``{task: weight}`` for these tasks.

        Raises:
            ConfigError: wrong length, or names that are not exactly ``task_names``.
        """
        names = list(task_names)
        if isinstance(self.weights, Mapping):
            unknown = sorted(set(self.weights) - set(names))
            missing = [n for n in names if n not in self.weights]
            if unknown or missing:
                raise ConfigError(f"FixedWeighting: 'weights' must name every task exactly ({names}); unknown "
                                  f"{unknown}, missing {missing}", key="weights")
            return {n: self.weights[n] for n in names}
        if len(self.weights) != len(names):
            raise ConfigError(f"FixedWeighting: 'weights' must hold one weight per task ({len(names)}: {names}), "
                              f"got {len(self.weights)}", key="weights")
        return dict(zip(names, self.weights))

    def init_state(self, task_names: Sequence[str], model: nn.Module) -> dict[str, float]:
        return self.resolve(task_names)

    def backward(self, losses: Mapping[str, torch.Tensor], model: nn.Module, state: dict[str, float], *, step: int,
                 epoch: int) -> dict[str, float]:
        names = list(state)
        vec = stack_losses(losses, names)
        w = torch.tensor([state[n] for n in names], dtype=vec.dtype, device=vec.device)
        (w * vec).sum().backward()
        return dict(state)
