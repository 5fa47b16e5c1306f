"""Pictures of an affinity matrix that show its structure and its uncertainty; the figure helpers.

:func:`heatmap`: colour = mean Z_{i→j} on a diverging scale centred at zero
(green helps, pink hurts, white none), tasks ordered so that groups sit in
blocks (by the groups given, else by an average-linkage tree of the
symmetrised affinity), a frame around each given group; each cell annotated
with the mean and its confidence interval's half-width (``+0.012 ±0.003``);
cells whose interval contains zero are hatched and their text greyed, so only
the solid cells are claims. The diagonal (a task's step on its own loss) is
grey and left out of the colour scale, which it would otherwise set alone.
Rows are the source task i, columns the target task j.

Figures are :class:`matplotlib.figure.Figure` objects printed by an explicit
Agg canvas (:func:`new_figure`, :func:`save_figure`): no pyplot and no
``matplotlib.use``, so the caller's backend is never touched, and any process
(headless included) can draw. This module reads a matrix through its
attributes only (``names``, ``mean``, ``ci_low``, ...): it does not import
:mod:`taskgraph.affinity.matrix`, whose ``heatmap`` method imports it.

Example:
    >>> import numpy as np, tempfile, os
    >>> from taskgraph.affinity import AffinityMatrix
    >>> m = AffinityMatrix.from_samples(("a", "b"), np.random.default_rng(0).normal(0.1, 0.1, (20, 2, 2)))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     os.path.getsize(heatmap(m, os.path.join(d, "h.png"))) > 0
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from taskgraph.exceptions import AffinityError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from taskgraph.affinity.matrix import AffinityMatrix

__all__ = ["PALETTE", "cluster_order", "heatmap", "linkage_groups", "new_figure", "save_figure", "symmetrised"]

#: group colours, shared by the pictures of every layer
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def new_figure(figsize: tuple[float, float] = (6.0, 5.0)) -> tuple[Figure, Axes]:
    """A (Figure, Axes) pair with its own Agg canvas, independent of pyplot and of the current backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_figure(fig: Figure, path: str | Path | None, dpi: int = 120) -> Figure:
    """Write ``fig`` as PNG to ``path`` (when given, creating its folder) and return it."""
    if path is not None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=dpi, bbox_inches="tight", format="png")
    return fig


def symmetrised(matrix: AffinityMatrix) -> np.ndarray:
    """S = (Z + Zᵀ)/2 with a zero diagonal; a missing direction uses the other, both missing 0."""
    z = np.array(matrix.mean, dtype=float)
    zt = z.T
    s = np.where(np.isfinite(z) & np.isfinite(zt), (z + zt) / 2, np.where(np.isfinite(z), z, zt))
    s = np.nan_to_num(s, nan=0.0)
    np.fill_diagonal(s, 0.0)
    return s


def _tree(matrix: AffinityMatrix) -> np.ndarray | None:
    """Average-linkage tree on the distance max(S) − S, leaves optimally ordered (None below 3 tasks)."""
    from scipy.cluster.hierarchy import linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    if matrix.n < 3:
        return None
    s = symmetrised(matrix)
    d = s.max() - s
    np.fill_diagonal(d, 0.0)
    y = squareform(d, checks=False)
    tree: np.ndarray = optimal_leaf_ordering(linkage(y, method="average"), y)
    return tree


def cluster_order(matrix: AffinityMatrix) -> tuple[str, ...]:
    """Task names in the leaf order of the average-linkage tree: similar tasks side by side."""
    from scipy.cluster.hierarchy import leaves_list

    tree = _tree(matrix)
    if tree is None:
        return tuple(matrix.names)
    return tuple(matrix.names[i] for i in leaves_list(tree))


def linkage_groups(matrix: AffinityMatrix) -> tuple[tuple[str, ...], ...]:
    """Groups for a picture: the average-linkage tree cut at its largest jump in merge distance.

    A layout aid (cheap, no solver), not a grouping to train: :func:`taskgraph.grouping.group_tasks`
    chooses those. With fewer than three tasks every task is its own group.
    """
    from scipy.cluster.hierarchy import fcluster

    tree = _tree(matrix)
    if tree is None:
        return tuple((name,) for name in matrix.names)
    heights = np.concatenate([[0.0], tree[:, 2]])
    gaps = np.diff(heights)
    k = matrix.n - int(np.argmax(gaps))  # clusters left just before the largest jump
    labels = fcluster(tree, k, criterion="maxclust")
    order = cluster_order(matrix)
    groups: dict[int, list[str]] = {}
    for name in order:
        groups.setdefault(int(labels[matrix.names.index(name)]), []).append(name)
    return tuple(tuple(g) for g in groups.values())


