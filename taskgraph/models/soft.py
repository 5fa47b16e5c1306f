"""Soft parameter sharing: cross-stitch columns and multi-gate mixtures of experts.

- :class:`CrossStitch` — Misra et al., CVPR 2016, "Cross-stitch Networks for
  Multi-task Learning": one copy of the trunk (a *column*) per task, or per group
  of a grouping; after every stage but the last, a learnable matrix α mixes the
  columns' activations, ``x̃_i = Σ_j α_ij x_j``. α starts near the identity
  (``self_weight`` on the diagonal, the rest spread evenly), as in the paper.
- :class:`MMoE` — Ma et al., KDD 2018, "Modeling Task Relationships in
  Multi-task Learning with Multi-gate Mixture-of-Experts": ``n_experts`` copies
  of the trunk, and one softmax gate per task over the experts, computed from
  the (flattened) input; task t reads ``Σ_k g_t(x)_k · expert_k(x)``.

Example:
    >>> import torch
    >>> from taskgraph.tasks import Task, TaskSet
    >>> from taskgraph.models.trunks import TrunkSpec
    >>> tasks = TaskSet([Task("a"), Task("b")])
    >>> cs = CrossStitch().build(TrunkSpec(hidden=(8, 8)), tasks, (4,))
    >>> cs.alphas[0].detach()
    tensor([[0.9000, 0.1000],
            [0.1000, 0.9000]])
    >>> mmoe = MMoE(n_experts=3).build(TrunkSpec(hidden=(8,)), tasks, (4,))
    >>> mmoe(torch.randn(5, 4))["b"].shape
    torch.Size([5, 1])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from taskgraph.exceptions import ModelError
from taskgraph.models.base import infer_out_features
from taskgraph.models.stages import stage_factory, trunk_factory
from taskgraph.models.topology_base import TopologyModel, TopologySpec, TrunkLike, _heads, normalize_grouping
from taskgraph.tasks import TaskSet

__all__ = ["CrossStitch", "CrossStitchModel", "MMoE", "MMoEModel"]


@dataclass(frozen=True)
class CrossStitch(TopologySpec):
    """One trunk column per task (or per group), cross-stitch units between stages.

    Attributes:
        self_weight: initial diagonal of each α (the rest, ``(1 - self_weight)/(C - 1)``
            per off-diagonal entry, so rows sum to 1); in ``(0, 1]``.
        head_hidden: hidden width of each task's head (0: a linear head).

    Raises:
        ModelError: ``self_weight`` outside ``(0, 1]`` (at construction); a trunk with fewer
            than two stages (at build: there would be nothing to stitch).
    """

    name = "cross_stitch"
    self_weight: float = 0.9
    head_hidden: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.self_weight, (int, float)) and 0 < self.self_weight <= 1):
            raise ModelError(f"CrossStitch: 0 < 'self_weight' <= 1 must hold, got {self.self_weight!r}")
        object.__setattr__(self, "self_weight", float(self.self_weight))
        if not isinstance(self.head_hidden, int) or self.head_hidden < 0:
            raise ModelError(f"CrossStitch: 'head_hidden' must be an int >= 0, got {self.head_hidden!r}")

    def build(self, trunk: TrunkLike, tasks: TaskSet, input_shape: Sequence[int], *,
              grouping: Any = None, hierarchy: Any = None) -> CrossStitchModel:
        """Columns per group when ``grouping`` is given, else per task (``hierarchy`` is not used).

        Raises:
            ModelError: a grouping that is not a partition of ``tasks``; a trunk of one stage.
        """
        groups = normalize_grouping(grouping, tasks) if grouping is not None else tuple((n,) for n in tasks.names)
        make_stages = stage_factory(trunk, input_shape)
        if len(make_stages()) < 2:
            raise ModelError("CrossStitch: the trunk must have at least 2 stages (Linear/Conv layers) to place "
                             "a cross-stitch unit between, got 1")
        return CrossStitchModel(tasks, groups, make_stages, input_shape, self_weight=self.self_weight,
                                head_hidden=self.head_hidden)


class CrossStitchModel(TopologyModel):
    """Columns of trunk stages mixed by cross-stitch matrices after each stage but the last.

    Args:
        tasks: all tasks.
        groups: a partition of the tasks; one column per group.
        make_stages: returns a fresh copy of the trunk's stages per call.
        input_shape: per-sample input shape.
        self_weight: initial diagonal of each α.
        head_hidden: hidden width of heads (0: linear).
    """

    def __init__(self, tasks: TaskSet, groups: Sequence[Sequence[str]],
                 make_stages: Callable[[], Sequence[nn.Module]], input_shape: Sequence[int],
                 *, self_weight: float = 0.9, head_hidden: int = 0):
        super().__init__()
        self.tasks = tasks
        self.groups_names = tuple(tuple(g) for g in groups)
        c = len(self.groups_names)
        self.columns = nn.ModuleList(nn.ModuleList(make_stages()) for _ in range(c))
        n_stages = len(self._columns()[0])
        off = (1.0 - self_weight) / (c - 1) if c > 1 else 0.0
        init = torch.full((c, c), off)
        init.fill_diagonal_(self_weight if c > 1 else 1.0)
        self.alphas = nn.ParameterList(nn.Parameter(init.clone()) for _ in range(n_stages - 1))
        self.column_of = {n: i for i, g in enumerate(self.groups_names) for n in g}
        probe = nn.Sequential(*make_stages())
        self.heads = _heads(tasks.names, tasks, infer_out_features(probe, input_shape), head_hidden)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        columns = self._columns()
        xs = [x] * len(columns)
        n_stages = len(columns[0])
        for s in range(n_stages):
            xs = [col[s](h) for col, h in zip(columns, xs)]
            if s < n_stages - 1:
                stacked = torch.stack(xs)  # (C, B, ...)
                mixed = torch.tensordot(self.alphas[s], stacked, dims=([1], [0]))
                xs = list(mixed.unbind(0))
        return {n: self.heads[n](xs[self.column_of[n]]) for n in self.tasks.names}

    def _columns(self) -> Sequence[nn.ModuleList]:
        """The columns, typed (a ModuleList of one ModuleList of stages per group)."""
        return cast("Sequence[nn.ModuleList]", self.columns)

    def module_tasks(self) -> Iterator[tuple[str, nn.Module, frozenset[str]]]:
        everyone = frozenset(self.tasks.names)
        columns = self._columns()
        last = len(columns[0]) - 1
        for i, (g, col) in enumerate(zip(self.groups_names, columns)):
            for s, stage in enumerate(col):
                # a stage before the last feeds a stitch, hence every column; the last feeds its own heads only
                yield f"columns.{i}.{s}", stage, everyone if s < last else frozenset(g)
        yield "alphas", self.alphas, everyone
        for n in self.tasks.names:
            yield f"heads.{n}", self.heads[n], frozenset((n,))


@dataclass(frozen=True)
class MMoE(TopologySpec):
    """``n_experts`` trunk copies, one softmax gate per task over them.

    Attributes:
        n_experts: number of experts (>= 1).
        head_hidden: hidden width of each task's tower (0: a linear head).

    Raises:
        ModelError: ``n_experts`` < 1 or ``head_hidden`` < 0.
    """

    name = "mmoe"
    n_experts: int = 4
    head_hidden: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n_experts, int) or isinstance(self.n_experts, bool) or self.n_experts < 1:
            raise ModelError(f"MMoE: 'n_experts' must be an int >= 1, got {self.n_experts!r}")
        if not isinstance(self.head_hidden, int) or self.head_hidden < 0:
            raise ModelError(f"MMoE: 'head_hidden' must be an int >= 0, got {self.head_hidden!r}")

    def build(self, trunk: TrunkLike, tasks: TaskSet, input_shape: Sequence[int], *,
              grouping: Any = None, hierarchy: Any = None) -> MMoEModel:
        """An :class:`MMoEModel`; a ``grouping`` is validated but not used (gates are per task).

        Raises:
            ModelError: a grouping that is not a partition of ``tasks``; a trunk that does not fit.
        """
        if grouping is not None:
            normalize_grouping(grouping, tasks)
        return MMoEModel(tasks, trunk_factory(trunk, input_shape), input_shape, n_experts=self.n_experts,
                         head_hidden=self.head_hidden)


class MMoEModel(TopologyModel):
    """Experts shared by all tasks, mixed per task by a gate on the input.

    Args:
        tasks: all tasks.
        make_trunk: returns a fresh trunk (an expert) per call.
        input_shape: per-sample input shape.
        n_experts: number of experts.
        head_hidden: hidden width of towers (0: linear heads).
    """

    def __init__(self, tasks: TaskSet, make_trunk: Callable[[], nn.Module], input_shape: Sequence[int], *,
                 n_experts: int = 4, head_hidden: int = 0):
        super().__init__()
        self.tasks = tasks
        self.experts = nn.ModuleList(make_trunk() for _ in range(n_experts))
        in_flat = math.prod(input_shape)
        self.gates = nn.ModuleDict({n: nn.Linear(in_flat, n_experts) for n in tasks.names})
        self.heads = _heads(tasks.names, tasks, infer_out_features(self.experts[0], input_shape), head_hidden)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, F)
        flat = x.flatten(1)
        out = {}
        for n in self.tasks.names:
            g = torch.softmax(self.gates[n](flat), dim=-1)  # (B, E)
            out[n] = self.heads[n](torch.einsum("be,bef->bf", g, e))
        return out

    def module_tasks(self) -> Iterator[tuple[str, nn.Module, frozenset[str]]]:
        yield "experts", self.experts, frozenset(self.tasks.names)
        for n in self.tasks.names:
            yield f"gates.{n}", self.gates[n], frozenset((n,))
            yield f"heads.{n}", self.heads[n], frozenset((n,))
