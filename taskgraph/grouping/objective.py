"""The grouping objective: TAG's serving score, its partition variant and a cost budget.

Pure functions on arrays. ``Z[j, t]`` is Ẑ_{j→t}, how much a step on task j's
gradient lowers task t's loss (:attr:`AffinityMatrix.mean`). The diagonal is
never read.

**Serving score** (Fifty et al., NeurIPS 2021, "Efficiently Identifying Task
Groupings for Multi-Task Learning", following Standley et al., ICML 2020,
"Which Tasks Should Be Learned Together in Multi-task Learning?"). A group G is
a set of tasks trained in one network. Task t's score inside G is the mean
affinity onto it from the group's other members,

    s(t, G) = 1/(|G| - 1) · Σ_{j ∈ G, j ≠ t} Z[j, t]            (|G| >= 2).

A solution is at most k groups covering every task; each task is *served* by
its best chosen group that contains it, and the objective is the total served
score Σ_t max_{G ∋ t} s(t, G).

Variants, all set by :class:`Objective`:

- ``variant="overlap"`` (TAG, Standley): a task may belong to several groups
  (it then helps in some and is served by its best one).
- ``variant="partition"``: groups are disjoint.
- **Singletons**: a group of one task has no affinity to average. TAG forbids
  them (its code scores them with a large penalty); here ``singletons="forbid"``
  makes them infeasible and ``singletons="allow"`` scores a lone task
  ``singleton_value`` (0 = "no transfer", a natural choice).
- **Budget** (Standley's framing): a network for a group costs ``group_cost``
  (1 by default), a smaller single-task network may cost less
  (``singleton_cost``); the chosen groups' total cost must not exceed ``budget``.

The problem as a solver sees it is a validated :class:`GroupingProblem`.

Example:
    >>> import numpy as np
    >>> Z = np.array([[0, .3, -.2], [.1, 0, -.1], [-.4, -.3, 0]])
    >>> p = GroupingProblem.from_array(Z, ("a", "b", "c"), k=2)
    >>> round(p.value([(0, 1), (1, 2)]), 6)  # a: .1, b: .3 in {a,b}; c: -.1 in {b,c}
    0.3
    >>> p.serving([(0, 1), (1, 2)])
    (0, 0, 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from taskgraph.exceptions import GroupingError

__all__ = ["VARIANTS", "GroupingProblem", "Objective", "as_problem", "task_score"]

VARIANTS = ("overlap", "partition")
_SINGLETONS = ("forbid", "allow")


@dataclass(frozen=True)
class Objective:
    """Which grouping problem to solve: variant, singletons and budget.

    Attributes:
        variant: ``"overlap"`` (TAG: a task may sit in several groups, served by
            its best) or ``"partition"`` (disjoint groups).
        singletons: ``"forbid"`` (TAG: every task is served by a group of >= 2)
            or ``"allow"`` (a lone task scores ``singleton_value``).
        singleton_value: score of a task trained alone, when allowed.
        budget: total cost allowed for the chosen networks (None: no budget).
        group_cost: cost of one network for a group of >= 2 tasks (Standley: 1).
        singleton_cost: cost of a single-task network (Standley: may be less, e.g. 0.5).

    Raises:
        GroupingError: unknown variant or singleton policy, non-finite values,
            costs <= 0, budget <= 0.
    """

    variant: str = "overlap"
    singletons: str = "forbid"
    singleton_value: float = 0.0
    budget: float | None = None
    group_cost: float = 1.0
    singleton_cost: float = 1.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise GroupingError(f"Objective: 'variant' must be one of {', '.join(VARIANTS)}, "
                                f"got {self.variant!r}")
        if self.singletons not in _SINGLETONS:
            raise GroupingError(f"Objective: 'singletons' must be one of {', '.join(_SINGLETONS)}, "
                                f"got {self.singletons!r}")
        if not math.isfinite(self.singleton_value):
            raise GroupingError(f"Objective: 'singleton_value' must be finite, got {self.singleton_value}")
        for key in ("group_cost", "singleton_cost"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v > 0):
                raise GroupingError(f"Objective: {key!r} must be finite and > 0, got {v}")
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget > 0):
            raise GroupingError(f"Objective: 'budget' must be finite and > 0 (or None), got {self.budget}")

    @property
    def allow_singletons(self) -> bool:
        return self.singletons == "allow"

    def cost(self, size: int) -> float:
        """Cost of the network for a group of ``size`` tasks."""
        return self.singleton_cost if size == 1 else self.group_cost

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "singletons": self.singletons,
                "singleton_value": self.singleton_value, "budget": self.budget,
                "group_cost": self.group_cost, "singleton_cost": self.singleton_cost}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Objective:
        known = {"variant", "singletons", "singleton_value", "budget", "group_cost", "singleton_cost"}
        extra = sorted(set(d) - known)
        if extra:
            raise GroupingError(f"Objective: unknown key(s) {extra}; valid: {', '.join(sorted(known))}")
        return cls(**d)


def task_score(Z: np.ndarray, t: int, group: Sequence[int], singleton_value: float = 0.0) -> float:
    """s(t, G): mean of ``Z[j, t]`` over the other members j of ``group`` (``singleton_value`` if alone)."""
    others = [j for j in group if j != t]
    if not others:
        return float(singleton_value)
    return float(np.mean(Z[others, t]))


@dataclass(frozen=True, eq=False)
class GroupingProblem:
    """A validated grouping problem: affinity array, task names, at most ``k`` groups, objective.

    Build it with :meth:`from_array` or :func:`as_problem`, which check the input.

    Attributes:
        names: task names; index i of ``Z`` is ``names[i]``.
        Z: (n, n) float array, ``Z[j, t]`` = Ẑ_{j→t}; the diagonal is set to 0 (never read).
        k: the most groups a solution may use (1 <= k <= n).
        objective: variant, singletons and budget.
        stderr: optional (n, n) standard errors of ``Z`` (used to choose k).
    """

    names: tuple[str, ...]
    Z: np.ndarray
    k: int
    objective: Objective = field(default_factory=Objective)
    stderr: np.ndarray | None = None

    @classmethod
    def from_array(cls, Z: npt.ArrayLike, names: Sequence[str] | None = None, *, k: int | None = None,
                   objective: Objective | None = None, stderr: npt.ArrayLike | None = None) -> GroupingProblem:
        """Validate ``Z`` and ``names`` and build the problem (k defaults to n).

        Raises:
            GroupingError: non-square or non-2-D matrix, names that do not match
                (count, duplicates), NaN/inf off the diagonal, k < 1 or k > n, or a
                budget/singleton policy no solution can meet.
        """
        objective = objective or Objective()
        try:
            a = np.array(Z, dtype=float)
        except (TypeError, ValueError) as e:
            raise GroupingError(f"the affinity matrix must be numeric: {e}") from None
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise GroupingError(f"the affinity matrix must be square (n, n), got shape {a.shape}")
        n = a.shape[0]
        if n == 0:
            raise GroupingError("the affinity matrix must hold at least one task, got shape (0, 0)")
        if names is None:
            names = tuple(f"t{i}" for i in range(n))
        names = tuple(names)
        if len(names) != n:
            raise GroupingError(f"names must match the matrix: {n} rows/columns but {len(names)} names "
                                f"{list(names)}")
        if not all(isinstance(x, str) and x for x in names):
            raise GroupingError(f"task names must be non-empty strings, got {list(names)}")
        dupes = sorted({x for x in names if names.count(x) > 1})
        if dupes:
            raise GroupingError(f"task names must be unique, found duplicates {dupes}")
        off = ~np.eye(n, dtype=bool)
        bad = off & ~np.isfinite(a)
        if bad.any():
            j, t = map(int, np.argwhere(bad)[0])
            raise GroupingError(
                f"affinity entries off the diagonal must be finite, found {a[j, t]} at "
                f"({names[j]!r} -> {names[t]!r}) and {int(bad.sum()) - 1} more; measure more steps "
                "or drop the task")
        np.fill_diagonal(a, 0.0)
        a.setflags(write=False)
        se = None
        if stderr is not None:
            se = np.array(stderr, dtype=float)
            if se.shape != (n, n):
                raise GroupingError(f"stderr must have shape ({n}, {n}) like the matrix, got {se.shape}")
            se = np.where(np.isfinite(se), se, 0.0)
            np.fill_diagonal(se, 0.0)
            se.setflags(write=False)
        if k is None:
            k = n
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise GroupingError(f"k (the most groups) must be an int, got {k!r}")
        k = int(k)
        if not 1 <= k <= n:
            raise GroupingError(f"1 <= k <= n must hold for k, the most groups, got k={k} with n={n} tasks")
        p = cls(names, a, k, objective, se)
        p._check_feasible()
        return p

    # --------------------------------------------------------------- facts
    @property
    def n(self) -> int:
        return len(self.names)

    def min_cost(self) -> float:
        """The cheapest cover of all tasks that the singleton policy and k allow (inf if none)."""
        o = self.objective
        best = o.group_cost if self.n >= 2 else math.inf
        if o.allow_singletons and self.k >= self.n:
            best = min(best, self.n * o.singleton_cost)
        return best

    def _check_feasible(self) -> None:
        o = self.objective
        if self.n == 1 and not o.allow_singletons:
            raise GroupingError(f"a single task ({self.names[0]!r}) can only form a singleton group, "
                                "but singletons='forbid'; allow singletons or add tasks")
        if o.budget is not None and o.budget < self.min_cost() - 1e-12:
            raise GroupingError(
                f"budget must be >= {self.min_cost():g}, the cheapest cover of {self.n} tasks "
                f"(group_cost={o.group_cost:g}, singleton_cost={o.singleton_cost:g}, "
                f"singletons={o.singletons!r}, k={self.k}), got budget={o.budget:g}")

    def score_matrix(self, groups: Sequence[Sequence[int]]) -> np.ndarray:
        """(len(groups), n): s(t, G) where t ∈ G, -inf elsewhere (and for forbidden singletons)."""
        out = np.full((len(groups), self.n), -np.inf)
        for g, members in enumerate(groups):
            idx = list(members)
            if len(idx) == 1:
                if self.objective.allow_singletons:
                    out[g, idx[0]] = self.objective.singleton_value
                continue
            sub = self.Z[np.ix_(idx, idx)]
            out[g, idx] = sub.sum(0) / (len(idx) - 1)
        return out

    def per_task(self, groups: Sequence[Sequence[int]]) -> np.ndarray:
        """Each task's served score: its best score over the chosen groups that contain it."""
        served: np.ndarray = self.score_matrix(groups).max(0)
        return served

    def serving(self, groups: Sequence[Sequence[int]]) -> tuple[int, ...]:
        """For each task, the index (into ``groups``) of the group that serves it (first on ties)."""
        return tuple(int(i) for i in self.score_matrix(groups).argmax(0))

    def value(self, groups: Sequence[Sequence[int]]) -> float:
        """Σ_t served score (-inf if a task is uncovered or only in a forbidden singleton)."""
        return float(self.per_task(groups).sum())

    def cost(self, groups: Sequence[Sequence[int]]) -> float:
        return float(sum(self.objective.cost(len(g)) for g in groups))

    def violations(self, groups: Sequence[Sequence[int]]) -> list[str]:
        """What ``groups`` breaks (empty list: a feasible solution)."""
        out = []
        o = self.objective
        if not groups:
            return ["no group"]
        if len(groups) > self.k:
            out.append(f"{len(groups)} groups > k={self.k}")
        sets = [frozenset(g) for g in groups]
        if len(set(sets)) != len(sets):
            out.append("a group appears twice")
        if any(not g for g in sets):
            out.append("an empty group")
        covered = set().union(*sets)
        if covered != set(range(self.n)):
            out.append(f"tasks not covered: {[self.names[i] for i in sorted(set(range(self.n)) - covered)]}")
        if o.variant == "partition" and sum(map(len, sets)) != len(covered):
            out.append("groups overlap in the partition variant")
        if not o.allow_singletons and any(len(g) == 1 for g in sets):
            out.append("a singleton group while singletons='forbid'")
        if o.budget is not None and self.cost(groups) > o.budget + 1e-9:
            out.append(f"cost {self.cost(groups):g} > budget {o.budget:g}")
        return out

    def upper_bound(self) -> float:
        """Σ_t of the best score task t could get anywhere: max over j of Z[j, t] (a mean never
        exceeds its largest term), or ``singleton_value`` when singletons are allowed."""
        if self.n == 1:
            return self.objective.singleton_value
        off = np.where(np.eye(self.n, dtype=bool), -np.inf, self.Z)
        best = off.max(0)
        if self.objective.allow_singletons:
            best = np.maximum(best, self.objective.singleton_value)
        return float(best.sum())

    def objective_stderr(self, groups: Sequence[Sequence[int]]) -> float:
        """Standard error of :meth:`value` from the entries' standard errors (0 without them)."""
        if self.stderr is None:
            return 0.0
        serve = self.serving(groups)
        var = 0.0
        for t, g in enumerate(serve):
            others = [j for j in groups[g] if j != t]
            if others:
                var += float((self.stderr[others, t] ** 2).sum()) / len(others) ** 2
        return math.sqrt(var)

    def permuted(self, order: Sequence[int]) -> GroupingProblem:
        """The same problem with tasks reordered: new task i is old task ``order[i]``."""
        idx = list(order)
        se = None if self.stderr is None else self.stderr[np.ix_(idx, idx)]
        return GroupingProblem.from_array(self.Z[np.ix_(idx, idx)], [self.names[i] for i in idx],
                                          k=self.k, objective=self.objective, stderr=se)


def as_problem(matrix: Any, *, names: Sequence[str] | None = None, k: int | None = None,
               objective: Objective | None = None) -> GroupingProblem:
    """A :class:`GroupingProblem` from an :class:`~taskgraph.affinity.AffinityMatrix`, a
    :class:`GroupingProblem` (k/objective replaced when given), or a plain (n, n) array with ``names``.

    Raises:
        GroupingError: see :meth:`GroupingProblem.from_array`; also ``names`` that do not
            match an AffinityMatrix's.
    """
    if isinstance(matrix, GroupingProblem):
        return GroupingProblem.from_array(matrix.Z, matrix.names, k=k or matrix.k,
                                          objective=objective or matrix.objective, stderr=matrix.stderr)
    if hasattr(matrix, "mean") and hasattr(matrix, "names") and not isinstance(matrix, np.ndarray):
        if names is not None and tuple(names) != tuple(matrix.names):
            raise GroupingError(f"names must match the affinity matrix's: matrix has {list(matrix.names)}, "
                                f"got {list(names)}")
        return GroupingProblem.from_array(matrix.mean, matrix.names, k=k, objective=objective,
                                          stderr=getattr(matrix, "stderr", None))
    return GroupingProblem.from_array(matrix, names, k=k, objective=objective)
