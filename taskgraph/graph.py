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
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

from taskgraph.affinity.matrix import AffinityMatrix
from taskgraph.exceptions import AffinityError

__all__ = ["TaskGraph"]


def _num(v) -> float | None:
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
        return sorted({tuple(sorted((a, b), key=idx.__getitem__)) for a, b in pos if (b, a) in pos},
                      key=lambda p: (idx[p[0]], idx[p[1]]))

    def symmetric(self) -> np.ndarray:
        """S = (Z + Zᵀ) / 2 with a zero diagonal; a missing direction uses the other one, both missing 0."""
        z = np.array(self.matrix.mean, dtype=float)
        zt = z.T
        s = np.where(np.isfinite(z) & np.isfinite(zt), (z + zt) / 2, np.where(np.isfinite(z), z, zt))
        s = np.nan_to_num(s, nan=0.0)
        np.fill_diagonal(s, 0.0)
        return s

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
    def to_dict(self) -> dict:
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

    def draw(self, path: str | Path, *, title: str | None = None, dpi: int = 120) -> Path:
        """PNG drawing: green edges help, red edges hurt (negative transfer), dashed = uncertain.

        Edge width grows with |Z|; node layout is a spring layout on the symmetrised
        positive affinities (seeded), so helpful tasks sit together.
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        s = self.symmetric()
        layout_g = nx.Graph()
        layout_g.add_nodes_from(self.names)
        for i, a in enumerate(self.names):
            for j in range(i + 1, len(self.names)):
                if s[i, j] > 0:
                    layout_g.add_edge(a, self.names[j], weight=float(s[i, j]))
        pos = nx.spring_layout(layout_g, seed=0, weight="weight") if len(self.names) > 1 else {self.names[0]: (0, 0)}
        weights = [abs(w) for _, _, w in self.graph.edges(data="weight")]
        wmax = max(weights) if weights and max(weights) > 0 else 1.0
        fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(self.names) + 3),) * 2)
        try:
            nx.draw_networkx_nodes(self.graph, pos, ax=ax, node_color="#dddddd", node_size=600, edgecolors="0.3")
            nx.draw_networkx_labels(self.graph, pos, ax=ax, font_size=8)
            colors = {"positive": "tab:green", "negative": "tab:red", "uncertain": "0.6"}
            for rel in ("uncertain", "positive", "negative"):
                edges = [(a, b) for a, b, r in self.graph.edges(data="relation") if r == rel]
                if not edges:
                    continue
                widths = [0.5 + 3.5 * abs(self.graph.edges[e]["weight"]) / wmax for e in edges]
                nx.draw_networkx_edges(self.graph, pos, edgelist=edges, ax=ax, width=widths, edge_color=colors[rel],
                                       style="dashed" if rel == "uncertain" else "solid", arrows=True,
                                       arrowsize=10, connectionstyle="arc3,rad=0.12", node_size=600)
            ax.set_title(title or "task graph: green helps, red hurts (CI excludes 0), grey dashed uncertain",
                         fontsize=9)
            ax.axis("off")
            fig.tight_layout()
            out = Path(path)
            fig.savefig(out, dpi=dpi)
        finally:
            plt.close(fig)
        return out

    def __repr__(self) -> str:
        return (f"TaskGraph({len(self.names)} tasks, {len(self.positive_edges())} positive, "
                f"{len(self.negative_edges())} negative edges)")
