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

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from taskgraph.exceptions import GroupingError
from taskgraph.grouping.base import GroupingSolver, check_top_m, make_solver
from taskgraph.grouping.exact import ExactSolver
from taskgraph.grouping.objective import GroupingProblem, Objective, as_problem
from taskgraph.grouping.scalable import ScalableSolver
from taskgraph.grouping.value import Grouping

__all__ = ["AUTO_EXACT_MAX_TASKS", "KChoice", "choose_k", "default_k_max", "group_tasks", "resolve_solver"]

#: ``solver="auto"`` uses the exact solver up to this many tasks, the scalable one beyond.
AUTO_EXACT_MAX_TASKS = 20


def resolve_solver(solver: str | GroupingSolver, n: int, **params: Any) -> GroupingSolver:
    """A solver instance from a name (``"auto"``: exact up to 20 tasks, else scalable) or an instance.

    With ``"auto"`` the parameters go to whichever solver it picks, less those that solver does not
    take (``fallback`` is the exact solver's alone; ``time_limit`` both take), so one set of settings
    serves either. A named solver gets them all: a parameter it does not take is a GroupingError.

    Example:
        >>> resolve_solver("auto", 30, time_limit=5.0, fallback="scalable").time_limit
        5.0
    """
    if isinstance(solver, GroupingSolver):
        if params:
            raise GroupingError(f"solver parameters {sorted(params)} need a solver name, not an instance")
        return solver
    if solver == "auto":
        cls = ExactSolver if n <= AUTO_EXACT_MAX_TASKS else ScalableSolver
        solver = cls.name
        taken = inspect.signature(cls).parameters
        params = {k: v for k, v in params.items() if k in taken}
    return make_solver(solver, **params)


def default_k_max(n: int) -> int:
    """The largest k :func:`choose_k` tries by default: ``min(n, max(8, ceil(2·√n)))``.

    Twice √n (and at least 8, the bound before): room for √n clusters of √n tasks
    each and for the curve to flatten after them, at one solve per k. Pass ``k_max``
    for more clusters than that.
    """
    return min(n, max(8, math.ceil(2 * math.sqrt(n))))


@dataclass(frozen=True)
class KChoice:
    """How k was chosen: the best score at each k, its noise, and the rule.

    Attributes:
        k: the chosen number of groups.
        ks: the k values tried (1..k_max, less any no grouping can meet).
        scores: the best score found at each k (non-decreasing: "at most k" groups).
        stderrs: the standard error of each of those scores (0 without matrix stderr).
        rule: the rule, in words.
        noise: the best score at each k on a matrix of pure noise with the same
            standard errors (all 0 without matrix stderr): what fitting noise alone gains.
    """

    k: int
    ks: tuple[int, ...]
    scores: tuple[float, ...]
    stderrs: tuple[float, ...]
    rule: str
    noise: tuple[float, ...] = ()


def _curve(base: GroupingProblem, ks: Sequence[int], slv: GroupingSolver) -> tuple[list[float], list[float]]:
    """Best score and its standard error at each k.

    Solved from the largest k down; the scalable solver also starts from the grouping
    found at the next larger k, merged down (so a cluster found at k + 1 is not lost at
    k by an unlucky start). Then a running maximum upwards: a grouping into at most k
    groups is one into at most k + 1.
    """
    found: dict[int, tuple[float, float]] = {}
    warm: list[np.ndarray] = []
    for k in reversed(ks):
        problem = as_problem(base, k=k)
        best = (slv.solve(problem, starts=warm) if isinstance(slv, ScalableSolver) else slv.solve(problem))[0]
        found[k] = (best.score, problem.objective_stderr(best.index_groups()))
        warm = [np.asarray(best.labels())]
    scores: list[float] = []
    ses: list[float] = []
    for k in ks:
        s, se = found[k]
        if scores and scores[-1] >= s:
            s, se = scores[-1], ses[-1]
        scores.append(s)
        ses.append(se)
    return scores, ses


