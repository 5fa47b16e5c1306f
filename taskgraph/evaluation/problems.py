"""Problems for grouping ground truth: a dataset, up to 7 of its tasks, a trunk and a protocol.

A :class:`Problem` is plain data (picklable, so process pools and Ray tasks can
rebuild it): the dataset by registry name or module-level function, its options,
the tasks, the trunk and the :class:`~taskgraph.training.TrainConfig` of every
network the exhaustion trains (early stopping on validation, best epoch restored).

:data:`PROBLEMS` names the ones the project evaluates itself on
(``benchmarks/quality.py``), all from data that ships inside packages:

- ``digits-shapes``: digits one-vs-rest, {1, 4, 7} (strokes) and {3, 5, 8} (curves);
- ``digits-pairs``: six one-vs-one digit discriminations (each task labelled only on its
  two digits: missing labels);
- ``yeast6``: six yeast gene-function labels (two correlated pairs, a chain);
- ``yeast6b``: six other yeast labels (7-12: a chain, a rare label, near duplicates), added
  after the default policy was chosen, as a held-out check of it;
- ``star6``: STAR reading and maths scores, kindergarten to grade 2 (missing labels);
- ``digits-planted``: real digit images, labels planted in two opposed families (each
  family's tasks read one half of the image; the other half's tasks are their negations
  mixed across halves), so the structure is known;
- ``digits-scarce``: digits one-vs-rest with 4% of the training labels per task, where
  sharing is what makes the tasks learnable (single-task loses to all-in-one);
- ``digits-attributes``: six properties of a digit (even, small, prime, ...) with 10% of the
  training labels each: one trunk serves them all, so all-in-one should be hard to beat.
  Both were added after the default policy's second look was chosen, as held-out checks.

Example:
    >>> p = PROBLEMS.get("tiny4")
    >>> p.tasks
    ('t0', 't1', 't2', 't3')
    >>> len(p.data().tasks)
    4
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from taskgraph.data.base import MultiTaskData
from taskgraph.exceptions import ConfigError
from taskgraph.models.trunks import TrunkSpec
from taskgraph.registry import Registry
from taskgraph.tasks import Task, TaskSet
from taskgraph.training import TrainConfig

__all__ = ["MAX_TASKS", "PROBLEMS", "Problem"]

#: the exhaustion trains 2^n - 1 networks per seed: 127 at n = 7
MAX_TASKS = 7


@dataclass(frozen=True)
class Problem:
    """A dataset, the tasks to group, the trunk and the training protocol.

    Attributes:
        name: the problem's name (also the ground-truth file's).
        dataset: a dataset registry name (:data:`taskgraph.data.DATASETS`) or a module-level
            function returning a :class:`~taskgraph.data.MultiTaskData`.
        tasks: the tasks to group (2 to :data:`MAX_TASKS`).
        trunk: the shared trunk of every network.
        config: every network's training (``seed`` is replaced per seed; set ``patience``
            for early stopping).
        options: the dataset's options.
        description: one line for tables.
    """

    name: str
    dataset: str | Callable[..., MultiTaskData]
    tasks: tuple[str, ...]
    trunk: TrunkSpec
    config: TrainConfig
    options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        # kept as sorted items so that a problem is hashable (and cached per process)
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))
        if not 2 <= len(self.tasks) <= MAX_TASKS:
            raise ConfigError(f"Problem {self.name!r}: 2 <= number of tasks <= {MAX_TASKS} must hold "
                              f"(the exhaustion trains 2^n - 1 networks), got {len(self.tasks)}", key="tasks")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"Problem {self.name!r}: task names must be unique, got {list(self.tasks)}",
                              key="tasks")

    def data(self) -> MultiTaskData:
        """The dataset restricted to :attr:`tasks` (cached per process)."""
        return _load(self)

    def to_dict(self) -> dict[str, Any]:
        ds = self.dataset if isinstance(self.dataset, str) else f"{self.dataset.__module__}.{self.dataset.__name__}"
        cfg = {k: v for k, v in self.config.__dict__.items() if k != "seed"}
        return {"name": self.name, "dataset": ds, "options": dict(self.options), "tasks": list(self.tasks),
                "trunk": self.trunk.to_dict(), "config": cfg}

    def fingerprint(self) -> str:
        """A short hash of everything that decides a network's losses (seed excepted)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def _load(problem: Problem) -> MultiTaskData:
    if isinstance(problem.dataset, str):
        from taskgraph.data import load_dataset

        data = load_dataset(problem.dataset, **dict(problem.options))
    else:
        data = problem.dataset(**dict(problem.options))
    return data.subset_tasks(list(problem.tasks))


