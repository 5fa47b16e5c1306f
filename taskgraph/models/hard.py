"""Hard parameter sharing per group: one trunk per group, each task's head on its group's trunk.

This is the setting of task grouping (Standley et al., ICML 2020, "Which Tasks
Should Be Learned Together in Multi-task Learning?"; Fifty et al., NeurIPS
2021, TAG): the grouping decides which tasks share a whole trunk. Its two
extremes are the all-in-one model (one group) and single-task models
(singleton groups).

Example:
    >>> import torch
    >>> from taskgraph.tasks import Task, TaskSet
    >>> from taskgraph.models.trunks import TrunkSpec
    >>> tasks = TaskSet([Task("a"), Task("b"), Task("c")])
    >>> spec = HardSharing()
    >>> model = spec.build(TrunkSpec(hidden=(8,)), tasks, (4,), grouping=[["a", "b"], ["c"]])
    >>> sorted(model(torch.randn(2, 4)))
    ['a', 'b', 'c']
    >>> [n for n, _ in model.shared_parameters()]
    ['groups.0.trunk.0.weight', 'groups.0.trunk.0.bias']
    >>> HardSharing.from_dict(spec.to_dict()) == spec
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from taskgraph.exceptions import ModelError
from taskgraph.models.base import MultiTaskModel
from taskgraph.models.stages import trunk_factory
from taskgraph.models.topology_base import TopologyModel, TopologySpec, TrunkLike, normalize_grouping
from taskgraph.tasks import TaskSet

__all__ = ["HardSharing", "HardSharingModel"]


@dataclass(frozen=True)
class HardSharing(TopologySpec):
    """One trunk per group of the grouping (``None``: all tasks in one group).

    Attributes:
        head_hidden: hidden width of each task's head (0: a linear head).

    Raises:
        ModelError: ``head_hidden`` negative.
    """

    name = "hard"
    head_hidden: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.head_hidden, int) or self.head_hidden < 0:
            raise ModelError(f"HardSharing: 'head_hidden' must be an int >= 0, got {self.head_hidden!r}")

    def build(self, trunk: TrunkLike, tasks: TaskSet, input_shape: Sequence[int], *,
              grouping: Any = None, hierarchy: Any = None) -> HardSharingModel:
        """A :class:`HardSharingModel` with one trunk per group (``hierarchy`` is not used).

        Raises:
            ModelError: a grouping that is not a partition of ``tasks``, or a trunk that does not fit.
        """
        groups = normalize_grouping(grouping, tasks)
        make = trunk_factory(trunk, input_shape)
        return HardSharingModel(tasks, groups, make, input_shape, head_hidden=self.head_hidden)


class HardSharingModel(TopologyModel):
    """One :class:`~taskgraph.models.base.MultiTaskModel` per group; outputs merged.

    Args:
        tasks: all tasks.
        groups: a partition of the tasks (validated by the caller).
        make_trunk: returns a fresh trunk per call.
        input_shape: per-sample input shape.
        head_hidden: hidden width of heads (0: linear).
    """

    def __init__(self, tasks: TaskSet, groups: Sequence[Sequence[str]],
                 make_trunk: Callable[[], nn.Module], input_shape: Sequence[int],
                 *, head_hidden: int = 0):
        super().__init__()
        self.tasks = tasks
        self.groups_names = tuple(tuple(g) for g in groups)
        models = []
        for g in self.groups_names:
            trunk = make_trunk()
            if not any(p.requires_grad for p in trunk.parameters()):
                raise ModelError("hard sharing: the trunk has no trainable parameters")
            models.append(MultiTaskModel(trunk, tasks.subset(g), input_shape=input_shape,
                                         head_hidden=head_hidden or None))
        self.groups = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for m in self.groups:
            out.update(m(x))
        return {n: out[n] for n in self.tasks.names}

    def module_tasks(self) -> Iterator[tuple[str, nn.Module, frozenset[str]]]:
        groups = cast("Sequence[MultiTaskModel]", self.groups)  # a ModuleList of MultiTaskModel
        for i, (g, m) in enumerate(zip(self.groups_names, groups)):
            yield f"groups.{i}.trunk", m.trunk, frozenset(g)
            for n in g:
                yield f"groups.{i}.heads.{n}", m.heads[n], frozenset((n,))
