"""Pictures of groupings: groups coloured on the task graph (matplotlib, networkx layout).

Figures come from :func:`taskgraph.affinity.plots.new_figure` (a ``matplotlib.figure.Figure``
with its own Agg canvas: no pyplot, no backend switch), re-exported here with ``save_figure``.
The affinity heatmap is :func:`taskgraph.affinity.plots.heatmap`.

Example:
    >>> import numpy as np, tempfile, os
    >>> from taskgraph.grouping.objective import GroupingProblem
    >>> from taskgraph.grouping.value import Grouping
    >>> Z = np.array([[0, .9, -.5], [.8, 0, -.4], [-.5, -.3, 0]])
    >>> p = GroupingProblem.from_array(Z, ("a", "b", "c"), k=2)
    >>> g = Grouping.from_indices(p, [(0, 1), (1, 2)])
    >>> path = os.path.join(tempfile.mkdtemp(), "groups.png")
    >>> _ = plot_grouping(g, p, path)
    >>> open(path, "rb").read(4) == b"\\x89PNG"
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from taskgraph.affinity.plots import PALETTE, new_figure, save_figure
from taskgraph.grouping.objective import as_problem

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from taskgraph.grouping.value import Grouping

__all__ = ["new_figure", "plot_grouping", "save_figure"]

def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _names_and_Z(matrix: Any, names: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    if hasattr(matrix, "matrix") and not hasattr(matrix, "mean"):  # a TaskGraph holding its matrix
        matrix = matrix.matrix
    p = as_problem(matrix)
    if tuple(p.names) != tuple(names):
        idx = [p.names.index(x) for x in names]
        return tuple(names), p.Z[np.ix_(idx, idx)]
    return p.names, p.Z


def plot_grouping(grouping: Grouping, matrix: Any, path: str | Path | None = None, *, title: str | None = None,
                  seed: int = 0, max_edges: int = 150) -> Figure:
    """Draw ``grouping`` on the task graph of ``matrix``; PNG at ``path`` when given.

    Nodes are tasks, coloured by the group that serves them; each group is a
    translucent hull around its members (helpers included, so overlapping groups
    overlap on the picture); arrows j→t are the strongest affinities (green:
    j helps t, red dashed: j hurts t; width ∝ |Z|).

    Args:
        grouping: the :class:`~taskgraph.grouping.value.Grouping` to draw.
        matrix: its affinity matrix (AffinityMatrix, GroupingProblem, TaskGraph or array).
        path: where to write the PNG (None: only return the figure).
        title: the figure title (default: the groups and score).
        seed: the layout's seed.
        max_edges: draw at most this many arrows (largest |Z| first).

    Returns:
        The matplotlib Figure.
    """
    import networkx as nx
    from scipy.spatial import ConvexHull, QhullError

    names, Z = _names_and_Z(matrix, grouping.names)
    n = len(names)
    W = (Z + Z.T) / 2
    layout = nx.Graph()
    layout.add_nodes_from(range(n))
    scale = float(np.abs(W).max()) or 1.0
    for i in range(n):
        for j in range(i + 1, n):
            same = any(names[i] in g and names[j] in g for g in grouping.groups)
            layout.add_edge(i, j, weight=max(W[i, j], 0.0) / scale + (1.0 if same else 0.02))
    pos = nx.spring_layout(layout, weight="weight", seed=seed)
    xy = np.array([pos[i] for i in range(n)])
    fig, ax = new_figure((6.5, 5.5))
    theta = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    pad = 0.09
    for gi, group in enumerate(grouping.groups):
        pts = xy[[names.index(x) for x in group]]
        ring = (pts[:, None, :] + pad * np.stack([np.cos(theta), np.sin(theta)], 1)[None]).reshape(-1, 2)
        try:
            hull = ring[ConvexHull(ring).vertices]
        except QhullError:
            hull = ring
        ax.fill(hull[:, 0], hull[:, 1], color=_colour(gi), alpha=0.18, zorder=0,
                label="{" + ", ".join(group) + "}")
        ax.plot(*np.vstack([hull, hull[:1]]).T, color=_colour(gi), alpha=0.6, lw=1, zorder=0)
    edges = [(abs(Z[j, t]), j, t) for j in range(n) for t in range(n) if j != t]
    edges = sorted(edges, reverse=True)[:max_edges]
    zmax = edges[0][0] if edges and edges[0][0] > 0 else 1.0
    for mag, j, t in edges:
        if mag == 0:
            continue
        good = Z[j, t] > 0
        ax.annotate("", xy=xy[t], xytext=xy[j], zorder=1,
                    arrowprops={"arrowstyle": "-|>", "color": "#2e7d32" if good else "#c62828",
                                "alpha": 0.25 + 0.6 * mag / zmax, "lw": 0.4 + 2.2 * mag / zmax,
                                "linestyle": "-" if good else "--", "shrinkA": 9, "shrinkB": 9,
                                "connectionstyle": "arc3,rad=0.08"})
    serving = grouping.labels()
    ax.scatter(xy[:, 0], xy[:, 1], s=380, c=[_colour(s) for s in serving], edgecolors="black", zorder=2)
    for i, name in enumerate(names):
        ax.text(xy[i, 0], xy[i, 1], name, ha="center", va="center", fontsize=8, zorder=3, color="white",
                fontweight="bold")
    ax.set_title(title or f"{grouping.n_groups} groups, score {grouping.score:.4g} ({grouping.variant})",
                 fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax.set_axis_off()
    ax.set_aspect("equal")
    return save_figure(fig, path)
