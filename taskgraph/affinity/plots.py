"""Pictures of an affinity matrix that show its uncertainty (matplotlib, Agg backend).

:func:`heatmap`: colour = mean Z_{i→j} on a diverging scale centred at zero
(blue helps, red hurts); each cell is annotated with the mean and the
confidence interval's half-width (``+0.012 ±0.003``); cells whose interval
contains zero are hatched and their text greyed, so only the solid cells are
claims. Rows are the source task i, columns the target task j.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taskgraph.affinity.matrix import AffinityMatrix

__all__ = ["heatmap"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def heatmap(matrix: AffinityMatrix, path: str | Path, *, title: str | None = None, annotate: bool | None = None,
            dpi: int = 120) -> Path:
    """Write a PNG heatmap of ``matrix`` with confidence intervals; return the path.

    Args:
        matrix: the affinity matrix.
        path: output PNG file.
        title: figure title (default: estimator and sample count).
        annotate: write mean ± half-width in each cell (default: when n <= 16).

    Example:
        >>> import numpy as np, tempfile, os
        >>> m = AffinityMatrix.from_samples(("a", "b"), np.random.default_rng(0).normal(0.1, 0.1, (20, 2, 2)))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     os.path.getsize(heatmap(m, os.path.join(d, "h.png"))) > 0
        True
    """
    plt = _pyplot()
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    n = matrix.n
    mean = matrix.mean
    lo, hi = matrix.ci_low, matrix.ci_high
    half = (hi - lo) / 2
    finite = np.isfinite(mean)
    vmax = float(np.nanmax(np.abs(mean))) if finite.any() else 1.0
    vmax = vmax if vmax > 0 else 1.0
    annotate = n <= 16 if annotate is None else annotate
    size = max(4.0, 0.75 * n + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    try:
        im = ax.imshow(np.where(finite, mean, np.nan), cmap="RdBu", norm=TwoSlopeNorm(0.0, -vmax, vmax))
        ax.set_xticks(range(n), matrix.names, rotation=60, ha="right")
        ax.set_yticks(range(n), matrix.names)
        ax.set_xlabel("target task j (helped or hurt)")
        ax.set_ylabel("source task i (its step)")
        uncertain = ~((lo > 0) | (hi < 0))
        for i in range(n):
            for j in range(n):
                if not finite[i, j]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", edgecolor="none"))
                    continue
                if uncertain[i, j]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                           edgecolor="0.5", linewidth=0))
                if annotate:
                    txt = f"{mean[i, j]:+.3g}"
                    if np.isfinite(half[i, j]):
                        txt += f"\n±{half[i, j]:.2g}"
                    strong = abs(mean[i, j]) > 0.6 * vmax
                    color = "0.45" if uncertain[i, j] else ("white" if strong else "black")
                    ax.text(j, i, txt, ha="center", va="center", fontsize=7 if n > 8 else 8, color=color)
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cbar.set_label("Z i→j (mean)")
        count = int(matrix.n_samples.max()) if matrix.n else 0
        ax.set_title(title or f"affinity ({matrix.estimator}), {count} steps; "
                              f"hatched: {matrix.confidence:.0%} CI contains 0", fontsize=9)
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, dpi=dpi)
    finally:
        plt.close(fig)
    return out