def _null_problem(base: GroupingProblem, seed: int) -> GroupingProblem | None:
    """The same problem on a matrix of pure noise with the entries' standard errors (None without them)."""
    if base.stderr is None:
        return None
    se = np.nan_to_num(np.asarray(base.stderr, float), nan=0.0, posinf=0.0)
    if not (se > 0).any():
        return None
    Z0 = np.random.default_rng(seed).normal(size=se.shape) * se
    return GroupingProblem.from_array(Z0, base.names, k=base.k, objective=base.objective, stderr=se)


#: the scalable solver's settings for the k curve (one solve per k): lighter than its defaults,
#: which then solve once more at the chosen k.
_CURVE_SCALABLE = {"restarts": 3, "kicks": 1, "recombine": 1}


def _curve_solver(solver: str | GroupingSolver, n: int, solver_params: dict[str, Any]) -> GroupingSolver:
    if isinstance(solver, GroupingSolver) or solver_params:
        return resolve_solver(solver, n, **solver_params)
    if solver == "scalable" or (solver == "auto" and n > AUTO_EXACT_MAX_TASKS):
        return make_solver("scalable", **_CURVE_SCALABLE)
    return resolve_solver(solver, n)


def choose_k(matrix: Any, *, k_max: int | None = None, variant: str = "overlap", solver: str | GroupingSolver = "auto",
             gain_tolerance: float = 0.1, z: float = 1.0, names: Sequence[str] | None = None,
             objective: Objective | None = None, seed: int = 0, **solver_params: Any) -> KChoice:
    """Choose the number of groups: where the gain of one more group drops most sharply, above noise.

    With "at most k groups" the best score S(k) never falls as k grows, so the largest
    k always "wins"; each group costs a network, though. Clusters show as an elbow:
    each group up to the number of clusters separates one and gains much, each group
    after it only splits a cluster and gains little. The rule: solve for every k from
    1 to ``k_max`` (default :func:`default_k_max`, ``min(n, max(8, ceil(2·√n)))``),
    let Δ(k) = S(k + 1) − S(k) be the gain of the (k + 1)-th group and

        floor(k) = max(N(k + 1) − N(k) + z · SE(k + 1),  gain_tolerance · max Δ)

    the gain that counts as nothing: what the same solver gains by fitting pure noise,
    N, on a matrix drawn with the entries' standard errors (a gap statistic after
    Tibshirani, Walther and Hastie, 2001), plus ``z`` standard errors of the larger
    solution's score, or a small share of the largest gain. Then k is the elbow,

        k = argmax Δ(k − 1) / max(Δ(k), floor(k))  over the k < k_max with Δ(k − 1) > floor(k − 1),

    the sharpest drop in the gain of one more group (the ratio is free of the scale of
    the affinities, of n and of k_max); k = 1 when no group gains more than its floor.
    A fixed share of the whole gain (the rule before) cannot scale: at 100 tasks in 10
    clusters each cluster's group brings a tenth of it. Without per-entry standard
    errors (a plain array) N and SE are 0 and the floor is the share of the largest gain.

    Args:
        matrix: AffinityMatrix, problem or array (with ``names``).
        k_max: the largest k tried.
        variant: ``"overlap"`` or ``"partition"`` (ignored when ``objective`` is given).
        solver: solver name or instance. By name, beyond 20 tasks the curve is solved
            by the scalable solver with lighter settings (3 restarts, 1 kick) than its
            defaults; pass ``solver_params`` or an instance to choose them.
        gain_tolerance: the share of the largest gain of one group below which a gain
            counts as nothing.
        z: how many standard errors count as noise.
        seed: seed of the noise matrix.

    Returns:
        A :class:`KChoice`.

    Raises:
        GroupingError: bad matrix, k_max outside [1, n], negative tolerances.

    Example:
        >>> import numpy as np
        >>> blocks = np.kron(np.eye(3), np.ones((3, 3))) - 0.5  # 3 clusters of 3 tasks
        >>> choose_k(blocks + np.random.default_rng(0).normal(0, 0.05, (9, 9)), variant="partition").k
        3
    """
    objective = objective or Objective(variant=variant)
    base = as_problem(matrix, names=names, objective=objective, k=1 if objective.budget is None else None)
    n = base.n
    k_max = default_k_max(n) if k_max is None else k_max
    if isinstance(k_max, bool) or not isinstance(k_max, int) or not 1 <= k_max <= n:
        raise GroupingError(f"1 <= k_max <= n must hold, got k_max={k_max!r} with n={n}")
    if not (gain_tolerance >= 0 and z >= 0):
        raise GroupingError(f"gain_tolerance >= 0 and z >= 0 must hold, got gain_tolerance={gain_tolerance}, z={z}")
    ks = []
    for k in range(1, k_max + 1):
        try:
            as_problem(base, k=k)
        except GroupingError:  # e.g. a budget no k-group cover meets: skip this k
            continue
        ks.append(k)
    if not ks:
        raise GroupingError(f"choose_k: some k in [1, {k_max}] must admit a feasible grouping, none does")
    slv = _curve_solver(solver, n, solver_params)
    scores, ses = _curve(base, ks, slv)
    null = _null_problem(base, seed)
    if null is not None and len(ks) > 1:
        # an estimate of what noise-fitting gains: the light scalable solver is near-optimal
        # there and spares the exact solver its slowest case (a matrix without structure)
        noise = _curve(null, ks, slv if isinstance(slv, ScalableSolver) else ScalableSolver(**_CURVE_SCALABLE))[0]
    else:
        noise = [0.0] * len(ks)
    chosen = _elbow(ks, scores, ses, noise, gain_tolerance, z)
    rule = (f"k maximising gain(k-1)/max(gain(k), floor) for k <= {ks[-1]}, floor = max(noise gain + {z:g}·SE, "
            f"{gain_tolerance:g}·largest gain); 1 when no gain exceeds its floor")
    return KChoice(chosen, tuple(ks), tuple(float(s) for s in scores), tuple(float(s) for s in ses), rule,
                   tuple(float(s) for s in noise))


