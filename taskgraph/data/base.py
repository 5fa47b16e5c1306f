"""Multi-task datasets, validated once, served as whole batches.

:class:`MultiTaskDataset` holds features and per-task labels with label masks
and checks them against a :class:`~taskgraph.tasks.TaskSet` *before* any
training starts. :class:`MultiTaskData` bundles a task set with fixed
train/validation/test splits and makes loaders.

A loader yields ``(x, {task: y}, {task: mask})``. Batches are built by tensor
indexing (a :class:`~torch.utils.data.BatchSampler` feeds whole index lists to
``__getitem__``), so a batch costs one gather, not one Python call per sample.

Example:
    >>> import torch
    >>> from taskgraph.tasks import Task, TaskSet
    >>> ts = TaskSet([Task("a"), Task("b", "binary")])
    >>> x = torch.randn(8, 3)
    >>> ds = MultiTaskDataset(ts, x, {"a": torch.randn(8), "b": torch.ones(8)})
    >>> xb, yb, mb = ds[[0, 1, 2]]
    >>> xb.shape, yb["b"].shape, bool(mb["a"].all())
    (torch.Size([3, 3]), torch.Size([3]), True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from taskgraph.exceptions import DataError, TaskSpecError
from taskgraph.tasks import TaskSet

__all__ = ["Batch", "MultiTaskData", "MultiTaskDataset", "split_indices", "unpack_batch"]

Batch = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]


def _as_tensor(a: object, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t.to(dtype) if dtype is not None else t


class MultiTaskDataset(Dataset[Batch]):
    """Features ``x`` (N, ...) with labels and masks for each task of ``tasks``.

    Args:
        tasks: the task set the labels must match.
        x: features, float, first dimension N.
        labels: ``{task: y}``, each of length N (see :mod:`taskgraph.tasks` for dtypes).
        masks: ``{task: bool}`` of length N, True where labelled; default all True.
            Unlabelled entries may hold anything (NaN included).
        split: a name used in error messages ("train", "val", ...).

    Raises:
        TaskSpecError: label names that are not the task set's names.
        DataError: length mismatch, wrong label shape/dtype/values for a task's
            kind, NaN/inf in features or in labelled entries, a task with no
            labelled sample.
    """

    def __init__(
        self,
        tasks: TaskSet,
        x: object,
        labels: Mapping[str, object],
        masks: Mapping[str, object] | None = None,
        *,
        split: str = "data",
    ) -> None:
        self.tasks = tasks
        self.split = split
        x = _as_tensor(x)
        if not torch.is_floating_point(x):
            x = x.float()
        if x.ndim < 2:
            raise DataError(f"{split}: field 'x' must have shape (N, features...), got {tuple(x.shape)}")
        n = x.shape[0]
        bad = ~torch.isfinite(x)
        if bad.any():
            row = int(bad.reshape(n, -1).any(1).nonzero()[0])
            raise DataError(f"{split}: field 'x' must be finite, found NaN/inf (first at row {row})")
        missing = [t for t in tasks.names if t not in labels]
        extra = sorted(set(labels) - set(tasks.names))
        if extra:
            raise TaskSpecError(
                f"{split}: unknown task name(s) {extra} in labels; known tasks: {', '.join(tasks.names)}"
            )
        if missing:
            raise DataError(f"{split}: labels missing for task(s) {missing}")
        masks = masks or {}
        extra_m = sorted(set(masks) - set(tasks.names))
        if extra_m:
            raise TaskSpecError(f"{split}: unknown task name(s) {extra_m} in masks")
        ys: dict[str, torch.Tensor] = {}
        ms: dict[str, torch.Tensor] = {}
        for task in tasks:
            y = _as_tensor(labels[task.name])
            where = f"{split}: task {task.name!r}"
            if y.ndim != 1:
                raise DataError(f"{where}: field 'y' must have shape (N,), got {tuple(y.shape)}")
            if y.shape[0] != n:
                raise DataError(
                    f"{where}: field 'y' must have as many rows as 'x' ({n}), got {y.shape[0]}"
                )
            m = masks.get(task.name)
            m = torch.ones(n, dtype=torch.bool) if m is None else _as_tensor(m)
            if m.dtype != torch.bool or m.shape != (n,):
                raise DataError(
                    f"{where}: field 'mask' must be bool of shape ({n},), got {m.dtype} {tuple(m.shape)}"
                )
            if task.kind == "multiclass":
                if torch.is_floating_point(y) or y.dtype == torch.bool:
                    raise DataError(f"{where}: field 'y' must be integer class indices, got {y.dtype}")
                y = y.long()
                lab = y[m]
                if lab.numel() and (lab.min() < 0 or lab.max() >= task.out_dim):
                    raise DataError(
                        f"{where}: field 'y' must be in [0, {task.num_classes}), "
                        f"got values in [{int(lab.min())}, {int(lab.max())}]"
                    )
            else:
                if not (torch.is_floating_point(y) or y.dtype in (torch.bool, torch.int64, torch.int32)):
                    raise DataError(f"{where}: field 'y' must be numeric, got {y.dtype}")
                y = y.float()
                lab = y[m]
                if not torch.isfinite(lab).all():
                    raise DataError(f"{where}: field 'y' must be finite where labelled, found NaN/inf")
                if task.kind == "binary" and lab.numel() and not ((lab == 0) | (lab == 1)).all():
                    raise DataError(f"{where}: field 'y' must be 0 or 1 for a binary task")
            if not m.any():
                raise DataError(f"{where}: field 'mask' has no labelled sample in split {split!r}")
            ys[task.name] = y
            ms[task.name] = m
        self.x = x
        self.labels = ys
        self.masks = ms

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, idx: object) -> Batch:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return (
            self.x[idx],
            {k: v[idx] for k, v in self.labels.items()},
            {k: v[idx] for k, v in self.masks.items()},
        )

    def subset_tasks(self, names: Sequence[str]) -> MultiTaskDataset:
        """The same samples, restricted to some tasks (no re-validation of features)."""
        sub = self.tasks.subset(names)
        out = object.__new__(MultiTaskDataset)
        out.tasks, out.split, out.x = sub, self.split, self.x
        out.labels = {n: self.labels[n] for n in names}
        out.masks = {n: self.masks[n] for n in names}
        return out

    def loader(self, batch_size: int = 256, *, shuffle: bool = False, seed: int = 0,
               drop_last: bool = False) -> DataLoader[Batch]:
        """A DataLoader over whole batches; shuffled with its own seeded generator."""
        base: Sampler[int]
        if shuffle:
            g = torch.Generator().manual_seed(seed)
            base = RandomSampler(self, generator=g)
        else:
            base = SequentialSampler(self)
        sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
        return DataLoader(self, sampler=sampler, batch_size=None)


def unpack_batch(batch: object) -> Batch:
    """Accept ``(x, ys)`` or ``(x, ys, masks)``; masks default to all-labelled.

    Checks what a loader of the user's own must hold (cheap: types and lengths only): ``x`` a
    tensor, ``ys`` a mapping of task name to a tensor with one row per sample, masks bool
    tensors of one entry per sample.

    Raises:
        DataError: the batch breaks one of those, naming the task and what was found.

    Example:
        >>> x, ys, ms = unpack_batch((torch.zeros(4, 2), {"t": torch.zeros(4)}))
        >>> ms["t"].dtype, int(ms["t"].sum())
        (torch.bool, 4)
        >>> unpack_batch((torch.zeros(4, 2), {"t": torch.zeros(3)}))
        Traceback (most recent call last):
        ...
        taskgraph.exceptions.DataError: batch: every label tensor must have one row per sample of x (4); task 't' has 3
    """
    if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
        got = f"{len(batch)} items" if isinstance(batch, tuple | list) else type(batch).__name__
        raise DataError(f"a batch must be (x, labels) or (x, labels, masks), got {got}")
    x, ys = batch[0], batch[1]
    if not isinstance(x, torch.Tensor):
        raise DataError(f"batch: x must be a torch.Tensor, got {type(x).__name__} (convert it with torch.as_tensor)")
    if not isinstance(ys, Mapping):
        raise DataError(f"batch: labels must be a mapping {{task: tensor}}, got {type(ys).__name__}")
    n = x.shape[0] if x.ndim else 0
    for k, v in ys.items():
        if not isinstance(v, torch.Tensor):
            raise DataError(f"batch: task {k!r}'s labels must be a torch.Tensor, got {type(v).__name__}")
        if v.ndim == 0 or v.shape[0] != n:
            raise DataError(f"batch: every label tensor must have one row per sample of x ({n}); task {k!r} has "
                            f"{v.shape[0] if v.ndim else 'a scalar'}")
    if not isinstance(ys, dict):
        ys = dict(ys)  # a Mapping of the user's own: the Batch type promises a dict
    if len(batch) == 2:
        return x, ys, {k: torch.ones(v.shape[0], dtype=torch.bool, device=v.device) for k, v in ys.items()}
    ms = batch[2]
    if not isinstance(ms, Mapping):
        raise DataError(f"batch: masks must be a mapping {{task: bool tensor}}, got {type(ms).__name__}")
    for k, m in ms.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            got = str(m.dtype) if isinstance(m, torch.Tensor) else type(m).__name__
            raise DataError(f"batch: task {k!r}'s mask must be a bool tensor (True: labelled), got {got}; "
                            f"convert it with mask.bool()")
        if m.shape != (n,):
            raise DataError(f"batch: task {k!r}'s mask must have one entry per sample of x ({n}), got shape "
                            f"{tuple(m.shape)}")
    return x, ys, ms if isinstance(ms, dict) else dict(ms)


def split_indices(n: int, fractions: Sequence[float] = (0.7, 0.15, 0.15), *,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed, seeded train/val/test index arrays."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    a = int(round(fractions[0] * n))
    b = a + int(round(fractions[1] * n))
    return perm[:a], perm[a:b], perm[b:]


@dataclass(frozen=True)
class MultiTaskData:
    """A task set with fixed train/val/test splits.

    Attributes:
        name: the dataset's name.
        tasks: the task set.
        train: the validated training split.
        val: the validated validation split.
        test: the validated test split.
        ground_truth: the planted grouping for synthetic data (tuple of groups), else None.
        info: free-form facts (feature names, generator parameters).
    """

    name: str
    tasks: TaskSet
    train: MultiTaskDataset
    val: MultiTaskDataset
    test: MultiTaskDataset
    ground_truth: tuple[tuple[str, ...], ...] | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def loaders(self, batch_size: int = 256, *,
                seed: int = 0) -> tuple[DataLoader[Batch], DataLoader[Batch], DataLoader[Batch]]:
        """``(train, val, test)`` loaders; train shuffled with ``seed``."""
        return (
            self.train.loader(batch_size, shuffle=True, seed=seed),
            self.val.loader(1024),
            self.test.loader(1024),
        )

    def subset_tasks(self, names: Sequence[str]) -> MultiTaskData:
        self.tasks.check_names(names)
        return MultiTaskData(
            name=self.name,
            tasks=self.tasks.subset(names),
            train=self.train.subset_tasks(names),
            val=self.val.subset_tasks(names),
            test=self.test.subset_tasks(names),
            ground_truth=None,
            info=self.info,
        )

    @classmethod
    def from_arrays(cls, name: str, tasks: TaskSet, x: object, labels: Mapping[str, object],
                    masks: Mapping[str, object] | None = None, *, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                    seed: int = 0, standardize: bool = True,
                    ground_truth: tuple[tuple[str, ...], ...] | None = None,
                    info: Mapping[str, Any] | None = None) -> MultiTaskData:
        """Split arrays with a fixed seed; standardise features with train statistics."""
        xt = _as_tensor(x).float()
        n = xt.shape[0]
        tr, va, te = split_indices(n, fractions, seed=seed)
        if standardize:
            mu = xt[tr].mean(0, keepdim=True)
            sd = xt[tr].std(0, keepdim=True).clamp_min(1e-6)
            xt = (xt - mu) / sd
        mask_arrays = masks or {}

        def part(idx: np.ndarray, split: str) -> MultiTaskDataset:
            idx_t = torch.as_tensor(idx, dtype=torch.long)
            return MultiTaskDataset(
                tasks,
                xt[idx_t],
                {k: _as_tensor(v)[idx_t] for k, v in labels.items()},
                {k: _as_tensor(v)[idx_t] for k, v in mask_arrays.items()},
                split=f"{name}/{split}",
            )

        return cls(name, tasks, part(tr, "train"), part(va, "val"), part(te, "test"),
                   ground_truth=ground_truth, info=dict(info or {}))
