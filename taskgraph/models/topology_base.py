"""What every sharing topology has in common: the spec base class, the model base class, groupings.

A *topology spec* (:class:`TopologySpec`) is a small frozen dataclass: its
fields are the topology's hyper-parameters (branch depths, number of experts,
...) and nothing else, so ``spec.to_dict()`` plus the trunk spec and the
grouping fully describe a trial's model. ``spec.build(...)`` turns it into a
:class:`TopologyModel`: an ``nn.Module`` whose ``forward(x)`` returns
``{task: prediction}`` and that names its *shared* parameters — the ones more
than one task's loss reaches — for affinity estimators and gradient weightings.

Groupings are plain ``Sequence[Sequence[str]]`` (or any object with a
``.groups`` attribute of that shape, such as :class:`taskgraph.grouping.Grouping`);
they must be a partition of the task set.

Example:
    >>> from taskgraph.tasks import Task, TaskSet
    >>> ts = TaskSet([Task("a"), Task("b"), Task("c")])
    >>> normalize_grouping([["a", "b"], ["c"]], ts)
    (('a', 'b'), ('c',))
    >>> try:
    ...     normalize_grouping([["a", "z"], ["b", "c"]], ts)
    ... except ModelError as e:
    ...     print(e)
    grouping: every name must be a task of the task set; unknown task(s) ['z'] in group 0; known tasks: a, b, c
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from taskgraph.exceptions import ConfigError, ModelError
from taskgraph.models.trunks import TrunkSpec
from taskgraph.tasks import TaskSet

__all__ = ["TopologyModel", "TopologySpec", "TrunkLike", "normalize_grouping"]

#: what a topology builds its trunk(s) from: a spec, or the user's module (deep-copied per copy needed)
TrunkLike = TrunkSpec | nn.Module


def normalize_grouping(grouping: Any, tasks: TaskSet, *, where: str = "grouping") -> tuple[tuple[str, ...], ...]:
    """A validated partition of ``tasks``: a tuple of non-empty groups of task names.

    Args:
        grouping: ``None`` (one group with every task), a sequence of sequences of
            task names, or an object with a ``.groups`` attribute of that shape.
        tasks: the task set the groups must partition.
        where: the name used in error messages.

    Returns:
        The groups as a tuple of tuples (order kept).

    Raises:
        ModelError: unknown task names, an empty group, a task in two groups, or
            tasks that no group holds.
    """
    if grouping is None:
        return (tasks.names,)
    groups_attr = getattr(grouping, "groups", None)
    if groups_attr is not None and not isinstance(grouping, (list, tuple)):
        grouping = groups_attr
    if isinstance(grouping, str) or not isinstance(grouping, Sequence):
        raise ModelError(f"{where}: must be a sequence of groups of task names, got {type(grouping).__name__}")
    groups: list[tuple[str, ...]] = []
    seen: dict[str, int] = {}
    for i, g in enumerate(grouping):
        if isinstance(g, str) or not isinstance(g, Sequence):
            raise ModelError(f"{where}: group {i} must be a sequence of task names, got {g!r}")
        g = tuple(g)
        if not g:
            raise ModelError(f"{where}: every group must hold at least one task; group {i} is empty")
        unknown = sorted({n for n in g if n not in tasks})
        if unknown:
            raise ModelError(f"{where}: every name must be a task of the task set; unknown task(s) "
                             f"{unknown} in group {i}; known tasks: {', '.join(tasks.names)}")
        for n in g:
            if n in seen:
                raise ModelError(f"{where}: groups must not overlap (a partition of the tasks); task {n!r} "
                                 f"is in group {seen[n]} and in group {i}")
            seen[n] = i
        groups.append(g)
    missing = [n for n in tasks.names if n not in seen]
    if missing:
        raise ModelError(f"{where}: groups must cover every task; task(s) {missing} are in no group")
    return tuple(groups)


@dataclass(frozen=True)
class TopologySpec(ABC):
    """Base class of topology specs: frozen, JSON round-trip, ``build`` gives the model.

    Subclasses are frozen dataclasses whose fields are JSON-friendly (ints,
    tuples of ints, None) and validated in ``__post_init__``; they set ``name``
    (the registry key) and implement :meth:`build`.
    """

    #: registry name, also the ``"topology"`` key of :meth:`to_dict`
    name: ClassVar[str] = ""

    @abstractmethod
    def build(self, trunk: TrunkLike, tasks: TaskSet, input_shape: Sequence[int], *,
              grouping: Any = None, hierarchy: Any = None) -> nn.Module:
        """The model this spec describes, for ``tasks`` on inputs of ``input_shape``."""

    def to_dict(self) -> dict[str, Any]:
        """``{"topology": name, field: value, ...}`` with JSON types only (tuples become lists)."""
        out: dict[str, Any] = {"topology": self.name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TopologySpec:
        """The spec of :meth:`to_dict`'s output (the ``"topology"`` key is optional here).

        Raises:
            ConfigError: the ``"topology"`` key names another topology, or unknown fields.
        """
        d = dict(d)
        name = d.pop("topology", cls.name)
        if name != cls.name:
            raise ConfigError(f"{cls.__name__}.from_dict: 'topology' must be {cls.name!r}, got {name!r}",
                              key="topology")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - set(fields))
        if extra:
            raise ConfigError(f"topology {cls.name!r} takes the fields {sorted(fields) or '(none)'}, "
                              f"got unknown field(s) {extra}", key=extra[0])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _heads(task_names: Sequence[str], tasks: TaskSet, in_features: int, head_hidden: int) -> nn.ModuleDict:
    """One head per task name: linear, or Linear-ReLU-Linear when ``head_hidden`` > 0."""
    out: dict[str, nn.Module] = {}
    for n in task_names:
        t = tasks[n]
        if head_hidden:
            out[n] = nn.Sequential(nn.Linear(in_features, head_hidden), nn.ReLU(), nn.Linear(head_hidden, t.out_dim))
        else:
            out[n] = nn.Linear(in_features, t.out_dim)
    return nn.ModuleDict(out)


class TopologyModel(nn.Module):
    """Base class of built topologies: ``forward(x) -> {task: pred}`` plus parameter ownership.

    Subclasses implement :meth:`forward` and :meth:`module_tasks`, which says
    which tasks' losses each sub-module's parameters reach; from it come
    :meth:`shared_parameters` (reached by more than one task) and
    :meth:`task_parameters`.
    """

    tasks: TaskSet

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.tasks.names

    def module_tasks(self) -> Iterator[tuple[str, nn.Module, frozenset[str]]]:
        """``(qualified prefix, module, tasks whose loss its parameters reach)``, covering every parameter once."""
        raise NotImplementedError

    def shared_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(qualified name, parameter)`` for each trainable parameter more than one task's loss reaches."""
        for prefix, module, served in self.module_tasks():
            if len(served) > 1:
                for n, p in module.named_parameters():
                    if p.requires_grad:
                        yield f"{prefix}.{n}", p

    def task_parameters(self, task: str) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters only ``task``'s loss reaches (its head, its own column or gate)."""
        for prefix, module, served in self.module_tasks():
            if served == frozenset((task,)):
                for n, p in module.named_parameters():
                    yield f"{prefix}.{n}", p

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
