"""Sharing topologies by name, and the one function that builds a trial's model.

=================  ===========================  ===========================================
name               spec                         paper
=================  ===========================  ===========================================
``hard``           :class:`HardSharing`         Standley et al. ICML 2020; Fifty et al. NeurIPS 2021
``branched``       :class:`Branched`            Vandenhende et al. BMVC 2020
``cross_stitch``   :class:`CrossStitch`         Misra et al. CVPR 2016
``mmoe``           :class:`MMoE`                Ma et al. KDD 2018
=================  ===========================  ===========================================

A trial's model is fully described by ``(spec.to_dict(), trunk_spec.to_dict(),
grouping, hierarchy)``; :func:`build_model` turns those into an ``nn.Module``
whose ``forward(x)`` returns ``{task: prediction}``, with ``.tasks`` and
``.shared_parameters()``.

Example:
    >>> import json, torch
    >>> from taskgraph.tasks import Task, TaskSet
    >>> from taskgraph.models.trunks import TrunkSpec
    >>> tasks = TaskSet([Task("a"), Task("b"), Task("c"), Task("d")])
    >>> spec = topology_from_dict(json.loads('{"topology": "branched", "branch_depths": [1]}'))
    >>> spec
    Branched(branch_depths=(1,), head_hidden=0)
    >>> model = build_model(spec, TrunkSpec(hidden=(16, 16)), tasks, (8,), grouping=[["a", "b"], ["c", "d"]])
    >>> sorted(model(torch.randn(3, 8)))
    ['a', 'b', 'c', 'd']
    >>> from taskgraph.exceptions import UnknownNameError
    >>> try:
    ...     make_topology("star")
    ... except UnknownNameError as e:
    ...     print(e)
    unknown topology 'star'; valid: branched, cross_stitch, hard, mmoe [key 'topology']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from taskgraph.exceptions import ConfigError, ModelError
from taskgraph.models.branched import Branched, BranchedModel, normalize_tree, tree_from_linkage
from taskgraph.models.hard import HardSharing, HardSharingModel
from taskgraph.models.soft import CrossStitch, CrossStitchModel, MMoE, MMoEModel
from taskgraph.models.topology_base import TopologyModel, TopologySpec, TrunkLike, normalize_grouping
from taskgraph.registry import Registry
from taskgraph.tasks import TaskSet

__all__ = [
    "TOPOLOGIES",
    "Branched",
    "BranchedModel",
    "CrossStitch",
    "CrossStitchModel",
    "HardSharing",
    "HardSharingModel",
    "MMoE",
    "MMoEModel",
    "TopologyModel",
    "TopologySpec",
    "build_model",
    "make_topology",
    "normalize_grouping",
    "normalize_tree",
    "topology_from_dict",
    "tree_from_linkage",
]

#: topology name -> spec class
TOPOLOGIES: Registry[type[TopologySpec]] = Registry("topology")
for _cls in (HardSharing, Branched, CrossStitch, MMoE):
    TOPOLOGIES.register(_cls.name, _cls)


def make_topology(name: str, **params: Any) -> TopologySpec:
    """The spec registered as ``name``, with its hyper-parameters.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: a parameter the topology does not take.
        ModelError: a parameter value the topology rejects.
    """
    return topology_from_dict({"topology": name, **params})


def topology_from_dict(d: Mapping[str, Any], *, file: str | None = None) -> TopologySpec:
    """The spec of a ``{"topology": name, field: value, ...}`` mapping (``TopologySpec.to_dict``'s output).

    Raises:
        ConfigError: no ``"topology"`` key, or fields the topology does not take.
        UnknownNameError: an unknown topology name (lists the valid ones).
    """
    if not isinstance(d, Mapping) or "topology" not in d:
        raise ConfigError(f"a topology must be a mapping with a 'topology' key naming one of "
                          f"{', '.join(TOPOLOGIES.names())}, got {d!r}", file=file, key="topology")
    cls = TOPOLOGIES.get(d["topology"], file=file, key="topology")
    return cls.from_dict(d)


def build_model(
    spec: TopologySpec | Mapping[str, Any],
    trunk_spec: TrunkLike,
    tasks: TaskSet,
    input_shape: Sequence[int],
    grouping: Any = None,
    hierarchy: Any = None,
) -> nn.Module:
    """Build the model a topology spec describes.

    Args:
        spec: a :class:`TopologySpec`, or its ``to_dict()`` form.
        trunk_spec: a :class:`~taskgraph.models.trunks.TrunkSpec`, or the user's ``nn.Module``
            (deep-copied for every trunk copy the topology needs; branched and cross-stitch
            need an ``nn.Sequential`` to split into stages).
        tasks: the tasks; one head each.
        input_shape: per-sample input shape, e.g. ``data.input_shape``.
        grouping: a partition of the task names (``Sequence[Sequence[str]]``, or an object with
            ``.groups``); None means one group. Hard sharing: one trunk per group; cross-stitch:
            one column per group (None: per task); branched: the tree root → groups → tasks
            when no ``hierarchy`` is given; MMoE: validated only.
        hierarchy: for branched only: a nested tuple of task names, ``(linkage ndarray, names)``
            or an object with ``.linkage`` and ``.names`` (see :mod:`taskgraph.models.branched`).

    Returns:
        A :class:`TopologyModel`: ``forward(x) -> {task: pred}``, ``.tasks``, ``.shared_parameters()``.

    Raises:
        ModelError: the grouping or hierarchy names unknown tasks or misses some, a branch point
            deeper than the trunk, a trunk that cannot be split or run on ``input_shape``.
        ConfigError / UnknownNameError: a dict spec with bad fields or an unknown topology.
    """
    if isinstance(spec, Mapping):
        spec = topology_from_dict(spec)
    if not isinstance(spec, TopologySpec):
        raise ModelError(f"build_model: 'spec' must be a TopologySpec or its dict, got {type(spec).__name__}")
    if not isinstance(tasks, TaskSet):
        raise ModelError(f"build_model: 'tasks' must be a TaskSet, got {type(tasks).__name__}")
    return spec.build(trunk_spec, tasks, tuple(input_shape), grouping=grouping, hierarchy=hierarchy)