def _ordered(matrix: AffinityMatrix, order: str | Sequence[str],
             groups: Any) -> tuple[list[str], list[tuple[int, int]]]:
    """The task order to draw and the (start, stop) span of each given group in it."""
    names = list(matrix.names)
    if isinstance(order, str):
        if order not in ("cluster", "given"):
            raise AffinityError(f"heatmap: order must be 'cluster', 'given' or a list of the task names, got {order!r}")
        base = list(cluster_order(matrix)) if order == "cluster" else names
    else:
        base = list(order)
        if sorted(base) != sorted(names):
            raise AffinityError(f"heatmap: order must list every task once, {sorted(names)}; got {base}")
    if groups is None:
        return base, []
    groups = [tuple(g) for g in getattr(groups, "groups", groups)]
    unknown = sorted({t for g in groups for t in g} - set(names))
    if unknown:
        raise AffinityError(f"heatmap: groups must name tasks of the matrix, {sorted(names)}; unknown {unknown}")
    rank = {t: i for i, t in enumerate(base)}
    out: list[str] = []
    spans = []
    for g in groups:
        members = sorted((t for t in g if t not in out), key=rank.__getitem__)
        if members:
            spans.append((len(out), len(out) + len(members)))
            out += members
    out += [t for t in base if t not in out]
    return out, spans


def heatmap(matrix: AffinityMatrix, path: str | Path, *, title: str | None = None, annotate: bool | None = None,
            dpi: int = 120, order: str | Sequence[str] = "cluster",
            groups: Sequence[Sequence[str]] | None = None) -> Path:
    """Write a PNG heatmap of ``matrix`` with confidence intervals; return the path.

    Args:
        matrix: the affinity matrix.
        path: output PNG file.
        title: figure title (default: estimator, sample count and how to read it).
        annotate: write mean ± half-width in each cell (default: when n <= 16).
        dpi: resolution.
        order: ``"cluster"`` (default: the leaf order of an average-linkage tree of the
            symmetrised affinity, so clusters show as blocks), ``"given"`` (the matrix's
            order) or a list of every task name.
        groups: groups to draw (a :class:`~taskgraph.grouping.Grouping` or lists of names):
            their tasks come first, group by group, each framed.

    Raises:
        AffinityError: an order that is not a permutation of the tasks, groups naming unknown tasks.
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    names, spans = _ordered(matrix, order, groups)
    idx = [matrix.names.index(t) for t in names]
    ix = np.ix_(idx, idx)
    n = len(names)
    mean = np.asarray(matrix.mean, float)[ix]
    lo, hi = np.asarray(matrix.ci_low, float)[ix], np.asarray(matrix.ci_high, float)[ix]
    half = (hi - lo) / 2
    finite = np.isfinite(mean)
    diag = np.eye(n, dtype=bool)
    off = finite & ~diag
    vmax = float(np.abs(mean[off]).max()) if off.any() else 1.0
    vmax = vmax if vmax > 0 else 1.0
    annotate = n <= 16 if annotate is None else annotate
    size = min(max(4.0, 0.75 * n + 2.0), 16.0) if annotate else min(max(4.0, 0.2 * n + 3.0), 16.0)
    fig, ax = new_figure((size + 1.2, size))
    im = ax.imshow(np.where(off, mean, np.nan), cmap="PiYG", norm=TwoSlopeNorm(0.0, -vmax, vmax),
                   interpolation="nearest")
    labels_fs = 8 if n <= 30 else max(3, int(240 / n))
    ax.set_xticks(range(n), names, rotation=60 if n <= 30 else 90, ha="right" if n <= 30 else "center",
                  fontsize=labels_fs)
    ax.set_yticks(range(n), names, fontsize=labels_fs)
    ax.set_xlabel("target task j (helped or hurt)")
    ax.set_ylabel("source task i (its step)")
    uncertain = ~((lo > 0) | (hi < 0))
    for i in range(n):
        for j in range(n):
            if diag[i, j] or not finite[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", edgecolor="none"))
            elif uncertain[i, j] and n <= 60:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.55",
                                       linewidth=0))
            if annotate and finite[i, j]:
                txt = f"{mean[i, j]:+.2g}"
                if np.isfinite(half[i, j]):
                    txt += f"\n±{half[i, j]:.1g}"
                strong = abs(mean[i, j]) > 0.6 * vmax and not diag[i, j]
                color = "0.4" if diag[i, j] or uncertain[i, j] else ("white" if strong else "black")
                ax.text(j, i, txt, ha="center", va="center", fontsize=7 if n > 8 else 8, color=color,
                        fontstyle="italic" if diag[i, j] else "normal")
    for a, b in spans:
        ax.add_patch(Rectangle((a - 0.5, a - 0.5), b - a, b - a, fill=False, edgecolor="black",
                               linewidth=2.0 if n <= 30 else 1.0))
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("Z i→j (mean): green helps, pink hurts")
    count = int(np.asarray(matrix.n_samples).max()) if matrix.n else 0
    how = "grouped" if spans else ("clustered order" if order == "cluster" else "")
    if matrix.estimator == "pairwise":  # taskgraph.pipeline.pairwise_transfer: one network per pair, no interval
        default = (f"pairwise transfer (validation loss saved, one network per pair), {how}; hatched: no interval "
                   f"(one seed); diagonal (grey) off the scale")
    else:
        default = (f"affinity ({matrix.estimator}), {count} steps, {how}; hatched: "
                   f"{matrix.confidence:.0%} CI contains 0; diagonal (grey) off the scale")
    ax.set_title(title or default, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    save_figure(fig, out, dpi=dpi)
    return out
