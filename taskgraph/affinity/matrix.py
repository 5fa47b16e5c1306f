"""The AffinityMatrix value: per-pair affinity with its uncertainty.

``mean[i, j]`` is Ẑ_{i→j}: how much a step on task i's gradient lowers task
j's loss (positive: i helps j). Every entry carries its standard error, a
confidence interval and the number of measured steps it averages.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> samples = rng.normal(0.1, 0.01, size=(50, 2, 2))
    >>> m = AffinityMatrix.from_samples(("a", "b"), samples, estimator="exact")
    >>> m.names, m.n_samples.tolist()
    (('a', 'b'), [[50, 50], [50, 50]])
    >>> bool((m.ci_low < 0.1).all() and (m.ci_high > 0.1).all())
    True
    >>> round(m["a", "b"], 1)
    0.1
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from taskgraph.exceptions import AffinityError

__all__ = ["AffinityMatrix"]


def _readonly(a: npt.ArrayLike) -> np.ndarray:
    out: np.ndarray = np.array(a, dtype=float, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class AffinityMatrix:
    """Mean inter-task affinity with standard errors and confidence intervals.

    Attributes:
        names: task names; row i / column j refer to ``names[i]`` / ``names[j]``.
        mean: (n, n) Ẑ_{i→j}; NaN where no step was measured.
        stderr: (n, n) standard error of the mean (NaN with fewer than 2 samples).
        n_samples: (n, n) number of measured steps per entry.
        confidence: level of ``ci_low``/``ci_high`` (Student t interval).
        estimator: the estimator's name (``"exact"``, ``"first_order"``, ``"cosine"``, ...).
        schedule: how steps were chosen (e.g. ``{"every": 10}``).
        samples: optional (S, n, n) per-step values (NaN where a task was skipped).
    """

    names: tuple[str, ...]
    mean: np.ndarray
    stderr: np.ndarray
    n_samples: np.ndarray
    confidence: float = 0.95
    estimator: str = "exact"
    schedule: Mapping[str, Any] = field(default_factory=dict)
    samples: np.ndarray | None = None

    def __post_init__(self) -> None:
        names = tuple(self.names)
        n = len(names)
        if n == 0:
            raise AffinityError("AffinityMatrix: at least one task name is needed, got none")
        if len(set(names)) != n:
            raise AffinityError(f"AffinityMatrix: names must be unique, got {list(names)}")
        object.__setattr__(self, "names", names)
        for key in ("mean", "stderr", "n_samples"):
            a = np.asarray(getattr(self, key), dtype=float)
            if a.shape != (n, n):
                raise AffinityError(
                    f"AffinityMatrix: field {key!r} must have shape ({n}, {n}) to match "
                    f"{n} names, got {a.shape}"
                )
            object.__setattr__(self, key, _readonly(a))
        object.__setattr__(self, "n_samples", self.n_samples.astype(int))
        if not 0 < self.confidence < 1:
            raise AffinityError(f"AffinityMatrix: 0 < confidence < 1 must hold, got {self.confidence}")
        if self.samples is not None:
            s = np.asarray(self.samples, dtype=float)
            if s.ndim != 3 or s.shape[1:] != (n, n):
                raise AffinityError(f"AffinityMatrix: 'samples' must be (S, {n}, {n}), got {s.shape}")
            object.__setattr__(self, "samples", _readonly(s))
        object.__setattr__(self, "schedule", dict(self.schedule))

    # ---------------------------------------------------------------- building
    @classmethod
    def from_samples(cls, names: Sequence[str], samples: npt.ArrayLike, *, confidence: float = 0.95,
                     estimator: str = "exact", schedule: Mapping[str, Any] | None = None,
                     keep_samples: bool = True) -> AffinityMatrix:
        """Average per-step (S, n, n) samples (NaN = not measured at that step)."""
        s = np.asarray(samples, dtype=float)
        if s.ndim != 3:
            raise AffinityError(f"from_samples: samples must be (S, n, n), got shape {s.shape}")
        valid = np.isfinite(s)
        count = valid.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, np.nansum(np.where(valid, s, 0.0), 0) / np.maximum(count, 1), np.nan)
            dev = np.where(valid, s - mean, 0.0)
            var = np.where(count > 1, (dev**2).sum(0) / np.maximum(count - 1, 1), np.nan)
            se = np.sqrt(var / np.maximum(count, 1))
        return cls(tuple(names), mean, se, count, confidence, estimator, dict(schedule or {}),
                   s if keep_samples else None)

    # ----------------------------------------------------------------- reading
    @property
    def n(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise AffinityError(f"unknown task {name!r}; matrix tasks: {', '.join(self.names)}") from None

    def __getitem__(self, pair: tuple[str, str]) -> float:
        i, j = pair
        return float(self.mean[self.index(i), self.index(j)])

    def _half_width(self) -> np.ndarray:
        from scipy.stats import t

        dof = np.maximum(self.n_samples - 1, 1)
        q = t.ppf(0.5 + self.confidence / 2, dof)
        return np.where(self.n_samples > 1, q * self.stderr, np.nan)

    @property
    def ci_low(self) -> np.ndarray:
        low: np.ndarray = self.mean - self._half_width()
        return low

    @property
    def ci_high(self) -> np.ndarray:
        high: np.ndarray = self.mean + self._half_width()
        return high

    def permuted(self, order: Sequence[str]) -> AffinityMatrix:
        """The same matrix with tasks in ``order`` (a permutation of ``names``)."""
        if sorted(order) != sorted(self.names):
            raise AffinityError(f"permuted: order must be a permutation of {list(self.names)}, got {list(order)}")
        idx = [self.index(o) for o in order]
        ix = np.ix_(idx, idx)
        samples = None if self.samples is None else self.samples[:, idx][:, :, idx]
        return AffinityMatrix(tuple(order), self.mean[ix], self.stderr[ix], self.n_samples[ix],
                              self.confidence, self.estimator, self.schedule, samples)

    # ------------------------------------------------------------------- I/O
    def to_dict(self, *, with_samples: bool = False) -> dict[str, Any]:
        def enc(a: np.ndarray) -> list[list[float | None]]:
            return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]

        d: dict[str, Any] = {
            "names": list(self.names),
            "mean": enc(self.mean),
            "stderr": enc(self.stderr),
            "n_samples": self.n_samples.tolist(),
            "confidence": self.confidence,
            "estimator": self.estimator,
            "schedule": dict(self.schedule),
        }
        if with_samples and self.samples is not None:
            d["samples"] = [enc(s) for s in self.samples]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AffinityMatrix:
        def dec(a: Sequence[Sequence[float | None]]) -> np.ndarray:
            return np.array([[np.nan if v is None else v for v in row] for row in a], dtype=float)

        try:
            samples = d.get("samples")
            return cls(
                tuple(d["names"]), dec(d["mean"]), dec(d["stderr"]), np.asarray(d["n_samples"]),
                float(d.get("confidence", 0.95)), d.get("estimator", "exact"),
                dict(d.get("schedule", {})),
                None if samples is None else np.stack([dec(s) for s in samples]),
            )
        except KeyError as e:
            raise AffinityError(f"affinity matrix data is missing key {e.args[0]!r}") from None

    def save(self, path: str | Path, *, with_samples: bool = True) -> Path:
        """Write JSON (names kept, samples included unless ``with_samples=False``)."""
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(with_samples=with_samples)))
        return p

    @classmethod
    def load(cls, path: str | Path) -> AffinityMatrix:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise AffinityError(f"cannot read an affinity matrix from {p}: {e}") from e

    def heatmap(self, path: str | Path, **kwargs: Any) -> Path:
        """Write a PNG heatmap with confidence intervals (see :func:`taskgraph.affinity.plots.heatmap`)."""
        # Imported on use: drawing pulls in matplotlib and scipy, which ``import taskgraph`` must not.
        # No cycle: the plotting module reads a matrix by its attributes and never imports this one.
        from taskgraph.affinity.plots import heatmap

        return heatmap(self, path, **kwargs)

    def summary_rows(self, cell: Callable[[float, float], str] | None = None) -> list[list[str]]:
        """One row per source task, its name then one cell per target, ``*`` appended where the
        CI excludes 0 and ``–`` for an unmeasured pair.

        ``cell(mean, half_width)`` writes a measured cell (default: ``mean ±half-width``).
        """
        def default(m: float, h: float) -> str:
            return f"{m:+.4f}" + (f" ±{h:.4f}" if np.isfinite(h) else "")

        cell = cell or default
        lo, hi = self.ci_low, self.ci_high
        rows = []
        for i, a in enumerate(self.names):
            row = [a]
            for j in range(self.n):
                m = self.mean[i, j]
                if not np.isfinite(m):
                    row.append("–")
                    continue
                star = "*" if (lo[i, j] > 0 or hi[i, j] < 0) else ""
                row.append(cell(float(m), float((hi[i, j] - lo[i, j]) / 2)) + star)
            rows.append(row)
        return rows

    def __repr__(self) -> str:
        return f"AffinityMatrix(names={list(self.names)}, estimator={self.estimator!r}, " \
               f"samples={int(self.n_samples.max()) if self.n else 0})"