def _elbow(ks: Sequence[int], scores: Sequence[float], ses: Sequence[float], noise: Sequence[float],
           gain_tolerance: float, z: float) -> int:
    """The k after which the gain of one more group drops most sharply (see :func:`choose_k`)."""
    gain = np.diff(np.asarray(scores, float))
    if gain.size == 0:
        return ks[0]
    floor = np.maximum(np.diff(np.asarray(noise, float)), 0.0) + z * np.asarray(ses[1:], float)
    floor = np.maximum(floor, gain_tolerance * gain.max()) + 1e-12 * (1 + abs(scores[-1]))
    real = gain > floor
    if not real.any():
        return ks[0]
    if len(ks) == 2:
        return ks[1]
    ratio = np.full(len(ks), -np.inf)
    for i in range(1, len(ks) - 1):  # candidate ks[i]: its own group was real, the next one's gain is compared
        if real[i - 1]:
            ratio[i] = gain[i - 1] / max(gain[i], floor[i])
    return ks[int(np.argmax(ratio))]


def group_tasks(
    matrix: Any,
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
        k: the most groups; None chooses it with :func:`choose_k` (the elbow of the best
            score against k, up to ``min(n, max(8, ceil(2·√n)))``: where the gain of one more
            group drops most sharply, counting gains no larger than fitting noise as none).
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
        **solver_params: passed to the solver's constructor (e.g. ``seed``, ``time_limit``; with
            ``solver="auto"`` only those the chosen solver takes). The exact solver's
            ``time_limit`` (default 120 s) falls back to the scalable solver unless
            ``fallback="raise"``: its groupings then carry the bound proven so far
            (``bound - score`` is the gap) and ``optimal=False`` unless they reach it.

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
        k = choose_k(problem, objective=objective, solver=solver, **solver_params).k
        problem = as_problem(problem, k=k)
    out = slv.solve(problem, top_m=top_m)
    if not out:
        raise GroupingError("no feasible grouping was found")
    for g in out:
        if not math.isfinite(g.score):
            raise GroupingError(f"solver {slv.name!r} returned a grouping with a non-finite score")
    return out

