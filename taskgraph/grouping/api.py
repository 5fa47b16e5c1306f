"""One call from an affinity matrix to ranked groupings: :func:`group_tasks`, and :func:`choose_k`.

Example:
    >>> import numpy as np
    >>> Z = np.array([[0, .9, -.5, -.5], [.9, 0, -.5, -.5], [-.5, -.5, 0, .8], [-.5, -.5, .8, 0]])
    >>> best, second = group_tasks(Z, names=("a", "b", "c", "d"), k=2, variant="partition", top_m=2)
    >>> best.groups, round(best.score, 6), best.optimal
    ((('a', 'b'), ('c', 'd')), 3.4, True)
    >>> second.score < best.score
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskgraph.exceptions import GroupingError
from taskgraph.grouping.base import GroupingSolver, check_top_m, make_solver
from taskgraph.grouping.objective import GroupingProblem, Objective, as_problem
from taskgraph.grouping.value import Grouping

__all__ = ["AUTO_EXACT_MAX_TASKS", "KChoice", "choose_k", "group_tasks", "resolve_solver"]

#: ``solver="auto"`` uses the exact solver up to this many tasks, the scalable one beyond.
AUTO_EXACT_MAX_TASKS = 20


def resolve_solver(solver: str | GroupingSolver, n: int, **params: Any) -> GroupingSolver:
    """A solver instance from a name (``"auto"``: exact up to 20 tasks, else scalable) or an instance."""
    if isinstance(solver, GroupingSolver):
        if params:
            raise GroupingError(f"solver parameters {sorted(params)} need a solver name, not an instance")
        return solver
    if solver == "auto":
        solver = "exact" if n <= AUTO_EXACT_MAX_TASKS else "scalable"
    return make_solver(solver, **params)


@dataclass(frozen=True)
class KChoice:
    """How k was chosen: the best score at each k and the rule's threshold.

    Attributes:
        k: the chosen number of groups.
        ks: the k values tried (1..k_max).
        scores: the best score found at each k (non-decreasing: "at most k" groups).
        stderrs: the standard error of each of those scores (0 without matrix stderr).
        rule: the rule, in words.
    """

    k: int
    ks: tuple[int, ...]
    scores: tuple[float, ...]
    stderrs: tuple[float, ...]
    rule: str


def choose_k(matrix, *, k_max: int | None = None, variant: str = "overlap", solver: str | GroupingSolver = "auto",
             gain_tolerance: float = 0.1, z: float = 1.0, names: Sequence[str] | None = None,
             objective: Objective | None = None, **solver_params: Any) -> KChoice:
    """Choose the number of groups: the elbow of the best score against k, up to noise.

    With "at most k groups" the best score S(k) never falls as k grows, so the largest
    k always "wins"; each group costs a network, though. The rule: solve for every k
    from 1 to ``k_max`` (default ``min(n, 8)``) and take the smallest k such that every
    further group adds at most ``max(gain_tolerance · (S(k_max) - S(1)), z · SE)``: a
    small share of the whole gain grouping can bring, or less than ``z`` standard
    errors of the larger solution's score (SE from the matrix's per-entry standard
    errors, when it has them).

    Args:
        matrix: AffinityMatrix, problem or array (with ``names``).
        k_max: the largest k tried.
        variant: ``"overlap"`` or ``"partition"`` (ignored when ``objective`` is given).
        solver: solver name or instance.
        gain_tolerance: the share of the whole gain below which one more group is not worth it.
        z: how many standard errors count as noise.

    Returns:
        A :class:`KChoice`.

    Raises:
        GroupingError: bad matrix, k_max outside [1, n], negative tolerances.
    """
    objective = objective or Objective(variant=variant)
    base = as_problem(matrix, names=names, objective=objective, k=1 if objective.budget is None else None)
    n = base.n
    k_max = min(n, 8) if k_max is None else k_max
    if isinstance(k_max, bool) or not isinstance(k_max, int) or not 1 <= k_max <= n:
        raise GroupingError(f"1 <= k_max <= n must hold, got k_max={k_max!r} with n={n}")
    if gain_tolerance < 0 or z < 0:
        raise GroupingError(f"gain_tolerance >= 0 and z >= 0 must hold, got {gain_tolerance}, {z}")
    slv = resolve_solver(solver, n, **solver_params)
    scores, ses = [], []
    ks = []
    for k in range(1, k_max + 1):
        try:
            problem = as_problem(base, k=k)
        except GroupingError:  # e.g. a budget no k-group cover meets: skip this k
            continue
        best = slv.solve(problem)[0]
        ks.append(k)
        scores.append(best.score)
        ses.append(problem.objective_stderr(best.index_groups()))
    if not ks:
        raise GroupingError("choose_k: no k in [1, k_max] admits a feasible grouping")
    total = scores[-1] - scores[0]
    chosen = ks[-1]
    # walk down from k_max while every further step gains little
    for i in range(len(ks) - 2, -1, -1):
        step = scores[i + 1] - scores[i]
        if step <= max(gain_tolerance * total, z * ses[i + 1]) + 1e-12 * (1 + abs(scores[-1])):
            chosen = ks[i]
        else:
            break
    rule = (f"smallest k such that every further group gains <= max({gain_tolerance:g}·(S({ks[-1]}) - S({ks[0]})), "
            f"{z:g}·SE)")
    return KChoice(chosen, tuple(ks), tuple(scores), tuple(ses), rule)


def group_tasks(
    matrix,
    *,
    k: int | None = None,
    variant: str = "overlap",
    solver: str | GroupingSolver = "auto",
    top_m: int = 1,
    singletons: str = "forbid",
    singleton_value: float = 0.0,
    budget: float | None = None,
    group_cost: float = 1.0,
    singleton_cost: float = 1.0,
    names: Sequence[str] | None = None,
    **solver_params: Any,
) -> list[Grouping]:
    """Rank groupings of the tasks of an affinity matrix by TAG's serving score.

    Args:
        matrix: an :class:`~taskgraph.affinity.AffinityMatrix` (``mean[j, t]`` = Z_{j→t}),
            a :class:`~taskgraph.grouping.objective.GroupingProblem`, or an (n, n) array with ``names``.
        k: the most groups; None chooses it with :func:`choose_k` (the smallest k after which
            each further group, up to ``min(n, 8)``, adds under 10% of the whole gain or one
            standard error).
        variant: ``"overlap"`` (TAG: a task may be in several groups, served by its best)
            or ``"partition"``.
        solver: ``"auto"`` (exact up to 20 tasks, else scalable), ``"exact"``, ``"brute"``,
            ``"scalable"``, ``"hierarchy"``, or a solver instance.
        top_m: how many distinct groupings to return, best first.
        singletons: ``"forbid"`` (TAG) or ``"allow"`` (a lone task scores ``singleton_value``).
        singleton_value: the score of a lone task when allowed.
        budget: total network cost allowed (None: no budget); ``group_cost`` per group of
            >= 2 tasks, ``singleton_cost`` per lone-task network (Standley et al. 2020).
        names: task names for a plain array.
        **solver_params: passed to the solver's constructor (e.g. ``seed``, ``time_limit``).

    Returns:
        Up to ``top_m`` :class:`~taskgraph.grouping.value.Grouping` values, best first
        (fewer when fewer distinct feasible groupings exist).

    Raises:
        GroupingError: a non-square matrix, names that do not match, NaN entries,
            k < 1 or k > n, an infeasible budget, bad parameters.
        UnknownNameError: an unknown solver name (the message lists the valid ones).
    """
    check_top_m(top_m)
    objective = Objective(variant=variant, singletons=singletons, singleton_value=singleton_value,
                          budget=budget, group_cost=group_cost, singleton_cost=singleton_cost)
    problem = as_problem(matrix, names=names, k=k, objective=objective)  # validates (k=None → n)
    slv = resolve_solver(solver, problem.n, **solver_params)
    if k is None:
        k = choose_k(problem, objective=objective, solver=slv).k
        problem = as_problem(problem, k=k)
    out = slv.solve(problem, top_m=top_m)
    if not out:
        raise GroupingError("no feasible grouping was found")
    for g in out:
        if not math.isfinite(g.score):
            raise GroupingError(f"solver {slv.name!r} returned a grouping with a non-finite score")
    return out


def _problem(matrix, **kw) -> GroupingProblem:
    return as_problem(matrix, **kw)
