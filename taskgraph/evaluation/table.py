"""What an exhaustive ground truth says about every grouping: totals, ranks, paired errors.

A :class:`GroundTruth` holds each task's validation and test loss in every subset's
network for every seed. From it:

- a partition's **total** (per seed) is the sum over tasks of the task's loss in its own
  group's network; an overlapping choice serves each task by the chosen group where its
  mean validation loss is lowest (:meth:`GroundTruth.served`);
- every partition (Bell(n): 203 for 6 tasks) is ranked by its mean total on validation
  and on test (:meth:`GroundTruth.ranking`);
- :meth:`GroundTruth.assess` gives a choice's ranks, its ratio to the best partition and to
  all-in-one, and the **paired standard error** of its difference to all-in-one: the SD
  over seeds of the per-seed difference / √S (seed s trains every subset from the same
  initialisation and batch order);
- :meth:`GroundTruth.landscape` says whether the landscape is **peaked** (the best
  partition by validation beats all-in-one by more than 2 paired SE on validation and on
  test) or flat (how many partitions sit within 2 SE of the best);
- :meth:`GroundTruth.transfer` is the measured pairwise transfer: task i's loss alone
  against with j, the quantity an affinity estimator tries to predict.

Example:
    >>> recs = [{"subset": list(s), "seed": k, "val": {t: 1.0 - 0.1 * (len(s) > 1) + 0.01 * k for t in s},
    ...          "test": {t: 1.0 for t in s}, "steps": 10}
    ...         for k in (0, 1) for s in (("a",), ("b",), ("a", "b"))]
    >>> gt = GroundTruth.from_records(recs, tasks=("a", "b"), seeds=(0, 1))
    >>> [p for p, _ in gt.ranking("val")]
    [(('a', 'b'),), (('a',), ('b',))]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import numpy as np

from taskgraph.exceptions import TaskGraphError
from taskgraph.grouping.partitions import Partition, all_subsets, canonical, set_partitions

__all__ = ["Assessment", "GroundTruth", "Partition", "canonical", "set_partitions"]

SPLITS = ("val", "test")


@dataclass(frozen=True)
class Assessment:
    """How one choice scores against the ground truth (lower totals are better).

    Attributes:
        groups: the choice, canonical.
        val_total: mean over seeds of the summed task validation losses.
        test_total: the same on test.
        val_rank: 1-based rank by validation total among all partitions (1 + how many are strictly better).
        test_rank: the same by test total.
        n_partitions: how many partitions there are.
        ratio_to_best: test total / the best partition's test total.
        ratio_to_all_in_one: test total / all-in-one's test total.
        diff_to_all_in_one: ``{"val": (mean, se), "test": (mean, se)}``: choice − all-in-one per
            seed (negative: the choice is better), its mean and paired standard error.
    """

    groups: Partition
    val_total: float
    test_total: float
    val_rank: int
    test_rank: int
    n_partitions: int
    ratio_to_best: float
    ratio_to_all_in_one: float
    diff_to_all_in_one: Mapping[str, tuple[float, float]]

    @property
    def within_noise_of_all_in_one(self) -> bool:
        """Test total at most all-in-one's plus one paired SE."""
        d, se = self.diff_to_all_in_one["test"]
        return d <= se

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [list(g) for g in self.groups], "val_total": self.val_total, "test_total": self.test_total,
                "val_rank": self.val_rank, "test_rank": self.test_rank, "n_partitions": self.n_partitions,
                "ratio_to_best": self.ratio_to_best, "ratio_to_all_in_one": self.ratio_to_all_in_one,
                "diff_to_all_in_one": {k: list(v) for k, v in self.diff_to_all_in_one.items()}}


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and paired standard error of ``a − b`` over seeds."""
    d = np.asarray(a, float) - np.asarray(b, float)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
    return float(d.mean()), se


class GroundTruth:
    """Every subset's per-task validation and test losses over paired seeds.

    Build it with :meth:`from_records` (the lines :func:`~taskgraph.evaluation.exhaust` writes).
    """

    def __init__(self, name: str, tasks: Sequence[str], seeds: Sequence[int],
                 losses: Mapping[str, Mapping[tuple[str, ...], np.ndarray]], steps: int, seconds: float):
        self.name = name
        self.tasks = tuple(tasks)
        self.seeds = tuple(seeds)
        self._losses = losses  # split -> subset -> (n_seeds, len(subset))
        self.steps = steps
        self.seconds = seconds

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, tasks: Sequence[str], seeds: Sequence[int],
                     name: str = "") -> GroundTruth:
        """Assemble records; every (subset, seed) must be present once.

        Raises:
            TaskGraphError: a subset or seed is missing.
        """
        tasks, seeds = tuple(tasks), tuple(seeds)
        by: dict[tuple[tuple[str, ...], int], Mapping[str, Any]] = {}
        for r in records:
            key = (canonical([r["subset"]], order=tasks)[0], int(r["seed"]))
            if key[1] in seeds:
                by[key] = r
        missing = [(s, k) for k in seeds for s in all_subsets(tasks) if (s, k) not in by]
        if missing:
            s, k = missing[0]
            raise TaskGraphError(f"ground truth {name!r}: every subset must be trained for every seed; "
                                 f"{len(missing)} missing, e.g. {'+'.join(s)} seed {k}")
        losses: dict[str, dict[tuple[str, ...], np.ndarray]] = {sp: {} for sp in SPLITS}
        steps, seconds = 0, 0.0
        for s in all_subsets(tasks):
            for sp in SPLITS:
                losses[sp][s] = np.array([[by[s, k][sp][t] for t in s] for k in seeds], dtype=float)
            steps += sum(int(by[s, k].get("steps", 0)) for k in seeds)
            seconds += sum(float(by[s, k].get("seconds", 0.0)) for k in seeds)
        return cls(name, tasks, seeds, losses, steps, seconds)

    # --- per subset and per choice ---------------------------------------------------------------

    def loss(self, subset: Sequence[str], task: str, split: str = "val") -> np.ndarray:
        """``task``'s loss (per seed) in the network of ``subset``."""
        s = canonical([subset], order=self.tasks)[0]
        return self._losses[split][s][:, s.index(task)]

    def total(self, groups: Iterable[Iterable[str]], split: str = "val") -> np.ndarray:
        """A partition's summed task losses, per seed."""
        part = canonical(groups, order=self.tasks)
        seen = [t for g in part for t in g]
        if sorted(seen) != sorted(self.tasks):
            raise TaskGraphError(f"ground truth {self.name!r}: a partition must cover each task exactly once, "
                                 f"got {[list(g) for g in part]}")
        return cast(np.ndarray, sum(self._losses[split][g].sum(axis=1) for g in part))  # part is not empty

    def served(self, groups: Iterable[Iterable[str]]) -> dict[str, tuple[str, ...]]:
        """Each task's serving group in an overlapping choice: the chosen group where the task's mean
        validation loss is lowest."""
        gs = canonical(groups, order=self.tasks)
        best: dict[str, tuple[float, tuple[str, ...]]] = {}
        for g in gs:
            for t in g:
                v = float(self.loss(g, t, "val").mean())
                if t not in best or v < best[t][0]:
                    best[t] = (v, g)
        if set(best) != set(self.tasks):
            raise TaskGraphError(f"ground truth {self.name!r}: a choice must cover every task, "
                                 f"missing {sorted(set(self.tasks) - set(best))}")
        return {t: best[t][1] for t in self.tasks}

    def served_total(self, groups: Iterable[Iterable[str]], split: str = "val") -> np.ndarray:
        """An overlapping choice's total: each task's loss in the chosen group serving it."""
        return cast(np.ndarray, sum(self.loss(g, t, split) for t, g in self.served(groups).items()))  # tasks >= 1

    # --- every partition -------------------------------------------------------------------------

    @cached_property
    def _all(self) -> dict[str, np.ndarray]:
        parts = list(set_partitions(self.tasks))
        out = {sp: np.stack([self.total(p, sp) for p in parts]) for sp in SPLITS}  # (n_parts, n_seeds)
        self._parts = parts
        return out

    def partitions(self) -> list[Partition]:
        """Every partition, canonical, in a fixed order."""
        self._all  # noqa: B018 - builds the list
        return list(self._parts)

    @property
    def all_in_one(self) -> Partition:
        return (self.tasks,)

    def ranking(self, split: str = "val") -> list[tuple[Partition, float]]:
        """Every partition with its mean total, best (lowest) first."""
        means = self._all[split].mean(axis=1)
        order = np.argsort(means, kind="stable")
        parts = self.partitions()
        return [(parts[i], float(means[i])) for i in order]

    def rank(self, groups: Iterable[Iterable[str]], split: str = "val") -> int:
        """1 + the number of partitions with a strictly lower mean total."""
        v = float(self.total(groups, split).mean())
        return 1 + int((self._all[split].mean(axis=1) < v - 1e-12).sum())

    def assess(self, groups: Iterable[Iterable[str]]) -> Assessment:
        """Ranks, ratios and the paired difference to all-in-one of a partition."""
        part = canonical(groups, order=self.tasks)
        tot = {sp: self.total(part, sp) for sp in SPLITS}
        aio = {sp: self.total(self.all_in_one, sp) for sp in SPLITS}
        best_test = float(self._all["test"].mean(axis=1).min())
        return Assessment(
            groups=part, val_total=float(tot["val"].mean()), test_total=float(tot["test"].mean()),
            val_rank=self.rank(part, "val"), test_rank=self.rank(part, "test"), n_partitions=len(self.partitions()),
            ratio_to_best=float(tot["test"].mean()) / best_test,
            ratio_to_all_in_one=float(tot["test"].mean() / aio["test"].mean()),
            diff_to_all_in_one={sp: paired(tot[sp], aio[sp]) for sp in SPLITS})

    def landscape(self) -> dict[str, Any]:
        """Is grouping worth it here? The best partition by validation against all-in-one.

        Returns:
            ``{"best": partition, "best_by_test": partition, "gain": {"val": (mean, se), "test": (...)},
            "peaked": bool, "within_2se_of_best": int, "n_partitions": int}`` where ``gain`` is
            all-in-one − best per seed (positive: grouping helps), ``peaked`` when both gains
            exceed 2 paired SE, and ``within_2se_of_best`` counts the partitions whose paired
            validation difference to the best is within 2 SE.
        """
        ranked = self.ranking("val")
        best = ranked[0][0]
        gain = {sp: paired(self.total(self.all_in_one, sp), self.total(best, sp)) for sp in SPLITS}
        peaked = all(m > 2 * se for m, se in gain.values())
        b = self.total(best, "val")
        near = 0
        for p, _ in ranked:
            m, se = paired(self.total(p, "val"), b)
            near += m <= 2 * se
        return {"best": best, "best_by_test": self.ranking("test")[0][0], "gain": gain, "peaked": bool(peaked),
                "within_2se_of_best": near, "n_partitions": len(ranked)}

    def transfer(self, split: str = "val") -> np.ndarray:
        """Measured pairwise transfer: ``T[i, j] = (L_i({i}) − L_i({i, j})) / L_i({i})``, mean over seeds.

        Positive: training with task j lowered task i's loss. The diagonal is 0. Oriented like an
        affinity matrix's ``Z[j, i]`` (j → i), so compare ``T.T`` with ``Z``.
        """
        n = len(self.tasks)
        out = np.zeros((n, n))
        for i, ti in enumerate(self.tasks):
            alone = self.loss((ti,), ti, split)
            for j, tj in enumerate(self.tasks):
                if i != j:
                    out[i, j] = float(((alone - self.loss((ti, tj), ti, split)) / alone).mean())
        return out