# --- the project's own problems ---------------------------------------------------------------

def _digits_xy() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target


def digits_pairs(*, seed: int = 0) -> MultiTaskData:
    """Six one-vs-one digit discriminations; each task is labelled only on its own two digits."""
    x, y = _digits_xy()
    pairs = [(3, 5), (3, 8), (5, 8), (1, 7), (4, 9), (7, 9)]
    names = [f"d{a}v{b}" for a, b in pairs]
    labels = {n: (y == b).astype(np.float32) for n, (_, b) in zip(names, pairs, strict=True)}
    masks = {n: (y == a) | (y == b) for n, (a, b) in zip(names, pairs, strict=True)}
    tasks = TaskSet([Task(n, "binary") for n in names])
    return MultiTaskData.from_arrays("digits-pairs", tasks, x, labels, masks, seed=seed,
                                     info={"source": "sklearn load_digits", "pairs": pairs})


def _digit_classes(name: str, classes: Mapping[str, tuple[int, ...]], *, seed: int, labelled: float, label_seed: int,
                   source: str) -> MultiTaskData:
    """Digit tasks "the image's digit is one of these classes", each labelled on its own random
    ``labelled`` share of the training rows (drawn in task order from ``label_seed``); validation
    and test stay fully labelled."""
    from taskgraph.data.base import split_indices

    x, y = _digits_xy()
    train, _, _ = split_indices(len(x), seed=seed)
    rng = np.random.default_rng(label_seed)
    labels, masks = {}, {}
    for task, digits in classes.items():
        labels[task] = np.isin(y, digits).astype(np.float32)
        m = np.ones(len(x), dtype=bool)
        m[train] = rng.random(len(train)) < labelled
        masks[task] = m
    tasks = TaskSet([Task(n, "binary") for n in classes])
    return MultiTaskData.from_arrays(name, tasks, x, labels, masks, seed=seed,
                                     info={"source": source, "labelled": labelled})


def digits_scarce(*, seed: int = 0, digits: tuple[int, ...] = (0, 2, 3, 5, 6, 8), labelled: float = 0.04,
                  label_seed: int = 7) -> MultiTaskData:
    """Digits one-vs-rest where each task's training labels are scarce: every task is labelled on
    its own random ``labelled`` share of the training rows (validation and test stay fully
    labelled), so one task's labels teach the trunk features that the others' few labels
    cannot: the classic case for sharing (single-task loses to all-in-one here)."""
    return _digit_classes("digits-scarce", {f"is{d}": (d,) for d in digits}, seed=seed, labelled=labelled,
                          label_seed=label_seed, source="sklearn load_digits, scarce training labels")


#: digits_attributes' tasks: properties of the digit, each a union of classes
DIGIT_ATTRIBUTES: dict[str, tuple[int, ...]] = {
    "even": (0, 2, 4, 6, 8), "small": (0, 1, 2, 3, 4), "prime": (2, 3, 5, 7), "loop": (0, 6, 8, 9),
    "straight": (1, 4, 7), "mid": (3, 4, 5, 6)}


def digits_attributes(*, seed: int = 0, labelled: float = 0.1, label_seed: int = 11) -> MultiTaskData:
    """Six properties of a digit (even, small, prime, has a loop, straight strokes, 3-6), each a
    union of digit classes, so one trunk that tells the digits apart serves them all; every task
    is labelled on its own random ``labelled`` share of the training rows (validation and test
    fully labelled). A problem where all-in-one should be hard to beat at all."""
    return _digit_classes("digits-attributes", DIGIT_ATTRIBUTES, seed=seed, labelled=labelled, label_seed=label_seed,
                          source="sklearn load_digits, digit properties, scarce training labels")


