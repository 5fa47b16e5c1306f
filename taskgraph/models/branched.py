"""Branched sharing: trunk stages shared near the input, then split following a task hierarchy.

Vandenhende et al., BMVC 2020, "Branched Multi-Task Networks: Deciding What
Layers To Share": tasks share the first layers of the network and split into
branches deeper in, and the branching follows the task affinities — tasks that
are close in the hierarchy stay together longer.

The hierarchy is a tree over the task names. Its depth levels split at trunk
stages the spec sets (``branch_depths``, what a search tunes): the root's tasks
share stages ``[0, branch_depths[0])``; each child of the root owns stages
``[branch_depths[0], branch_depths[1])`` (a leaf, i.e. a single task, owns
everything from its parent's branch point to the last stage); and so on. Levels
with no listed depth never split before the heads, so ``branch_depths=()`` is
the all-in-one model and, on a two-level tree of groups, ``branch_depths=(k,)``
shares ``k`` stages and then gives each group a column of its own.

Hierarchy formats accepted by :func:`normalize_tree` (and ``build_model``):

- a nested tuple of task names, e.g. ``(("a", "b"), "c")`` (a name is a leaf,
  a tuple an inner node; one-child nodes are collapsed);
- ``(Z, names)``: a scipy linkage matrix ``Z`` (``numpy.ndarray``, shape
  ``(n-1, 4)``) with the ``names`` of its ``n`` leaves, converted with
  :func:`scipy.cluster.hierarchy.to_tree` (one binary split per level);
- any object with ``.linkage`` and ``.names`` attributes (taken as ``(Z, names)``);
- ``None``: a two-level tree of the grouping's groups, or a flat tree (root → tasks) without grouping.

Example:
    >>> import torch
    >>> from taskgraph.tasks import Task, TaskSet
    >>> from taskgraph.models.trunks import TrunkSpec
    >>> tasks = TaskSet([Task("a"), Task("b"), Task("c")])
    >>> spec = Branched(branch_depths=(1, 2))
    >>> model = spec.build(TrunkSpec(hidden=(8, 8, 8)), tasks, (4,), hierarchy=(("a", "b"), "c"))
    >>> model.describe()
    ['stages [0, 1): a, b, c', 'stages [1, 2): a, b', 'stages [2, 3): a', 'stages [2, 3): b', 'stages [1, 3): c']
    >>> model(torch.randn(2, 4))["c"].shape
    torch.Size([2, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from taskgraph.exceptions import ModelError
from taskgraph.models.base import infer_out_features
from taskgraph.models.stages import stage_factory
from taskgraph.models.topology_base import TopologyModel, TopologySpec, TrunkLike, _heads, normalize_grouping
from taskgraph.tasks import TaskSet

__all__ = ["Branched", "BranchedModel", "Tree", "normalize_tree", "tree_from_linkage"]

#: a task hierarchy: a task name (leaf) or a tuple of sub-trees
Tree = str | tuple[Any, ...]


def tree_from_linkage(z: np.ndarray, names: Sequence[str]) -> Tree:
    """The nested-tuple tree of a scipy linkage matrix (left child first).

    Example:
        >>> import numpy as np
        >>> z = np.array([[0.0, 1.0, 0.1, 2.0], [2.0, 3.0, 0.5, 3.0]])
        >>> tree_from_linkage(z, ["a", "b", "c"])
        ('c', ('a', 'b'))

    Raises:
        ModelError: ``z`` is not a valid linkage for ``len(names)`` leaves.
    """
    from scipy.cluster.hierarchy import is_valid_linkage, to_tree

    z = np.asarray(z, dtype=float)
    names = list(names)
    if z.ndim != 2 or z.shape != (len(names) - 1, 4) or not is_valid_linkage(z):
        raise ModelError(f"hierarchy: a linkage matrix for {len(names)} names must be a valid scipy linkage of "
                         f"shape ({len(names) - 1}, 4), got shape {tuple(z.shape)}")

    def walk(node: Any) -> Tree:  # a scipy ClusterNode
        if node.is_leaf():
            leaf: str = names[node.id]
            return leaf
        return (walk(node.get_left()), walk(node.get_right()))

    return walk(to_tree(z))


def _collapse(tree: Any, where: str) -> Tree:
    if isinstance(tree, str):
        return tree
    if not isinstance(tree, (tuple, list)) or not tree:
        raise ModelError(f"{where}: every node must be a task name or a non-empty tuple of nodes, got {tree!r}")
    kids = tuple(_collapse(t, where) for t in tree)
    return kids[0] if len(kids) == 1 else kids


def _leaves(tree: Tree) -> list[str]:
    return [tree] if isinstance(tree, str) else [n for t in tree for n in _leaves(t)]


def normalize_tree(hierarchy: Any, tasks: TaskSet, grouping: Any = None) -> Tree:
    """The hierarchy as a nested tuple whose leaves are exactly the task names, each once.

    Args:
        hierarchy: see the module docstring for the accepted formats.
        tasks: the task set.
        grouping: used only when ``hierarchy`` is None (then the tree is root → groups → tasks).

    Raises:
        ModelError: unknown task names, missing or repeated tasks, a malformed tree or linkage.
    """
    where = "hierarchy"
    if hierarchy is None:
        groups = normalize_grouping(grouping, tasks) if grouping is not None else tuple((n,) for n in tasks.names)
        tree = _collapse(tuple(groups), "grouping")
    elif hasattr(hierarchy, "linkage") and hasattr(hierarchy, "names"):
        tree = tree_from_linkage(hierarchy.linkage, hierarchy.names)
    elif isinstance(hierarchy, tuple) and len(hierarchy) == 2 and isinstance(hierarchy[0], np.ndarray):
        tree = tree_from_linkage(hierarchy[0], hierarchy[1])
    else:
        tree = _collapse(hierarchy, where)
    leaves = _leaves(tree)
    unknown = sorted({n for n in leaves if n not in tasks.names})
    if unknown:
        raise ModelError(f"{where}: every leaf must be a task of the task set; unknown task(s) {unknown}; "
                         f"known tasks: {', '.join(tasks.names)}")
    repeated = sorted({n for n in leaves if leaves.count(n) > 1})
    missing = [n for n in tasks.names if n not in leaves]
    if repeated or missing:
        raise ModelError(f"{where}: the leaves must be every task exactly once; repeated {repeated}, "
                         f"missing {missing}")
    return tree


def tree_depth(tree: Tree) -> int:
    """Number of levels of inner nodes (a single task: 0)."""
    return 0 if isinstance(tree, str) else 1 + max(tree_depth(t) for t in tree)


@dataclass(frozen=True)
class Branched(TopologySpec):
    """Layers shared up to branch points, then split along the task hierarchy.

    Attributes:
        branch_depths: for each depth level of the hierarchy, the trunk stage at
            which that level's nodes split into their children; non-decreasing,
            each in ``[0, number of trunk stages]``. Levels past the tuple's end
            split only at the heads.
        head_hidden: hidden width of each task's head (0: a linear head).

    Raises:
        ModelError: negative or decreasing depths (at construction), a depth past
            the trunk's last stage (at build).
    """

    name = "branched"
    branch_depths: tuple[int, ...] = (1,)
    head_hidden: int = 0

    def __post_init__(self) -> None:
        depths = tuple(self.branch_depths)
        if any(not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 0 for d in depths):
            raise ModelError(f"Branched: 'branch_depths' must be ints >= 0, got {depths!r}")
        if any(b < a for a, b in zip(depths, depths[1:])):
            raise ModelError(f"Branched: 'branch_depths' must be non-decreasing (a child cannot split before its "
                             f"parent), got {depths!r}")
        object.__setattr__(self, "branch_depths", tuple(int(d) for d in depths))
        if not isinstance(self.head_hidden, int) or self.head_hidden < 0:
            raise ModelError(f"Branched: 'head_hidden' must be an int >= 0, got {self.head_hidden!r}")

    def build(self, trunk: TrunkLike, tasks: TaskSet, input_shape: Sequence[int], *,
              grouping: Any = None, hierarchy: Any = None) -> BranchedModel:
        """A :class:`BranchedModel` over the trunk's stages.

        Raises:
            ModelError: a branch depth past the trunk's stages, a hierarchy or grouping that does
                not match the tasks, a trunk that cannot be split into stages.
        """
        tree = normalize_tree(hierarchy, tasks, grouping)
        make_stages = stage_factory(trunk, input_shape)
        n_stages = len(make_stages())
        deep = [d for d in self.branch_depths if d > n_stages]
        if deep:
            raise ModelError(f"Branched: each of 'branch_depths' must be <= the trunk's number of stages "
                             f"({n_stages}), got {self.branch_depths!r}", )
        return BranchedModel(tasks, tree, self.branch_depths, make_stages, input_shape, head_hidden=self.head_hidden)


class BranchedModel(TopologyModel):
    """A tree of blocks of trunk stages; each task's head reads its leaf block.

    Args:
        tasks: all tasks.
        tree: a normalized hierarchy (:func:`normalize_tree`).
        branch_depths: validated split stages per depth level.
        make_stages: returns a fresh copy of the trunk's stages per call.
        input_shape: per-sample input shape.
        head_hidden: hidden width of heads (0: linear).
    """

    def __init__(self, tasks: TaskSet, tree: Tree, branch_depths: Sequence[int],
                 make_stages: Callable[[], Sequence[nn.Module]],
                 input_shape: Sequence[int], *, head_hidden: int = 0):
        super().__init__()
        self.tasks = tasks
        self.tree = tree
        n_stages = len(make_stages())

        def split(depth: int) -> int:
            return branch_depths[depth] if depth < len(branch_depths) else n_stages

        parents: list[int] = []
        spans: list[tuple[int, int]] = []
        served: list[tuple[str, ...]] = []
        blocks: list[nn.Module] = []
        leaf_of: dict[str, int] = {}

        def add(node: Tree, parent: int, start: int, depth: int) -> None:
            end = n_stages if isinstance(node, str) else split(depth)
            end = max(end, start)
            idx = len(blocks)
            parents.append(parent)
            spans.append((start, end))
            served.append(tuple(_leaves(node)))
            blocks.append(nn.Sequential(*make_stages()[start:end]) if end > start else nn.Sequential())
            if isinstance(node, str):
                leaf_of[node] = idx
            else:
                for child in node:
                    add(child, idx, end, depth + 1)

        add(tree, -1, 0, 0)
        self.blocks = nn.ModuleList(blocks)
        self.parents = tuple(parents)
        self.spans = tuple(spans)
        self.served = tuple(served)
        self.leaf_of = {n: leaf_of[n] for n in tasks.names}
        probe = nn.Sequential(*make_stages())
        self.heads = _heads(tasks.names, tasks, infer_out_features(probe, input_shape), head_hidden)

    def describe(self) -> list[str]:
        """One line per block that runs stages: its stages and the tasks it serves (depth-first order)."""
        return [f"stages [{a}, {b}): {', '.join(s)}" for (a, b), s in zip(self.spans, self.served) if b > a]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs: list[torch.Tensor] = []
        for block, parent in zip(self.blocks, self.parents):
            outs.append(block(x if parent < 0 else outs[parent]))
        return {n: self.heads[n](outs[self.leaf_of[n]]) for n in self.tasks.names}

    def module_tasks(self) -> Iterator[tuple[str, nn.Module, frozenset[str]]]:
        for i, (block, s) in enumerate(zip(self.blocks, self.served)):
            yield f"blocks.{i}", block, frozenset(s)
        for n in self.tasks.names:
            yield f"heads.{n}", self.heads[n], frozenset((n,))
