"""A hierarchy of tasks for branched sharing: an agglomerative tree cut at any level.

Average-linkage (UPGMA) agglomerative clustering (``scipy.cluster.hierarchy``)
of the symmetrised affinity W = (Z + Zᵀ)/2, with distance ``max(W) - W``: the
two clusters merged at each step are those with the highest mean affinity
between them, which mirrors the mean-based serving score. Cutting the tree
into k clusters gives a partition; the whole tree describes a branched network
(tasks split off the shared trunk where the tree branches), as in
"Branched Multi-Task Networks: Deciding What Layers To Share" (Vandenhende et
al., BMVC 2020), which clusters tasks by affinity in the same way.

Example:
    >>> import numpy as np
    >>> Z = np.array([[0, .9, -.5, -.5], [.9, 0, -.5, -.5], [-.5, -.5, 0, .8], [-.5, -.5, .8, 0]])
    >>> tree = hierarchy(Z, names=("a", "b", "c", "d"))
    >>> tree.cut(2).groups
    (('a', 'b'), ('c', 'd'))
    >>> tree.nested()
    (('a', 'b'), ('c', 'd'))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from taskgraph.affinity.plots import new_figure, save_figure
from taskgraph.exceptions import GroupingError
from taskgraph.grouping.base import SOLVERS, GroupingSolver, check_top_m
from taskgraph.grouping.objective import GroupingProblem, Objective, as_problem
from taskgraph.grouping.scalable import _State
from taskgraph.grouping.value import Grouping

if TYPE_CHECKING:
    import networkx as nx
    from matplotlib.figure import Figure

__all__ = ["HierarchySolver", "TaskHierarchy", "hierarchy"]

_METHODS = ("average", "complete", "single", "weighted")


def _linkage(Z: np.ndarray, method: str) -> np.ndarray:
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    W = (Z + Z.T) / 2
    n = len(W)
    off = ~np.eye(n, dtype=bool)
    D = W[off].max() - W
    np.fill_diagonal(D, 0.0)
    tree: np.ndarray = linkage(squareform(D, checks=False), method=method)
    return tree


@dataclass(frozen=True, eq=False)
class TaskHierarchy:
    """An agglomerative tree of tasks (scipy linkage) that cuts into partitions.

    Attributes:
        names: the tasks (leaf i is ``names[i]``).
        linkage: scipy's (n-1, 4) linkage matrix (merged ids, distance, size).
        method: the linkage method.
        problem: the partition problem cuts are scored under (singletons allowed).
    """

    names: tuple[str, ...]
    linkage: np.ndarray
    method: str
    problem: GroupingProblem

    @property
    def n(self) -> int:
        return len(self.names)

    def labels(self, k: int) -> np.ndarray:
        """Cluster index (0-based) of each task when the tree is cut into ``k`` clusters."""
        from scipy.cluster.hierarchy import fcluster

        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= self.n:
            raise GroupingError(f"1 <= k <= n must hold to cut the tree, got k={k!r} with n={self.n}")
        if self.n == 1:
            return np.zeros(1, int)
        lab = fcluster(self.linkage, int(k), criterion="maxclust") - 1
        _, lab = np.unique(lab, return_inverse=True)
        return lab

    def cut(self, k: int) -> Grouping:
        """The partition into ``k`` clusters (fewer only when distances tie), scored as a partition.

        Raises:
            GroupingError: k < 1 or k > n.
        """
        lab = self.labels(k)
        groups = [tuple(np.nonzero(lab == c)[0].tolist()) for c in range(lab.max() + 1)]
        return Grouping.from_indices(as_problem(self.problem, k=max(k, len(groups))), groups,
                                     solver="hierarchy")

    def levels(self) -> list[Grouping]:
        """The cut at every k from 1 to n."""
        return [self.cut(k) for k in range(1, self.n + 1)]

    def heights(self) -> np.ndarray:
        """Merge distances, in merge order (low: tasks that agree merge first)."""
        return self.linkage[:, 2].copy()

    def nested(self) -> str | tuple[Any, ...]:
        """The tree as nested pairs of names, e.g. ``(('a', 'b'), ('c', 'd'))``; a leaf is its name."""
        if self.n == 1:
            return self.names[0]
        nodes: list[str | tuple[Any, ...]] = list(self.names)
        for a, b, _, _ in self.linkage:
            nodes.append((nodes[int(a)], nodes[int(b)]))
        return nodes[-1]

    def as_networkx(self) -> nx.DiGraph:
        """A rooted ``networkx.DiGraph``: leaves are tasks; inner nodes carry ``members`` and ``height``."""
        import networkx as nx

        g = nx.DiGraph()
        for i, name in enumerate(self.names):
            g.add_node(i, name=name, members=(name,), height=0.0)
        for step, (a, b, h, _) in enumerate(self.linkage):
            node = self.n + step
            members = g.nodes[int(a)]["members"] + g.nodes[int(b)]["members"]
            g.add_node(node, name=f"m{step}", members=members, height=float(h))
            g.add_edge(node, int(a))
            g.add_edge(node, int(b))
        return g

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "method": self.method, "linkage": self.linkage.tolist()}

    def plot(self, path: str | Path | None = None, *, title: str | None = None) -> Figure:
        """A dendrogram (matplotlib Agg); writes a PNG when ``path`` is given. Returns the Figure."""
        from scipy.cluster.hierarchy import dendrogram

        fig, ax = new_figure(figsize=(max(4.0, 0.45 * self.n + 2), 3.6))
        if self.n > 1:
            dendrogram(self.linkage, labels=list(self.names), ax=ax, color_threshold=None)
        ax.set_ylabel("max(W) - W (average linkage)")
        ax.set_title(title or "task hierarchy")
        return save_figure(fig, path)


def hierarchy(matrix: Any, *, names: Sequence[str] | None = None, method: str = "average",
              singleton_value: float = 0.0) -> TaskHierarchy:
    """The agglomerative tree of the tasks of an affinity matrix.

    Args:
        matrix: an :class:`~taskgraph.affinity.AffinityMatrix`, a problem, or an (n, n) array.
        names: task names for a plain array.
        method: scipy linkage method: ``"average"`` (default), ``"complete"``, ``"single"``, ``"weighted"``.
        singleton_value: the score of a lone task when cuts are scored.

    Returns:
        A :class:`TaskHierarchy`; ``.cut(k)`` gives the k-group partition.

    Raises:
        GroupingError: bad matrix or names, unknown method.
    """
    if method not in _METHODS:
        raise GroupingError(f"hierarchy: 'method' must be one of {', '.join(_METHODS)}, got {method!r}")
    problem = as_problem(matrix, names=names,
                         objective=Objective(variant="partition", singletons="allow",
                                             singleton_value=singleton_value))
    link = _linkage(problem.Z, method) if problem.n > 1 else np.zeros((0, 4))
    link.setflags(write=False)
    return TaskHierarchy(problem.names, link, method, problem)


@SOLVERS.decorator("hierarchy")
class HierarchySolver(GroupingSolver):
    """Cuts of the agglomerative tree at every k' <= k, each made to fit the problem, best first.

    Each cut's clusters become served sets (with best helpers in the overlap
    variant); cuts that break the budget or the singleton policy are repaired by
    merging clusters. Fast and transparent, not optimal.

    Args:
        method: scipy linkage method.
    """

    name = "hierarchy"

    def __init__(self, method: str = "average"):
        if method not in _METHODS:
            raise GroupingError(f"HierarchySolver: 'method' must be one of {', '.join(_METHODS)}, got {method!r}")
        self.method = method

    def solve(self, problem: GroupingProblem, *, top_m: int = 1) -> list[Grouping]:
        check_top_m(top_m)
        tree = hierarchy(problem.Z, names=problem.names, method=self.method)
        found: dict[frozenset[frozenset[int]], tuple[float, list[tuple[int, ...]]]] = {}
        for k in range(1, problem.k + 1):
            st = _State(problem, tree.labels(k))
            st.repair()
            if not st.feasible():
                continue
            groups = st.groups()
            key = frozenset(frozenset(g) for g in groups)
            found.setdefault(key, (problem.value(groups), groups))
        if not found:
            raise GroupingError("the hierarchy solver found no feasible cut (check k, budget and singletons)")
        bound = problem.upper_bound()
        ranked = sorted(found.values(), key=lambda vg: -vg[0])[:top_m]
        return [Grouping.from_indices(problem, g, solver=self.name, bound=bound) for _, g in ranked]