def digits_planted(*, seed: int = 0) -> MultiTaskData:
    """Real digit images, labels planted in two families that read different pixels.

    Each task of family ``a`` thresholds, at its median, a random projection of the
    image's left four columns; family ``b`` does the same with the right four. The
    projections of one family share a common direction (plus task noise), so a family's
    tasks share features while the two families compete for a narrow trunk.
    """
    x, _ = _digits_xy()
    rng = np.random.default_rng(1234)
    img = x.reshape(-1, 8, 8)
    halves = {"a": img[:, :, :4].reshape(len(x), -1), "b": img[:, :, 4:].reshape(len(x), -1)}
    labels = {}
    for fam, feats in halves.items():
        z = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
        base = rng.normal(size=z.shape[1])
        for i in range(3):
            w = base + 0.5 * rng.normal(size=z.shape[1])
            s = z @ w
            labels[f"{fam}{i}"] = (s > np.median(s)).astype(np.float32)
    names = list(labels)
    tasks = TaskSet([Task(n, "binary") for n in names])
    return MultiTaskData.from_arrays("digits-planted", tasks, x, labels, seed=seed,
                                     ground_truth=(("a0", "a1", "a2"), ("b0", "b1", "b2")),
                                     info={"source": "sklearn load_digits, planted labels"})


PROBLEMS: Registry[Problem] = Registry("problem")


def _register(p: Problem) -> Problem:
    return PROBLEMS.register(p.name, p)


_PROTOCOL = TrainConfig(epochs=40, lr=3e-3, batch_size=64, patience=5, device="cpu")

_register(Problem("digits-shapes", "digits", ("is1", "is4", "is7", "is3", "is5", "is8"), TrunkSpec(hidden=(32, 8)),
                  _PROTOCOL, description="digits one-vs-rest: strokes {1,4,7}, curves {3,5,8}"))
_register(Problem("digits-pairs", digits_pairs, ("d3v5", "d3v8", "d5v8", "d1v7", "d4v9", "d7v9"),
                  TrunkSpec(hidden=(32, 8)), _PROTOCOL, description="digits one-vs-one pairs (masked labels)"))
_register(Problem("yeast6", "yeast", ("c1", "c2", "c3", "c4", "c5", "c6"), TrunkSpec(hidden=(32, 8)), _PROTOCOL,
                  description="yeast gene-function labels 1-6"))
_register(Problem("yeast6b", "yeast", ("c7", "c8", "c9", "c10", "c11", "c12"), TrunkSpec(hidden=(32, 8)), _PROTOCOL,
                  description="yeast gene-function labels 7-12 (held out: added after the default was chosen)"))
_register(Problem("star6", "star", ("readk", "read1", "read2", "mathk", "math1", "math2"),
                  TrunkSpec(hidden=(32, 8)), _PROTOCOL.replace(batch_size=128),
                  description="STAR reading/maths scores K-2 (masked labels)"))
_register(Problem("digits-planted", digits_planted, ("a0", "a1", "a2", "b0", "b1", "b2"), TrunkSpec(hidden=(32, 4)),
                  _PROTOCOL, description="digit images, planted half-image label families"))
_register(Problem("digits-scarce", digits_scarce, ("is0", "is2", "is3", "is5", "is6", "is8"),
                  TrunkSpec(hidden=(32,)), _PROTOCOL,
                  description="digits one-vs-rest, 4% of training labels per task (held out: added after the "
                              "second look was chosen)"))
_register(Problem("digits-attributes", digits_attributes, tuple(DIGIT_ATTRIBUTES), TrunkSpec(hidden=(64, 32)),
                  _PROTOCOL, description="digit properties (even, small, prime, ...), 10% of training labels per task "
                                         "(held out: added after the second look was chosen)"))
_register(Problem("tiny4", "planted-clusters", ("t0", "t1", "t2", "t3"), TrunkSpec(hidden=(16,)),
                  TrainConfig(epochs=4, lr=1e-2, batch_size=64, patience=2, device="cpu"),
                  options={"n_tasks": 4, "n_clusters": 2, "n_samples": 300, "seed": 0},
                  description="synthetic, 2 opposed clusters (test-sized)"))
