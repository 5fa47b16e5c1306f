"""Tasks and task sets.

A :class:`Task` says what a head predicts (its *kind*), how it is trained (its
loss) and how it is judged (its metric, and whether higher is better). A
:class:`TaskSet` is an ordered, validated collection of tasks with unique names.

Labels travel as ``(x, {task: y}, {task: mask})``: the mask is ``True`` where a
sample carries a label for that task. Missing labels are normal (STAR has them)
and never count in a task's loss or metric.

Label conventions per kind:

- ``regression``: float tensor of shape ``(B,)``; the head outputs ``(B, 1)``.
- ``binary``: float tensor of 0./1. of shape ``(B,)``; the head outputs one logit.
- ``multiclass``: int64 tensor of class indices, shape ``(B,)``; the head outputs
  ``num_classes`` logits.

Example:
    >>> import torch
    >>> tasks = TaskSet([Task("price", "regression"), Task("sold", "binary")])
    >>> tasks.names
    ('price', 'sold')
    >>> pred = torch.zeros(4, 1)
    >>> y = torch.tensor([1.0, 2.0, 0.0, 0.0]); m = torch.tensor([True, True, False, False])
    >>> float(tasks["price"].loss(pred, y, m))  # mean of 1 and 4 over the two labelled samples
    2.5
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F

from taskgraph.exceptions import TaskSpecError

__all__ = ["METRICS", "Task", "TaskKind", "TaskSet"]

TaskKind = Literal["regression", "binary", "multiclass"]
_KINDS = ("regression", "binary", "multiclass")

# metric name -> (higher is better, kinds it applies to)
METRICS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "mse": (False, ("regression",)),
    "mae": (False, ("regression",)),
    "rmse": (False, ("regression",)),
    "accuracy": (True, ("binary", "multiclass")),
    "auc": (True, ("binary",)),
    "error_rate": (False, ("binary", "multiclass")),
}
_DEFAULT_METRIC = {"regression": "mse", "binary": "accuracy", "multiclass": "accuracy"}


@dataclass(frozen=True)
class Task:
    """One prediction task.

    Args:
        name: unique name inside its task set (letters, digits, ``_ - .``).
        kind: ``"regression"``, ``"binary"`` or ``"multiclass"``.
        metric: one of :data:`METRICS` that fits the kind; defaults to MSE for
            regression and accuracy for classification.
        num_classes: number of classes, required for (and only for) multiclass.
        loss_scale: a constant the task's loss is multiplied by (not a training
            weight: weighting strategies own those); useful to test scale effects.

    Raises:
        TaskSpecError: bad name, kind, metric or ``num_classes``.
    """

    name: str
    kind: TaskKind = "regression"
    metric: str = ""
    num_classes: int | None = None
    loss_scale: float = 1.0
    higher_is_better: bool = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise TaskSpecError(f"a task name must be a non-empty string, got {self.name!r}")
        if self.kind not in _KINDS:
            raise TaskSpecError(
                f"task {self.name!r}: field 'kind' must be one of {', '.join(_KINDS)}, "
                f"got {self.kind!r}"
            )
        metric = self.metric or _DEFAULT_METRIC[self.kind]
        if metric not in METRICS:
            raise TaskSpecError(
                f"task {self.name!r}: field 'metric' must be one of "
                f"{', '.join(sorted(METRICS))}, got {metric!r}"
            )
        hib, kinds = METRICS[metric]
        if self.kind not in kinds:
            raise TaskSpecError(
                f"task {self.name!r}: metric {metric!r} applies to {'/'.join(kinds)}, "
                f"not to kind {self.kind!r}"
            )
        if self.kind == "multiclass":
            if not isinstance(self.num_classes, int) or self.num_classes < 2:
                raise TaskSpecError(
                    f"task {self.name!r}: field 'num_classes' must be an int >= 2 for "
                    f"multiclass, got {self.num_classes!r}"
                )
        elif self.num_classes is not None:
            raise TaskSpecError(
                f"task {self.name!r}: field 'num_classes' is only for multiclass tasks, "
                f"got {self.num_classes!r} for kind {self.kind!r}"
            )
        if not (np.isfinite(self.loss_scale) and self.loss_scale > 0):
            raise TaskSpecError(
                f"task {self.name!r}: field 'loss_scale' must be finite and > 0, "
                f"got {self.loss_scale!r}"
            )
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "higher_is_better", hib)

    @property
    def out_dim(self) -> int:
        """Number of outputs the task's head must produce."""
        return self.num_classes if self.kind == "multiclass" else 1  # type: ignore[return-value]

    # --- loss -------------------------------------------------------------------
    def per_sample_loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of each sample, shape ``(B,)``; no masking, no reduction."""
        if self.kind == "regression":
            out = (pred.reshape(y.shape) - y) ** 2
        elif self.kind == "binary":
            out = F.binary_cross_entropy_with_logits(pred.reshape(y.shape), y, reduction="none")
        else:
            out = F.cross_entropy(pred, y, reduction="none")
        return out * self.loss_scale if self.loss_scale != 1.0 else out

    def loss(self, pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over the labelled samples (``mask`` True); 0 if none is labelled.

        Unlabelled entries may hold any value (even NaN); they are replaced before
        the loss is computed, so they never reach the gradient.
        """
        if mask is None:
            return self.per_sample_loss(pred, y).mean()
        y_safe = torch.where(mask, y, torch.zeros((), dtype=y.dtype, device=y.device))
        per = self.per_sample_loss(pred, y_safe)
        count = mask.sum()
        return (per * mask).sum() / count.clamp_min(1)

    # --- metric -----------------------------------------------------------------
    def score(self, pred: np.ndarray, y: np.ndarray) -> float:
        """The task's metric over labelled samples only (arrays already masked)."""
        if y.size == 0:
            return float("nan")
        m = self.metric
        if self.kind == "regression":
            p = pred.reshape(y.shape)
            if m == "mse":
                return float(np.mean((p - y) ** 2))
            if m == "rmse":
                return float(np.sqrt(np.mean((p - y) ** 2)))
            return float(np.mean(np.abs(p - y)))
        if self.kind == "binary":
            logit = pred.reshape(y.shape)
            if m == "auc":
                return _auc(logit, y)
            acc = float(np.mean((logit > 0).astype(y.dtype) == y))
        else:
            acc = float(np.mean(pred.argmax(axis=1) == y))
        return acc if m == "accuracy" else 1.0 - acc


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged."""
    from scipy.stats import rankdata

    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class TaskSet(Sequence[Task]):
    """An ordered collection of tasks with unique names.

    Args:
        tasks: the tasks, at least one.

    Raises:
        TaskSpecError: empty, duplicate names, or non-Task items.

    Example:
        >>> ts = TaskSet([Task("a"), Task("b", "binary")])
        >>> ts.subset(["b"]).names
        ('b',)
        >>> ts.subset(["c"])
        Traceback (most recent call last):
        ...
        taskgraph.exceptions.TaskSpecError: unknown task name(s) ['c']; known tasks: a, b
    """

    def __init__(self, tasks: Iterable[Task]):
        items = tuple(tasks)
        if not items:
            raise TaskSpecError("a task set must hold at least one task, got none")
        for t in items:
            if not isinstance(t, Task):
                raise TaskSpecError(f"a task set holds Task objects, got {type(t).__name__}")
        seen: set[str] = set()
        dupes = sorted({t.name for t in items if t.name in seen or seen.add(t.name)})  # type: ignore[func-returns-value]
        if dupes:
            raise TaskSpecError(f"task names must be unique, found duplicates: {dupes}")
        self._tasks = items
        self._by_name = {t.name: t for t in items}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    @overload
    def __getitem__(self, key: int | str) -> Task: ...

    @overload
    def __getitem__(self, key: slice) -> tuple[Task, ...]: ...

    def __getitem__(self, key: int | str | slice) -> Task | tuple[Task, ...]:
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise TaskSpecError(
                    f"unknown task name {key!r}; known tasks: {', '.join(self.names)}"
                ) from None
        return self._tasks[key]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskSet) and self._tasks == other._tasks

    def __hash__(self) -> int:
        return hash(self._tasks)

    def __repr__(self) -> str:
        return f"TaskSet({list(self.names)})"

    def check_names(self, names: Iterable[str], *, where: str = "") -> None:
        """Raise :class:`TaskSpecError` if any name is not in the set."""
        unknown = sorted({n for n in names if n not in self._by_name})
        if unknown:
            suffix = f" in {where}" if where else ""
            raise TaskSpecError(
                f"unknown task name(s) {unknown}{suffix}; known tasks: {', '.join(self.names)}"
            )

    def subset(self, names: Iterable[str]) -> TaskSet:
        """The tasks named, in the order given."""
        names = list(names)
        self.check_names(names)
        return TaskSet(self._by_name[n] for n in names)

    def to_dict(self) -> list[dict[str, Any]]:
        return [
            {"name": t.name, "kind": t.kind, "metric": t.metric, "num_classes": t.num_classes}
            for t in self._tasks
        ]

    @classmethod
    def from_dict(cls, items: Sequence[Mapping[str, Any]]) -> TaskSet:
        return cls(
            Task(
                name=d["name"],
                kind=d.get("kind", "regression"),
                metric=d.get("metric", ""),
                num_classes=d.get("num_classes"),
            )
            for d in items
        )
