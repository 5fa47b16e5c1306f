"""Exact grouping: set partitioning over served sets, column generation and a MILP (HiGHS).

Every solution of the serving objective is a partition of the tasks into at
most k *served sets*, each served by its best group (see
:mod:`taskgraph.grouping.columns`). With one binary x_S per served set S::

    max Σ_S v(S) x_S   s.t.  Σ_{S ∋ t} x_S = 1  (each task served once),
                             Σ_S x_S <= k,   Σ_S cost(S) x_S <= budget.

The partition variant is the same model with v(S) = the value of group S
itself. All 2^n - 1 values are computed in one vectorised pass. Small problems
(up to 12 tasks) go to ``scipy.optimize.milp`` (HiGHS) whole. Larger ones solve
the LP relaxation by column generation (HiGHS LP on the columns found so far;
the pricing scans all 2^n reduced costs in a vectorised pass), which gives an
upper bound UB and duals. Any integer solution of value >= L uses only columns
whose reduced cost is >= L - UB, so the MILP runs on those columns alone and
its optimum is provably the global one. The same argument, with L the m-th
best value found, makes the top-m list exact (distinct solutions are
enumerated with no-good cuts).

Standley et al. (ICML 2020) solve their network-selection problem by
branch-and-bound; TAG (Fifty et al., NeurIPS 2021) by enumeration. The
set-partitioning view and column generation are the standard exact method for
such problems (Barnhart et al., "Branch-and-price", Operations Research 1998).

Example:
    >>> import numpy as np
    >>> from taskgraph.grouping.objective import GroupingProblem
    >>> Z = np.random.default_rng(1).normal(size=(8, 8))
    >>> best = ExactSolver().solve(GroupingProblem.from_array(Z, k=3))[0]
    >>> best.optimal, best.n_groups <= 3
    (True, True)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from taskgraph.exceptions import GroupingError
from taskgraph.grouping.base import SOLVERS, GroupingSolver, check_top_m
from taskgraph.grouping.columns import all_values, best_groups, members, popcount
from taskgraph.grouping.objective import GroupingProblem
from taskgraph.grouping.scalable import ScalableSolver
from taskgraph.grouping.value import Grouping

__all__ = ["FALLBACKS", "ExactSolver", "SolveStats"]

#: what the exact solver does when its time limit ends the search before the optimum is proven
FALLBACKS = ("scalable", "raise")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SolveStats:
    """What the exact solver did (for benchmarks and logs)."""

    n_columns: int
    lp_bound: float | None
    cg_iterations: int
    milp_columns: int
    milp_solves: int
    seconds: float
    #: True when the time limit ended the search and the scalable solver's answer was returned
    timed_out: bool = False
    #: a proven upper bound on the best score when the search was cut short (None: none known)
    bound: float | None = None
    #: ``bound - best score`` after a fallback (0 when the optimum was proven; None: no bound known)
    gap: float | None = None


class _TimeUp(Exception):
    """The time limit ended the search: what was proven and found until then."""

    def __init__(self, bound: float | None, found: list[tuple[float, list[int]]]):
        super().__init__("time limit")
        self.bound = bound
        self.found = found


@dataclass
class _Columns:
    served: np.ndarray  # int64 bitmask of the served set S
    value: np.ndarray  # v(S) (-inf: not allowed)
    cost: np.ndarray
    n_masks: int  # columns [0, n_masks) are masks 1..2^n-1 in order; then lone-task columns
    Z: np.ndarray
    helpers: bool

    def __len__(self) -> int:
        return len(self.value)

    def group(self, c: int) -> int:
        """The bitmask of column ``c``'s group (its served set plus best helpers)."""
        if c >= self.n_masks or not self.helpers:
            return int(self.served[c])
        return int(best_groups(self.Z, [int(self.served[c])], helpers=True)[1][0])


