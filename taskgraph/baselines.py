"""Single-task baselines for Δm%, trained once per (data, trunk, training config) and cached.

Δm% (see :func:`taskgraph.training.delta_m`) compares a multi-task model with
single-task models trained with the same budget. A search evaluates many
trials against the same baselines, so :func:`single_task_baselines` trains them
once per key and caches the per-task evaluations: in memory for the process,
and as JSON in ``cache_dir`` when given (so Ray workers and later runs share
them). The key is a SHA-256 of:

- the dataset's name and a fingerprint of its arrays (features, labels, masks
  of every split — so two generator settings never collide),
- the task set (names, kinds, metrics),
- the trunk spec (``TrunkSpec.to_dict()``),
- the training config (every :class:`~taskgraph.training.TrainConfig` field but
  ``device``: budget, optimizer, seed, ...).

Each baseline is one hard-shared model per task
(:func:`taskgraph.training.train_partition` with singleton groups), equal weighting.

Example:
    >>> from taskgraph.data import planted_clusters
    >>> from taskgraph.models import TrunkSpec
    >>> from taskgraph.training import TrainConfig
    >>> data = planted_clusters(n_tasks=2, n_clusters=1, n_samples=200, seed=0)
    >>> base = single_task_baselines(data, TrunkSpec(hidden=(8,)), TrainConfig(epochs=1))
    >>> sorted(base.test.metrics)
    ['t0', 't1']
    >>> single_task_baselines(data, TrunkSpec(hidden=(8,)), TrainConfig(epochs=1)) is base  # cached
    True
    >>> base.delta_m(base.test, data.tasks)  # the baselines against themselves
    0.0
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskgraph.data.base import MultiTaskData
from taskgraph.exceptions import ConfigError
from taskgraph.models.trunks import TrunkSpec
from taskgraph.tasks import TaskSet
from taskgraph.training import Evaluation, TrainConfig, delta_m, per_task_delta, train_partition

__all__ = ["Baselines", "baseline_key", "clear_memory_cache", "data_fingerprint", "single_task_baselines"]

_FORMAT = 1
_MEMORY: dict[str, Baselines] = {}


@dataclass(frozen=True)
class Baselines:
    """Single-task evaluations of every task, and the key they were trained under.

    Attributes:
        key: the cache key (hex SHA-256).
        dataset: the dataset's name.
        val, test: per-task losses and metrics of the single-task models.
        seconds: training time when they were computed.
        key_fields: what the key hashes (for humans reading the JSON).
    """

    key: str
    dataset: str
    val: Evaluation
    test: Evaluation
    seconds: float
    key_fields: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def _split(self, split: str) -> Evaluation:
        if split not in ("val", "test"):
            raise ConfigError(f"Baselines: 'split' must be 'val' or 'test', got {split!r}", key="split")
        return self.val if split == "val" else self.test

    def per_task_delta(self, evaluation: Evaluation, tasks: TaskSet, *, split: str = "test") -> dict[str, float]:
        """Each task's Δ% of ``evaluation``'s metric against its baseline (negative = better)."""
        return per_task_delta(evaluation.metrics, self._split(split).metrics, tasks)

    def delta_m(self, evaluation: Evaluation, tasks: TaskSet, *, split: str = "test") -> float:
        """Δm% of ``evaluation`` (over its tasks) against these baselines on ``split``; lower is better."""
        return delta_m(evaluation.metrics, self._split(split).metrics, tasks)

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "key": self.key, "dataset": self.dataset, "val": self.val.to_dict(),
                "test": self.test.to_dict(), "seconds": self.seconds, "key_fields": self.key_fields}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Baselines:
        return cls(key=d["key"], dataset=d["dataset"], val=Evaluation(**d["val"]), test=Evaluation(**d["test"]),
                   seconds=float(d["seconds"]), key_fields=d.get("key_fields", {}))


def data_fingerprint(data: MultiTaskData) -> str:
    """SHA-256 of every split's features, labels and masks (in task order)."""
    h = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        h.update(np.ascontiguousarray(split.x.numpy()).tobytes())
        for n in data.tasks.names:
            h.update(n.encode())
            h.update(np.ascontiguousarray(split.labels[n].numpy()).tobytes())
            h.update(np.ascontiguousarray(split.masks[n].numpy()).tobytes())
    return h.hexdigest()


def _key_fields(data: MultiTaskData, trunk_spec: TrunkSpec, config: TrainConfig) -> dict[str, Any]:
    cfg = dataclasses.asdict(config)
    cfg.pop("device", None)
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    return {"format": _FORMAT, "dataset": data.name, "data_sha256": data_fingerprint(data),
            "tasks": data.tasks.to_dict(), "trunk": trunk_spec.to_dict(), "config": cfg}


def baseline_key(data: MultiTaskData, trunk_spec: TrunkSpec, config: TrainConfig) -> str:
    """The cache key of the baselines for this data, trunk and training config (hex SHA-256)."""
    blob = json.dumps(_key_fields(data, trunk_spec, config), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def clear_memory_cache() -> None:
    """Forget the baselines cached in this process (files in a ``cache_dir`` stay)."""
    _MEMORY.clear()


def single_task_baselines(data: MultiTaskData, trunk_spec: TrunkSpec, config: TrainConfig, *,
                          cache_dir: str | os.PathLike[str] | None = None, progress: bool = False) -> Baselines:
    """Single-task evaluations of every task of ``data``, from the cache when there.

    Args:
        data: the dataset (its splits and tasks are part of the key).
        trunk_spec: the trunk every single-task model uses.
        config: the training budget and seed (every field but ``device`` is part of the key).
        cache_dir: a folder for ``baselines-<key>.json`` files; None keeps them in memory only.
        progress: show progress bars while training.

    Returns:
        :class:`Baselines` (the same object on a hit in this process).

    Raises:
        ConfigError: ``trunk_spec`` is not a :class:`TrunkSpec` (a module cannot be keyed), or
            ``cache_dir`` exists and is not a folder.
    """
    if not isinstance(trunk_spec, TrunkSpec):
        raise ConfigError(f"single_task_baselines: 'trunk_spec' must be a TrunkSpec (it is part of the cache key), "
                          f"got {type(trunk_spec).__name__}", key="trunk_spec")
    fields = _key_fields(data, trunk_spec, config)
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    if key in _MEMORY:
        return _MEMORY[key]
    path = None
    if cache_dir is not None:
        folder = Path(cache_dir)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"single_task_baselines: 'cache_dir' must be a folder, got the file {folder}",
                              key="cache_dir")
        path = folder / f"baselines-{key}.json"
        cached = _read(path, key)
        if cached is not None:
            _MEMORY[key] = cached
            return cached
    import time

    t0 = time.perf_counter()
    shape = data.input_shape
    evals = train_partition(lambda: trunk_spec.build(shape), data, [(n,) for n in data.tasks.names], config,
                            progress=progress)
    base = Baselines(key, data.name, evals["val"], evals["test"], time.perf_counter() - t0, fields)
    if path is not None:
        _write(path, base)
    _MEMORY[key] = base
    return base


def _read(path: Path, key: str) -> Baselines | None:
    """A cached file's baselines, or None when absent, unreadable or for another key."""
    try:
        d = json.loads(path.read_text())
        base = Baselines.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return base if base.key == key and d.get("format") == _FORMAT else None


def _write(path: Path, base: Baselines) -> None:
    """Write atomically (a temporary file renamed), so concurrent trials never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".baselines-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(base.to_dict(), f, indent=1, allow_nan=True)
    os.replace(tmp, path)
