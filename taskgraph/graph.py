"""The task graph: an AffinityMatrix as a networkx directed graph.

Nodes are tasks; the edge i→j carries ``weight`` = Ẑ_{i→j} (how much a step on
task i helps task j) with its uncertainty (``ci_low``, ``ci_high``,
``stderr``, ``n_samples``) and a ``relation``:

- ``"negative"`` — the whole confidence interval is below zero: negative transfer;
- ``"positive"`` — the whole interval is above zero;
- ``"uncertain"`` — the interval contains zero (or fewer than two samples).

Self-affinities Ẑ_{i→i} are node attributes (``self_affinity``), not edges.
A *mutually helpful* pair has positive edges both ways. The symmetrised view
(S_ij = (Z_{i→j} + Z_{j→i}) / 2, zero diagonal) feeds clustering.

Example:
    >>> import numpy as np
    >>> from taskgraph.affinity import AffinityMatrix
    >>> rng = np.random.default_rng(0)
    >>> mu = np.array([[0.2, 0.1, -0.1], [0.1, 0.2, -0.1], [-0.1, -0.1, 0.2]])
    >>> m = AffinityMatrix.from_samples(("a", "b", "c"), mu + rng.normal(0, 0.01, (30, 3, 3)))
    >>> g = TaskGraph.from_affinity(m)
    >>> sorted(g.negative_edges())
    [('a', 'c'), ('b', 'c'), ('c', 'a'), ('c', 'b')]
    >>> g.mutual_pairs()
    [('a', 'b')]
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from taskgraph.affinity.matrix import AffinityMatrix
from taskgraph.affinity.plots import PALETTE, linkage_groups, new_figure, save_figure, symmetrised
from taskgraph.exceptions import AffinityError

__all__ = ["TaskGraph"]


def _num(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


@dataclass(frozen=True, eq=False)
class TaskGraph:
    """A directed task graph built from an :class:`AffinityMatrix`.

    Attributes:
        matrix: the matrix it was built from.
        graph: ``networkx.DiGraph``; edge attributes ``weight, ci_low, ci_high, stderr,
            n_samples, relation``; node attribute ``self_affinity``.
    """

    matrix: AffinityMatrix
    graph: nx.DiGraph

    @classmethod
    def from_affinity(cls, matrix: AffinityMatrix) -> TaskGraph:
        """Build the graph; entries with no measurement (NaN) give no edge.

        Raises:
            AffinityError: ``matrix`` is not an AffinityMatrix.
        """
        if not isinstance(matrix, AffinityMatrix):
            raise AffinityError(f"TaskGraph.from_affinity needs an AffinityMatrix, got {type(matrix).__name__}")
        lo, hi = matrix.ci_low, matrix.ci_high
        g = nx.DiGraph(estimator=matrix.estimator, confidence=matrix.confidence)
        for i, name in enumerate(matrix.names):
            g.add_node(name, self_affinity=_num(matrix.mean[i, i]), n_samples=int(matrix.n_samples[i, i]))
        for i, a in enumerate(matrix.names):
            for j, b in enumerate(matrix.names):
                if i == j or not np.isfinite(matrix.mean[i, j]):
                    continue
                rel = "negative" if hi[i, j] < 0 else "positive" if lo[i, j] > 0 else "uncertain"
                g.add_edge(a, b, weight=float(matrix.mean[i, j]), ci_low=_num(lo[i, j]), ci_high=_num(hi[i, j]),
                           stderr=_num(matrix.stderr[i, j]), n_samples=int(matrix.n_samples[i, j]), relation=rel)
        return cls(matrix, g)

    # ----------------------------------------------------------------- queries
    @property
    def names(self) -> tuple[str, ...]:
        return self.matrix.names

    def edges_with(self, relation: str) -> list[tuple[str, str]]:
        """Edges whose ``relation`` is ``"negative"``, ``"positive"`` or ``"uncertain"``."""
        if relation not in ("negative", "positive", "uncertain"):
            raise AffinityError(f"relation must be 'negative', 'positive' or 'uncertain', got {relation!r}")
        return [(a, b) for a, b, r in self.graph.edges(data="relation") if r == relation]

    def negative_edges(self) -> list[tuple[str, str]]:
        """i→j whose confidence interval lies entirely below zero (negative transfer)."""
        return self.edges_with("negative")

    def positive_edges(self) -> list[tuple[str, str]]:
        """i→j whose confidence interval lies entirely above zero."""
        return self.edges_with("positive")

    def mutual_pairs(self) -> list[tuple[str, str]]:
        """Unordered pairs (in matrix order) with positive edges both ways."""
        pos = set(self.positive_edges())
        idx = {n: k for k, n in enumerate(self.names)}
        pairs = {(a, b) if idx[a] < idx[b] else (b, a) for a, b in pos if (b, a) in pos}
        return sorted(pairs, key=lambda p: (idx[p[0]], idx[p[1]]))

    def symmetric(self) -> np.ndarray:
        """S = (Z + Zᵀ) / 2 with a zero diagonal; a missing direction uses the other one, both missing 0."""
        return symmetrised(self.matrix)

    def undirected(self) -> nx.Graph:
        """``networkx.Graph`` with edge ``weight`` = S_ij of :meth:`symmetric` (all pairs)."""
        s = self.symmetric()
        g = nx.Graph()
        g.add_nodes_from(self.names)
        for i, a in enumerate(self.names):
            for j in range(i + 1, len(self.names)):
                g.add_edge(a, self.names[j], weight=float(s[i, j]))
        return g

    # -------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: nodes, edges with attributes, and the matrix."""
        return {
            "nodes": [{"name": n, **d} for n, d in self.graph.nodes(data=True)],
            "edges": [{"source": a, "target": b, **d} for a, b, d in self.graph.edges(data=True)],
            "negative_edges": [list(e) for e in self.negative_edges()],
            "mutual_pairs": [list(p) for p in self.mutual_pairs()],
            "matrix": self.matrix.to_dict(),
        }

    def save_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def load_json(cls, path: str | Path) -> TaskGraph:
        """Rebuild from :meth:`save_json` output (from its matrix)."""
        p = Path(path)
        try:
            d = json.loads(p.read_text())
            return cls.from_affinity(AffinityMatrix.from_dict(d["matrix"]))
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise AffinityError(f"cannot read a task graph from {p}: {e}") from e

    def save_graphml(self, path: str | Path) -> Path:
        """GraphML (None-valued attributes are dropped: GraphML has no null)."""
        g = nx.DiGraph()
        for n, d in self.graph.nodes(data=True):
            g.add_node(n, **{k: v for k, v in d.items() if v is not None})
        for a, b, d in self.graph.edges(data=True):
            g.add_edge(a, b, **{k: v for k, v in d.items() if v is not None})
        p = Path(path)
        nx.write_graphml(g, p)
        return p

    def pair_edges(self, *, uncertain: bool = False) -> list[tuple[str, str, float, str]]:
        """Unordered pairs by the symmetrised affinity S_ij = (Z_ij + Z_ji)/2, strongest |S| first.

        Each item is ``(a, b, S_ab, relation)``, relation ``"positive"``/``"negative"`` when the
        pair's interval (normal, at the matrix's confidence, SE = √(se_ij² + se_ji²)/2)
        excludes 0, else ``"uncertain"`` (only listed with ``uncertain=True``).
        """
        from scipy.stats import norm

        s = self.symmetric()
        se = np.asarray(self.matrix.stderr, float)
        se_s = np.sqrt(se**2 + se.T**2) / 2
        q = float(norm.ppf(0.5 + self.matrix.confidence / 2))
        out = []
        for i, a in enumerate(self.names):
            for j in range(i + 1, len(self.names)):
                known = np.isfinite(se_s[i, j])
                rel = ("positive" if s[i, j] > q * se_s[i, j] else "negative" if s[i, j] < -q * se_s[i, j]
                       else "uncertain") if known else "uncertain"
                if rel != "uncertain" or uncertain:
                    out.append((a, self.names[j], float(s[i, j]), rel))
        return sorted(out, key=lambda e: -abs(e[2]))

    def draw(self, path: str | Path, *, title: str | None = None, dpi: int = 120,
             groups: Sequence[Sequence[str]] | None = None, max_edges: int | None = None,
             uncertain: bool = False) -> Path:
        """PNG drawing of the pairs that matter, laid out by group.

        Each group sits on its own circle, the groups spread around a larger one, so
        clusters show apart at a glance. A line joins a pair when its symmetrised
        affinity S_ij = (Z_ij + Z_ji)/2 is sure of its sign (see :meth:`pair_edges`):
        solid green when the two tasks help each other, dashed red when they hurt
        each other (negative transfer); width ∝ |S|; each task's two strongest such
        pairs, at most ``max_edges`` of them (strongest first), so that weak clusters
        show too.
        The direction of each effect is the heatmap's to show
        (:func:`taskgraph.affinity.plots.heatmap`).

        Args:
            path: output PNG.
            title: figure title (default: how to read it).
            dpi: resolution.
            groups: the groups to lay out (a :class:`~taskgraph.grouping.Grouping` or lists
                of names; a task in several goes with the first); default: the
                average-linkage tree of S cut at its largest jump
                (:func:`taskgraph.affinity.plots.linkage_groups`), a layout aid.
            max_edges: at most this many lines (default ``max(3, 3n/2)``).
            uncertain: also draw pairs whose interval contains 0 (thin, grey, dotted).

        Raises:
            AffinityError: groups that name unknown tasks, ``max_edges < 0``.
        """
        from matplotlib.lines import Line2D
        from matplotlib.patches import Circle

        names = self.names
        n = len(names)
        given = groups is not None
        chosen = [tuple(g) for g in getattr(groups, "groups", groups)] if groups is not None else \
            list(linkage_groups(self.matrix))
        unknown = sorted({t for g in chosen for t in g} - set(names))
        if unknown:
            raise AffinityError(f"draw: groups must name tasks of the graph, {list(names)}; unknown {unknown}")
        max_edges = max(3, (3 * n) // 2) if max_edges is None else max_edges
        if max_edges < 0:
            raise AffinityError(f"draw: max_edges >= 0 must hold, got {max_edges}")
        placed: list[list[str]] = []
        seen: set[str] = set()
        for g in chosen:
            members = [t for t in g if t not in seen]
            seen |= set(members)
            if members:
                placed.append(members)
        placed += [[t] for t in names if t not in seen]
        pos, centres, radii = _group_layout(placed)
        edges = _strongest_per_task(self.pair_edges(uncertain=uncertain), per_task=2)[:max_edges]
        smax = max((abs(e[2]) for e in edges), default=1.0) or 1.0
        fig, ax = new_figure((min(max(5.0, 0.35 * n + 3.5), 16.0),) * 2)
        for gi, (c, r) in enumerate(zip(centres, radii)):
            if len(placed[gi]) > 1:
                ax.add_patch(Circle(c, r + 0.12, facecolor=PALETTE[gi % len(PALETTE)], alpha=0.12,
                                    edgecolor=PALETTE[gi % len(PALETTE)], lw=1, zorder=0))
        style = {"positive": ("#2e7d32", "-"), "negative": ("#c62828", "--"), "uncertain": ("0.6", ":")}
        for a, b, w, rel in reversed(edges):  # the strongest on top
            color, ls = style[rel]
            (x0, y0), (x1, y1) = pos[a], pos[b]
            width = 0.6 if rel == "uncertain" else 0.8 + 4.2 * abs(w) / smax
            ax.plot([x0, x1], [y0, y1], color=color, linestyle=ls, lw=width, alpha=0.85, zorder=1,
                    solid_capstyle="round", dash_capstyle="round")
        group_of = {t: gi for gi, g in enumerate(placed) for t in g}
        xy = np.array([pos[t] for t in names])
        ax.scatter(xy[:, 0], xy[:, 1], s=520 if n <= 30 else 120, zorder=2, edgecolors="0.2",
                   c=[PALETTE[group_of[t] % len(PALETTE)] for t in names])
        for t in names:
            ax.text(pos[t][0], pos[t][1], t, ha="center", va="center", fontsize=8 if n <= 30 else 5, zorder=3,
                    color="white", fontweight="bold")
        handles = [Line2D([], [], color=style["positive"][0], lw=2.5, label="help each other (S > 0)"),
                   Line2D([], [], color=style["negative"][0], lw=2.5, ls="--", label="hurt each other (S < 0)")]
        if uncertain:
            handles.append(Line2D([], [], color="0.6", lw=1, ls=":", label="sign unsure"))
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles),
                  fontsize=7, frameon=False)
        n_sure = len(self.pair_edges())
        ax.set_title(title or (f"task graph: {len(edges)} of the {n_sure} pairs whose "
                               f"{self.matrix.confidence:.0%} CI of S = (Z_ij + Z_ji)/2 excludes 0 (each task's "
                               f"2 strongest); "
                               f"{'groups given' if given else 'groups: average-linkage cut'}"), fontsize=9)
        pad = [r + 0.3 for r in radii]
        ax.set_xlim(min(c[0] - p for c, p in zip(centres, pad)), max(c[0] + p for c, p in zip(centres, pad)))
        ax.set_ylim(min(c[1] - p for c, p in zip(centres, pad)), max(c[1] + p for c, p in zip(centres, pad)))
        ax.set_aspect("equal")
        ax.set_axis_off()
        out = Path(path)
        save_figure(fig, out, dpi=dpi)
        return out

    def __repr__(self) -> str:
        return (f"TaskGraph({len(self.names)} tasks, {len(self.positive_edges())} positive, "
                f"{len(self.negative_edges())} negative edges)")