def _columns(problem: GroupingProblem) -> _Columns:
    n, o = problem.n, problem.objective
    masks = np.arange(1, 1 << n, dtype=np.int64)
    overlap = o.variant == "overlap"
    value = all_values(problem.Z, helpers=overlap)
    single = np.array([1 << t for t in range(n)], dtype=np.int64)
    cost = np.full(len(masks), o.group_cost)
    if not overlap:
        cost[single - 1] = o.singleton_cost
        if o.allow_singletons:
            value[single - 1] = o.singleton_value
    served = masks
    if overlap and o.allow_singletons:  # a lone-task network, beside the "task + helpers" column
        served = np.concatenate([masks, single])
        value = np.concatenate([value, np.full(n, o.singleton_value)])
        cost = np.concatenate([cost, np.full(n, o.singleton_cost)])
    return _Columns(served, value, cost, len(masks), problem.Z, overlap)


def _subset_sums(y: np.ndarray) -> np.ndarray:
    """s[mask - 1] = Σ_{t ∈ mask} y[t] for every mask 1..2^n-1 (doubling, O(2^n))."""
    s = np.zeros(1)
    for v in y:
        s = np.concatenate([s, s + v])
    return s[1:]


@SOLVERS.decorator("exact")
class ExactSolver(GroupingSolver):
    """A provable optimum (and exact top-m) by column generation + MILP (HiGHS), up to ~22 tasks.

    Args:
        max_tasks: refuse larger problems (the column table has 2^n rows; 22 tasks ≈ 4·10^6).
        full_milp_tasks: up to this many tasks the MILP sees every column directly.
        time_limit: seconds the whole solve may take (column generation and every HiGHS MILP
            call share them; None: no limit).
        fallback: what happens when the time limit ends the search before the optimum is
            proven: ``"scalable"`` (default) returns the scalable solver's groupings (merged with
            any the MILP found), marked ``optimal=False`` unless they reach the proven bound, with
            that bound on each grouping (``bound - score`` is the gap; also in
            :class:`SolveStats` and a logged warning); ``"raise"`` raises :class:`GroupingError`.
        columns_per_round: columns added per column-generation round.

    Raises (from :meth:`solve`):
        GroupingError: too many tasks, a time limit hit with ``fallback="raise"``, or no feasible grouping.
    """

    name = "exact"

    def __init__(self, max_tasks: int = 22, full_milp_tasks: int = 12, time_limit: float | None = 120.0,
                 columns_per_round: int = 200, fallback: str = "scalable"):
        if not 1 <= max_tasks <= 26:
            raise GroupingError(f"ExactSolver: 1 <= max_tasks <= 26 must hold, got {max_tasks}")
        if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, int | float)
                                       or not (math.isfinite(time_limit) and time_limit > 0)):
            raise GroupingError(f"ExactSolver: 'time_limit' must be a finite number of seconds > 0 or None, "
                                f"got {time_limit!r}")
        if fallback not in FALLBACKS:
            raise GroupingError(f"ExactSolver: 'fallback' must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
        self.max_tasks = int(max_tasks)
        self.full_milp_tasks = int(full_milp_tasks)
        self.time_limit = None if time_limit is None else float(time_limit)
        self.columns_per_round = int(columns_per_round)
        self.fallback = fallback

    # ---------------------------------------------------------------- API
    def solve(self, problem: GroupingProblem, *, top_m: int = 1) -> list[Grouping]:
        return self.solve_with_stats(problem, top_m=top_m)[0]

    def solve_with_stats(self, problem: GroupingProblem, *, top_m: int = 1) -> tuple[list[Grouping], SolveStats]:
        """:meth:`solve`, plus what it took (columns, LP bound, MILP sizes, seconds)."""
        check_top_m(top_m)
        if problem.n > self.max_tasks:
            raise GroupingError(f"the exact solver handles at most max_tasks={self.max_tasks} tasks, got "
                                f"{problem.n}; use solver='scalable'")
        t0 = time.perf_counter()
        deadline = None if self.time_limit is None else t0 + self.time_limit
        try:
            return self._solve(problem, top_m, t0, deadline)
        except _TimeUp as up:
            if self.fallback == "raise":
                raise GroupingError(f"the exact solver hit its time limit ({self.time_limit:g} s) without a proven "
                                    "optimum; raise time_limit, set fallback='scalable' or use solver='scalable'") \
                    from None
            return self._fall_back(problem, top_m, up, t0)

    def _solve(self, problem: GroupingProblem, top_m: int, t0: float,
               deadline: float | None) -> tuple[list[Grouping], SolveStats]:
        cols = _columns(problem)
        feasible = np.isfinite(cols.value)
        if problem.objective.budget is not None:
            feasible &= cols.cost <= problem.objective.budget + 1e-9
        if problem.n <= self.full_milp_tasks:
            cand = np.nonzero(feasible)[0]
            sols, _, solves = self._top_m(problem, cols, cand, top_m, deadline, proves=True)
            lp_bound, iters = None, 0
        else:
            lp_bound, rc, iters, start_cols = self._column_generation(problem, cols, feasible, deadline)
            scale = 1.0 + abs(lp_bound)
            delta = 1e-3 * scale
            solves = 0
            while True:
                # the heuristic start's columns always join: they hold a feasible integer solution
                cand = np.union1d(np.nonzero(feasible & (rc >= -delta - 1e-7 * scale))[0],
                                  start_cols[feasible[start_cols]])
                try:
                    sols, distinct, s = self._top_m(problem, cols, cand, top_m, deadline, proves=False)
                except _TimeUp as up:  # the LP bound holds whatever the MILP reached
                    raise _TimeUp(lp_bound, up.found) from None
                solves += s
                if distinct == top_m and lp_bound - sols[-1][0] <= delta:
                    break
                if len(cand) == int(feasible.sum()):
                    break
                gap = lp_bound - sols[-1][0] if distinct == top_m else 4 * delta
                delta = max(2 * delta, gap)
        if not sols:
            raise GroupingError("the exact solver found no feasible grouping (check k, budget and singletons)")
        bound = lp_bound if lp_bound is not None else sols[0][0]
        out: dict[frozenset[frozenset[str]], Grouping] = {}
        for rank, (_, chosen) in enumerate(sols):
            groups = [members(cols.group(c)) for c in chosen]
            g = Grouping.from_indices(problem, groups, solver=self.name, bound=max(bound, sols[0][0]),
                                      optimal=rank == 0)
            out.setdefault(g.key(), g)
        ranked = sorted(out.values(), key=lambda g: -g.score)
        best = max(ranked[0].score, sols[0][0])
        ranked = [_with(g, bound=max(bound, best), optimal=abs(g.score - best) <= 1e-9 * (1 + abs(best)))
                  for g in ranked]
        stats = SolveStats(len(cols), lp_bound, iters, len(cand), solves, time.perf_counter() - t0,
                           bound=max(bound, best), gap=0.0)
        return ranked[:top_m], stats

    def _fall_back(self, problem: GroupingProblem, top_m: int, up: _TimeUp,
                   t0: float) -> tuple[list[Grouping], SolveStats]:
        """The scalable solver's groupings (with any the MILP found), carrying the bound proven so far."""
        cols = _columns(problem) if up.found else None
        out: dict[frozenset[frozenset[str]], Grouping] = {}
        for _, chosen in up.found:
            assert cols is not None
            g = Grouping.from_indices(problem, [members(cols.group(c)) for c in chosen], solver=self.name)
            out.setdefault(g.key(), g)
        for g in ScalableSolver(seed=0).solve(problem, top_m=top_m):
            out.setdefault(g.key(), _with(g, solver="scalable (exact solver timed out)"))
        ranked = sorted(out.values(), key=lambda g: -g.score)[:top_m]
        best = ranked[0].score
        bound = None if up.bound is None or not math.isfinite(up.bound) else max(float(up.bound), best)
        tol = 1e-9 * (1 + abs(best))
        ranked = [_with(g, bound=bound, optimal=bound is not None and g.score >= bound - tol) for g in ranked]
        gap = None if bound is None else bound - best
        _log.warning("the exact solver hit its time limit (%g s) without a proven optimum; returning the scalable "
                     "solver's best (score %.6g, %s)", self.time_limit, best,
                     "no bound known" if bound is None else f"bound {bound:.6g}, gap {gap:.3g}")
        stats = SolveStats(0 if cols is None else len(cols), bound, 0, 0, 0, time.perf_counter() - t0, timed_out=True,
                           bound=bound,
                           gap=gap)
        return ranked, stats

    # ------------------------------------------------------------ the LP
    def _column_generation(self, problem: GroupingProblem, cols: _Columns, feasible: np.ndarray,
                           deadline: float | None = None) -> tuple[float, np.ndarray, int, np.ndarray]:
        from scipy.optimize import linprog
        from scipy.sparse import csc_matrix

        n, o = problem.n, problem.objective
        has_budget = o.budget is not None
        # start: a heuristic solution (scalable solver) so the restricted LP is feasible
        start = ScalableSolver(restarts=2, seed=0).solve(problem)[0]
        start_cols = np.array(sorted(set(self._columns_of(problem, cols, start))), dtype=np.int64)
        active = set(start_cols.tolist())
        active |= set(np.nonzero(feasible & (popcount(cols.served) <= 2))[0].tolist())
        penalty = 10.0 * (np.abs(problem.Z).sum() + abs(o.singleton_value) * n + 1.0)
        iters = 0
        while True:
            if deadline is not None and time.perf_counter() > deadline:
                raise _TimeUp(None, [])
            iters += 1
            idx = np.array(sorted(active))
            A_eq = _membership(cols.served[idx], n)
            # artificial columns (one per task, value -penalty) keep the restricted LP feasible
            A_eq = _hstack(A_eq, csc_matrix(np.eye(n)))
            c = np.concatenate([-cols.value[idx], np.full(n, penalty)])
            ub_rows = [np.concatenate([np.ones(len(idx)), np.zeros(n)])]
            b_ub: list[float] = [float(problem.k)]
            if o.budget is not None:
                ub_rows.append(np.concatenate([cols.cost[idx], np.zeros(n)]))
                b_ub.append(o.budget)
            res = linprog(c, A_ub=np.array(ub_rows), b_ub=np.array(b_ub), A_eq=A_eq, b_eq=np.ones(n),
                          bounds=(0, None), method="highs")
            if res.status != 0:
                raise GroupingError(f"the exact solver's LP failed: {res.message}")
            y = res.eqlin.marginals
            yk = res.ineqlin.marginals[0]
            yb = res.ineqlin.marginals[1] if has_budget else 0.0
            rc = np.full(len(cols), -np.inf)
            sums = _subset_sums(y)
            rc[: cols.n_masks] = cols.value[: cols.n_masks] + sums
            if len(cols) > cols.n_masks:
                lone = cols.served[cols.n_masks:]
                rc[cols.n_masks:] = cols.value[cols.n_masks:] + sums[lone - 1]
            rc += yk + yb * cols.cost
            rc[~feasible] = -np.inf
            scale = 1.0 + abs(res.fun)
            new = np.nonzero(rc > 1e-9 * scale)[0]
            new = new[~np.isin(new, idx)]
            if new.size == 0:
                if res.x[len(idx):].max(initial=0.0) > 1e-7:
                    raise GroupingError("the exact solver's LP needs artificial columns: no feasible grouping")
                return float(-res.fun), rc, iters, start_cols
            if new.size > self.columns_per_round:
                new = new[np.argpartition(-rc[new], self.columns_per_round - 1)[: self.columns_per_round]]
            active.update(new.tolist())

    @staticmethod
    def _columns_of(problem: GroupingProblem, cols: _Columns, g: Grouping) -> list[int]:
        """Column indices of a grouping's served sets (each task with its serving group)."""
        blocks: dict[int, int] = {}
        for t, s in enumerate(g.serving):
            blocks[s] = blocks.get(s, 0) | (1 << t)
        out = []
        for s, mask in blocks.items():
            if len(g.groups[s]) == 1 and len(cols) > cols.n_masks:
                out.append(cols.n_masks + int(mask).bit_length() - 1)
            else:
                out.append(mask - 1)
        return out

    # ---------------------------------------------------------- the MILP
    def _top_m(self, problem: GroupingProblem, cols: _Columns, cand: np.ndarray, top_m: int,
               deadline: float | None = None, *,
               proves: bool = False) -> tuple[list[tuple[float, list[int]]], int, int]:
        """Best column solutions over ``cand`` by value, with no-good cuts, until ``top_m`` distinct
        groupings (as sets of groups) are found or none is left.

        Raises:
            _TimeUp: the deadline passed; with ``proves`` (``cand`` holds every feasible column)
                its bound is the first MILP's optimum, or its dual bound when that call was cut short.
        """
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import csr_matrix, vstack

        n, o = problem.n, problem.objective
        if cand.size == 0:
            return [], 0, 0
        A = _membership(cols.served[cand], n).tocsr()
        rows = [LinearConstraint(A, np.ones(n), np.ones(n)),
                LinearConstraint(csr_matrix(np.ones((1, len(cand)))), -np.inf, problem.k)]
        if o.budget is not None:
            rows.append(LinearConstraint(csr_matrix(cols.cost[cand][None, :]), -np.inf, o.budget + 1e-9))
        cuts: list[np.ndarray] = []
        found: list[tuple[float, list[int]]] = []
        keys: set[frozenset[int]] = set()
        solves = 0
        options: dict[str, Any] = {"mip_rel_gap": 0.0, "presolve": True}
        while len(keys) < top_m:
            if deadline is not None:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise _TimeUp(found[0][0] if proves and found else None, found)
                options["time_limit"] = left
            cons = list(rows)
            if cuts:
                C = vstack([csr_matrix(c[None, :]) for c in cuts])
                cons.append(LinearConstraint(C, -np.inf, np.array([c.sum() - 1 for c in cuts])))
            res = milp(-cols.value[cand], constraints=cons, integrality=np.ones(len(cand)),
                       bounds=Bounds(0, 1), options=options)
            solves += 1
            if res.status == 1:  # HiGHS stopped at the time limit, perhaps with an unproven incumbent
                bound = None
                if proves and found:  # the first call finished: its value is the optimum
                    bound = found[0][0]
                elif proves:  # the first call was cut short: HiGHS's dual bound (of the minimisation)
                    dual = getattr(res, "mip_dual_bound", None)
                    bound = -float(dual) if dual is not None and math.isfinite(dual) else None
                if res.x is not None:
                    found.append((float(-res.fun), [int(cand[i]) for i in np.nonzero(res.x > 0.5)[0]]))
                raise _TimeUp(bound, found)
            if res.x is None or res.status != 0:
                break
            chosen = np.nonzero(res.x > 0.5)[0]
            picked = [int(cand[i]) for i in chosen]
            found.append((float(-res.fun), picked))
            keys.add(frozenset(cols.group(c) for c in picked))
            cut = np.zeros(len(cand))
            cut[chosen] = 1.0
            cuts.append(cut)
        return found, len(keys), solves


def _membership(served: np.ndarray, n: int) -> Any:
    """(n, len(served)) sparse 0/1: row t, column c is 1 when task t is in served set c."""
    from scipy.sparse import csc_matrix

    bits = (served[None, :] >> np.arange(n, dtype=np.int64)[:, None]) & 1
    r, c = np.nonzero(bits)
    return csc_matrix((np.ones(len(r)), (r, c)), shape=(n, len(served)))


def _hstack(a: Any, b: Any) -> Any:
    from scipy.sparse import hstack

    return hstack([a, b]).tocsc()


def _with(g: Grouping, **changes: Any) -> Grouping:
    from dataclasses import replace

    return replace(g, **changes)
