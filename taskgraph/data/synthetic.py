"""Synthetic multi-task data with known structure.

Two generators:

- :func:`mmoe_pair`: the task-pair generator of Ma et al. (KDD 2018, "Modeling
  Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts"):
  two regression tasks whose label correlation is set by ``correlation``.
- :func:`planted_clusters`: tasks in planted clusters. Tasks inside a cluster
  read the same latent directions of the input with similar coefficients, so
  they help each other. Clusters are either *unrelated* (independent latent
  directions) or *opposed*: clusters come in pairs that read the same
  directions through a mirrored nonlinearity (``φ(z)`` against ``φ(-z)``), so a
  shared representation that serves one cluster is pulled the other way by its
  partner: their trunk gradients point apart (negative cosine, negative TAG
  affinity). With a trunk that has to share a narrow layer (``info["trunk_hidden"]``,
  64→8), one all-in-one model is clearly worse than one model per cluster —
  ``benchmarks/negative_transfer.py`` measures it.

Both return a :class:`~taskgraph.data.base.MultiTaskData` with fixed splits;
``planted_clusters`` also sets ``ground_truth`` to the planted grouping.

Example:
    >>> data = planted_clusters(n_tasks=6, n_clusters=3, n_samples=600, seed=0)
    >>> data.ground_truth
    (('t0', 't1'), ('t2', 't3'), ('t4', 't5'))
    >>> data.input_shape
    (32,)
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from taskgraph.data.base import MultiTaskData
from taskgraph.exceptions import DataError
from taskgraph.tasks import Task, TaskSet

__all__ = ["mmoe_pair", "planted_clusters"]


def _orthonormal(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return q[:, :k]


def mmoe_pair(
    *,
    correlation: float = 0.5,
    n_samples: int = 4000,
    dim: int = 32,
    n_sin: int = 2,
    scale: float = 1.0,
    noise: float = 0.1,
    seed: int = 0,
) -> MultiTaskData:
    """Two regression tasks with label correlation governed by ``correlation``.

    Following Ma et al. (2018): unit orthogonal u1, u2; w1 = c·u1,
    w2 = c·(p·u1 + sqrt(1-p²)·u2); y_i = w_iᵀx + Σ_k sin(α_k w_iᵀx + β_k) + ε.

    Raises:
        DataError: ``correlation`` outside [-1, 1].
    """
    if not -1.0 <= correlation <= 1.0:
        raise DataError(f"mmoe_pair: 'correlation' must be in [-1, 1], got {correlation}")
    rng = np.random.default_rng(seed)
    u = _orthonormal(rng, dim, 2)
    w1 = scale * u[:, 0]
    w2 = scale * (correlation * u[:, 0] + np.sqrt(1 - correlation**2) * u[:, 1])
    alpha = rng.normal(size=n_sin)
    beta = rng.normal(size=n_sin)
    x = rng.normal(size=(n_samples, dim))

    def label(w: np.ndarray) -> np.ndarray:
        z = x @ w
        return np.asarray(z + np.sin(np.outer(z, alpha) + beta).sum(1) + noise * rng.normal(size=n_samples))

    tasks = TaskSet([Task("t0", "regression"), Task("t1", "regression")])
    labels = {"t0": label(w1), "t1": label(w2)}
    return MultiTaskData.from_arrays(
        f"mmoe-pair-{correlation:g}", tasks, x.astype(np.float32),
        {k: v.astype(np.float32) for k, v in labels.items()}, seed=seed,
        info={"generator": "mmoe_pair", "correlation": correlation, "seed": seed},
    )


def planted_clusters(
    *,
    n_tasks: int = 9,
    n_clusters: int = 3,
    relation: Literal["opposed", "unrelated"] = "opposed",
    kind: Literal["regression", "binary"] = "regression",
    n_samples: int = 3000,
    dim: int = 32,
    rank: int = 4,
    within: float = 0.9,
    noise: float = 0.1,
    seed: int = 0,
) -> MultiTaskData:
    """Tasks in planted clusters; ``ground_truth`` holds the clusters.

    Args:
        n_tasks: number of tasks, split as evenly as possible over clusters
            (task ``t{i}`` belongs to cluster ``i * n_clusters // n_tasks``).
        n_clusters: number of planted clusters (>= 1, <= n_tasks).
        relation: ``"unrelated"``: each cluster reads its own random latent
            directions. ``"opposed"``: clusters 2m and 2m+1 read the same
            directions through φ(z) and φ(-z) (φ = softplus-like ramp),
            so their gradients on a shared trunk conflict.
        kind: ``"regression"`` or ``"binary"`` (label thresholded at the task's median).
        rank: latent directions per cluster (4: more than a narrow trunk can
            share between two opposed clusters).
        within: correlation of task coefficients inside a cluster (1 = identical tasks).
        noise: label noise standard deviation (relative to unit-variance labels).

    Raises:
        DataError: impossible sizes or parameters.
    """
    if not 1 <= n_clusters <= n_tasks:
        raise DataError(f"planted_clusters: 1 <= n_clusters <= n_tasks must hold, got "
                        f"n_clusters={n_clusters}, n_tasks={n_tasks}")
    if relation not in ("opposed", "unrelated"):
        raise DataError(f"planted_clusters: 'relation' must be 'opposed' or 'unrelated', got {relation!r}")
    if kind not in ("regression", "binary"):
        raise DataError(f"planted_clusters: 'kind' must be 'regression' or 'binary', got {kind!r}")
    if not 0.0 <= within <= 1.0:
        raise DataError(f"planted_clusters: 'within' must be in [0, 1], got {within}")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, dim))
    # latent directions per cluster; opposed pairs share them and flip the sign
    bases: list[np.ndarray] = []
    signs: list[float] = []
    for c in range(n_clusters):
        if relation == "opposed" and c % 2 == 1:
            bases.append(bases[c - 1])
            signs.append(-1.0)
        else:
            bases.append(_orthonormal(rng, dim, rank))
            signs.append(1.0)
    proto = rng.normal(size=(n_clusters, rank)) + 1.0  # cluster coefficient prototypes
    cluster_of = [i * n_clusters // n_tasks for i in range(n_tasks)]
    labels = {}
    for t, c in enumerate(cluster_of):
        coef = within * proto[c] + np.sqrt(1 - within**2) * rng.normal(size=rank)
        z = signs[c] * 2.0 * (x @ bases[c])  # (N, rank)
        feat = np.logaddexp(0.0, 3.0 * z) / 3.0  # smooth ramp: a mirrored pair conflicts
        y = feat @ coef
        y = (y - y.mean()) / (y.std() + 1e-8)
        y = y + noise * rng.normal(size=n_samples)
        labels[f"t{t}"] = y
    if kind == "binary":
        labels = {k: (v > np.median(v)).astype(np.float32) for k, v in labels.items()}
    tasks = TaskSet([Task(f"t{t}", kind) for t in range(n_tasks)])
    groups = tuple(
        tuple(f"t{t}" for t in range(n_tasks) if cluster_of[t] == c) for c in range(n_clusters)
    )
    return MultiTaskData.from_arrays(
        f"planted-{relation}-{kind}",
        tasks,
        x.astype(np.float32),
        {k: np.asarray(v, dtype=np.float32) for k, v in labels.items()},
        seed=seed,
        ground_truth=groups,
        info={"generator": "planted_clusters", "relation": relation, "kind": kind,
              "n_clusters": n_clusters, "seed": seed, "cluster_of": cluster_of,
              # a trunk narrow enough that clusters compete for it (see docs/data.md)
              "trunk_hidden": (64, 8)},
    )
