"""The :class:`Grouping` value: groups of task names, how each task is served, and the score.

Example:
    >>> import numpy as np
    >>> from taskgraph.grouping.objective import GroupingProblem
    >>> Z = np.array([[0, .3, -.2], [.1, 0, -.1], [-.4, -.3, 0]])
    >>> p = GroupingProblem.from_array(Z, ("a", "b", "c"), k=2)
    >>> g = Grouping.from_indices(p, [(1, 2), (0, 1)], solver="by hand")
    >>> g.groups, round(g.score, 6), g.serving_group("c")
    ((('a', 'b'), ('b', 'c')), 0.3, ('b', 'c'))
    >>> Grouping.from_json(g.to_json()) == g
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskgraph.exceptions import GroupingError
from taskgraph.grouping.objective import GroupingProblem, Objective, as_problem
from taskgraph.grouping.plot import plot_grouping

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Grouping"]


@dataclass(frozen=True)
class Grouping:
    """An immutable, validated grouping of tasks with its serving score.

    Groups are stored canonically (members in task order, groups sorted), so two
    equal groupings compare equal whatever solver produced them.

    Attributes:
        names: all task names (the matrix's order).
        groups: the groups, each a tuple of task names.
        score: the objective value: Σ over tasks of each task's served score.
        objective: the variant, singleton policy and budget it was scored under.
        serving: for each task of ``names``, the index in ``groups`` of the group that serves it.
        task_scores: for each task of ``names``, its served score.
        solver: the solver that found it.
        bound: an upper bound on the best score, when the solver knows one.
        optimal: True when the solver proved the score optimal.

    Raises:
        GroupingError: empty or unknown names, a task in no group, an empty or repeated
            group, overlapping groups in the partition variant, a forbidden singleton,
            a serving group that does not hold its task, or a non-finite score.
    """

    names: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    score: float
    objective: Objective = field(default_factory=Objective)
    serving: tuple[int, ...] = ()
    task_scores: tuple[float, ...] = ()
    solver: str = ""
    bound: float | None = None
    optimal: bool = False

    def __post_init__(self) -> None:
        names = tuple(self.names)
        index = {x: i for i, x in enumerate(names)}
        if not names or len(index) != len(names):
            raise GroupingError(f"Grouping: names must be unique and non-empty, got {list(names)}")
        groups = [tuple(g) for g in self.groups]
        if not groups:
            raise GroupingError("Grouping: at least one group is needed, got none")
        for g in groups:
            if not g:
                raise GroupingError("Grouping: every group must hold a task, found an empty group")
            unknown = [x for x in g if x not in index]
            if unknown:
                raise GroupingError(f"Grouping: group {list(g)} names unknown task(s) {unknown}; "
                                    f"known tasks: {', '.join(names)}")
            if len(set(g)) != len(g):
                raise GroupingError(f"Grouping: a task appears twice in group {list(g)}")
        sets = [frozenset(g) for g in groups]
        if len(set(sets)) != len(sets):
            raise GroupingError(f"Grouping: groups must be distinct, got {[list(g) for g in groups]}")
        missing = [x for x in names if not any(x in s for s in sets)]
        if missing:
            raise GroupingError(f"Grouping: every task must be in a group; not served: {missing}")
        obj = self.objective
        if obj.variant == "partition" and sum(map(len, sets)) != len(names):
            twice = sorted({x for x in names if sum(x in s for s in sets) > 1}, key=index.__getitem__)
            raise GroupingError(f"Grouping: the partition variant needs disjoint groups; "
                                f"task(s) {twice} are in several")
        if not obj.allow_singletons:
            lone = [g for g in groups if len(g) == 1]
            if lone:
                raise GroupingError(f"Grouping: singleton group(s) {[list(g) for g in lone]} while "
                                    "singletons='forbid'")
        if not math.isfinite(self.score):
            raise GroupingError(f"Grouping: the score must be finite, got {self.score}")
        # canonical order: members by task index, groups by their member indices
        keyed = sorted(range(len(groups)), key=lambda i: tuple(sorted(index[x] for x in groups[i])))
        canon = tuple(tuple(sorted(groups[i], key=index.__getitem__)) for i in keyed)
        serving = tuple(self.serving)
        if serving:
            if len(serving) != len(names):
                raise GroupingError(f"Grouping: 'serving' needs one group index per task ({len(names)}), "
                                    f"got {len(serving)}")
            new_pos = {old: new for new, old in enumerate(keyed)}
            try:
                serving = tuple(new_pos[int(s)] for s in serving)
            except KeyError:
                raise GroupingError(f"Grouping: 'serving' indices must be in [0, {len(groups)}), "
                                    f"got {list(self.serving)}") from None
            for t, s in zip(names, serving):
                if t not in canon[s]:
                    raise GroupingError(f"Grouping: task {t!r} is served by group {list(canon[s])}, "
                                        "which does not hold it")
        if self.task_scores and len(self.task_scores) != len(names):
            raise GroupingError(f"Grouping: 'task_scores' needs one value per task ({len(names)}), "
                                f"got {len(self.task_scores)}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "groups", canon)
        object.__setattr__(self, "serving", serving)
        object.__setattr__(self, "task_scores", tuple(float(v) for v in self.task_scores))
        object.__setattr__(self, "score", float(self.score))

    # ------------------------------------------------------------ building
    @classmethod
    def from_indices(cls, problem: GroupingProblem, groups: Sequence[Sequence[int]], *, solver: str = "",
                     bound: float | None = None, optimal: bool = False) -> Grouping:
        """Score index groups under ``problem`` and build the validated value.

        Raises:
            GroupingError: ``groups`` break the problem's constraints (k, budget, cover, ...).
        """
        groups = sorted({tuple(sorted(int(i) for i in g)) for g in groups})  # canonical: ties serve alike
        bad = problem.violations(groups)
        if bad:
            raise GroupingError(f"Grouping: infeasible for this problem: {'; '.join(bad)}")
        per = problem.per_task(groups)
        return cls(
            names=problem.names,
            groups=tuple(tuple(problem.names[i] for i in g) for g in groups),
            score=float(per.sum()),
            objective=problem.objective,
            serving=problem.serving(groups),
            task_scores=tuple(float(v) for v in per),
            solver=solver,
            bound=bound,
            optimal=optimal,
        )

    @classmethod
    def from_groups(cls, matrix: Any, groups: Sequence[Sequence[str]], *, k: int | None = None,
                    objective: Objective | None = None, solver: str = "given") -> Grouping:
        """Score named groups against an affinity matrix (AffinityMatrix, problem, or array+names).

        Raises:
            GroupingError: unknown names or an infeasible grouping.
        """
        problem = as_problem(matrix, k=k or len(groups) if groups else None, objective=objective)
        index = {x: i for i, x in enumerate(problem.names)}
        unknown = sorted({x for g in groups for x in g if x not in index})
        if unknown:
            raise GroupingError(f"Grouping: unknown task(s) {unknown}; known tasks: {', '.join(problem.names)}")
        return cls.from_indices(problem, [[index[x] for x in g] for g in groups], solver=solver)

    # ------------------------------------------------------------- reading
    @property
    def variant(self) -> str:
        return self.objective.variant

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def cost(self) -> float:
        return float(sum(self.objective.cost(len(g)) for g in self.groups))

    @property
    def gap(self) -> float | None:
        """Relative gap to ``bound``: (bound - score) / max(|bound|, 1e-12); None without a bound."""
        if self.bound is None:
            return None
        return max(0.0, (self.bound - self.score) / max(abs(self.bound), 1e-12))

    def _index(self, task: str) -> int:
        try:
            return self.names.index(task)
        except ValueError:
            raise GroupingError(f"unknown task {task!r}; tasks: {', '.join(self.names)}") from None

    def serving_group(self, task: str) -> tuple[str, ...]:
        """The group whose network serves ``task`` (its best group)."""
        i = self._index(task)
        if not self.serving:
            return next(g for g in self.groups if task in g)
        return self.groups[self.serving[i]]

    def groups_of(self, task: str) -> tuple[tuple[str, ...], ...]:
        """Every group that holds ``task`` (several only in the overlap variant)."""
        self._index(task)
        return tuple(g for g in self.groups if task in g)

    def task_score(self, task: str) -> float:
        return self.task_scores[self._index(task)]

    def labels(self) -> tuple[int, ...]:
        """Each task's serving group index: a flat clustering (e.g. for the adjusted Rand index)."""
        if self.serving:
            return self.serving
        return tuple(next(i for i, g in enumerate(self.groups) if t in g) for t in self.names)

    def key(self) -> frozenset[frozenset[str]]:
        """Identity of the grouping as a set of groups (what "distinct groupings" compares)."""
        return frozenset(frozenset(g) for g in self.groups)

    def index_groups(self) -> list[tuple[int, ...]]:
        index = {x: i for i, x in enumerate(self.names)}
        return [tuple(index[x] for x in g) for g in self.groups]

    # ----------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "groups": [list(g) for g in self.groups],
            "score": self.score,
            "objective": self.objective.to_dict(),
            "serving": list(self.serving),
            "task_scores": list(self.task_scores),
            "solver": self.solver,
            "bound": self.bound,
            "optimal": self.optimal,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Grouping:
        """Inverse of :meth:`to_dict`.

        Raises:
            GroupingError: a missing key or invalid content.
        """
        try:
            return cls(
                names=tuple(d["names"]),
                groups=tuple(tuple(g) for g in d["groups"]),
                score=float(d["score"]),
                objective=Objective.from_dict(d.get("objective", {})),
                serving=tuple(d.get("serving", ())),
                task_scores=tuple(d.get("task_scores", ())),
                solver=str(d.get("solver", "")),
                bound=None if d.get("bound") is None else float(d["bound"]),
                optimal=bool(d.get("optimal", False)),
            )
        except KeyError as e:
            raise GroupingError(f"grouping data is missing key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, GroupingError):
                raise
            raise GroupingError(f"grouping data is malformed: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Grouping:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise GroupingError(f"grouping JSON cannot be parsed: {e}") from None

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p

    @classmethod
    def load(cls, path: str | Path) -> Grouping:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise GroupingError(f"cannot read a grouping from {p}: {e}") from None
        try:
            return cls.from_json(text)
        except GroupingError as e:
            raise GroupingError(f"{p}: {e}") from None

    def plot(self, matrix: Any, path: str | Path | None = None, *, title: str | None = None,
             seed: int = 0) -> Figure:
        """Draw the groups coloured on the task graph; write a PNG when ``path`` is given.

        Returns the matplotlib Figure (Agg backend). See :func:`taskgraph.grouping.plot.plot_grouping`.
        """
        return plot_grouping(self, matrix, path, title=title, seed=seed)

    def __str__(self) -> str:
        body = " | ".join("{" + ", ".join(g) + "}" for g in self.groups)
        return f"{body}  (score {self.score:.4g}, {self.variant})"