def _strongest_per_task(pairs: list[tuple[str, str, float, str]], per_task: int) -> list[tuple[str, str, float, str]]:
    """The pairs (strongest first) that are among the ``per_task`` strongest of either of their tasks."""
    count: dict[str, int] = {}
    out: list[tuple[str, str, float, str]] = []
    for a, b, w, rel in pairs:
        if count.get(a, 0) < per_task or count.get(b, 0) < per_task:
            out.append((a, b, w, rel))
            count[a] = count.get(a, 0) + 1
            count[b] = count.get(b, 0) + 1
    return out


def _group_layout(groups: list[list[str]]
                  ) -> tuple[dict[str, tuple[float, float]], list[tuple[float, float]], list[float]]:
    """Positions: each group's tasks on a small circle, the group centres on a large one.

    Returns ``(pos, centres, radii)``: name → (x, y), and each group's centre and radius.
    The large circle is wide enough that neighbouring groups never overlap.
    """
    radii = [0.0 if len(g) == 1 else 0.22 / math.sin(math.pi / len(g)) if len(g) > 2 else 0.22 for g in groups]
    count = len(groups)
    if count == 1:
        ring = 0.0
    else:
        need = max(radii[i] + radii[(i + 1) % count] for i in range(count)) + 0.45
        ring = max(1.0, need / (2 * math.sin(math.pi / count)))
    pos: dict[str, tuple[float, float]] = {}
    centres: list[tuple[float, float]] = []
    for gi, g in enumerate(groups):
        phi = 2 * math.pi * gi / count + math.pi / 2
        c = (ring * math.cos(phi), ring * math.sin(phi))
        centres.append(c)
        for ti, t in enumerate(g):
            theta = 2 * math.pi * ti / len(g) + phi
            pos[t] = (c[0] + radii[gi] * math.cos(theta), c[1] + radii[gi] * math.sin(theta))
    return pos, centres, radii
