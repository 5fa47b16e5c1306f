"""Pictures: groups coloured on the task graph, an affinity heatmap (matplotlib Agg, networkx layout).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global
backend switch), so they render with Agg in any process, headless included.

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

from pathlib import Path

import numpy as np

__all__ = ["new_figure", "plot_grouping", "plot_matrix", "save_figure"]

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")


def new_figure(figsize=(6.0, 5.0)):
    """A (Figure, Axes) pair drawn by Agg, independent of pyplot's state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def save_figure(fig, path: str | Path | None, dpi: int = 120):
    """Write ``fig`` as PNG to ``path`` (when given) and return it."""
    if path is not None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=dpi, bbox_inches="tight", format="png")
    return fig


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _names_and_Z(matrix, names):
    from taskgraph.grouping.objective import as_problem

    if hasattr(matrix, "matrix") and not hasattr(matrix, "mean"):  # a TaskGraph holding its matrix
        matrix = matrix.matrix
    p = as_problem(matrix)
    if tuple(p.names) != tuple(names):
        idx = [p.names.index(x) for x in names]
        return names, p.Z[np.ix_(idx, idx)]
    return p.names, p.Z


def plot_grouping(grouping, matrix, path: str | Path | None = None, *, title: str | None = None,
                  seed: int = 0, max_edges: int = 150):
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


def plot_matrix(matrix, path: str | Path | None = None, *, title: str = "affinity Z[i→j]", order=None):
    """A heatmap of the affinity matrix (rows: source i, columns: target j); PNG at ``path``.

    Args:
        matrix: an AffinityMatrix, GroupingProblem or array.
        order: task names to order rows/columns by (e.g. grouped tasks side by side).

    Returns:
        The matplotlib Figure.
    """
    from taskgraph.grouping.objective import as_problem

    p = as_problem(matrix)
    names = list(order) if order is not None else list(p.names)
    idx = [p.names.index(x) for x in names]
    Z = np.array(p.Z[np.ix_(idx, idx)])
    np.fill_diagonal(Z, np.nan)
    lim = float(np.nanmax(np.abs(Z))) if len(names) > 1 else 1.0
    fig, ax = new_figure((0.35 * len(names) + 2.5, 0.35 * len(names) + 2.0))
    im = ax.imshow(Z, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("target task j")
    ax.set_ylabel("source task i")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return save_figure(fig, path)
