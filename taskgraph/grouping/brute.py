"""Brute force, TAG's way: score every combination of at most k candidate groups.

TAG (Fifty et al., NeurIPS 2021) selects groups by enumerating every
combination of at most k groups out of all 2^n - n - 1 candidate groups and
keeping the best served score; at n = 9, k = 3 that is about 2.2·10^7
combinations. This module does the same enumeration, vectorised with numpy
(the last two groups of each combination are scored as one array operation),
as the reference the exact solver is tested against. The partition variant
enumerates set partitions into at most k blocks instead.

A combination with an *idle* group (one that serves no task better than the
others do) is skipped: dropping that group gives the same score with fewer
networks, so it is not a distinct alternative.

Example:
    >>> import numpy as np
    >>> from taskgraph.grouping.objective import GroupingProblem
    >>> Z = np.random.default_rng(0).normal(size=(5, 5))
    >>> best = BruteForceSolver().solve(GroupingProblem.from_array(Z, k=2))[0]
    >>> best.optimal, len(best.groups) <= 2
    (True, True)
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator, Sequence
from math import comb
from typing import Any

import numpy as np

from taskgraph.exceptions import GroupingError
from taskgraph.grouping.base import SOLVERS, GroupingSolver, check_top_m
from taskgraph.grouping.columns import mask_of
from taskgraph.grouping.objective import GroupingProblem
from taskgraph.grouping.value import Grouping

__all__ = ["BruteForceSolver", "candidate_groups", "set_partitions"]

_TOL = 1e-12


def candidate_groups(problem: GroupingProblem) -> list[tuple[int, ...]]:
    """Every group the objective admits: all subsets of >= 2 tasks, plus singletons when allowed."""
    n = problem.n
    lo = 1 if problem.objective.allow_singletons else 2
    return [g for r in range(lo, n + 1) for g in itertools.combinations(range(n), r)]


def set_partitions(n: int, max_blocks: int) -> Iterator[list[tuple[int, ...]]]:
    """Every partition of ``range(n)`` into at most ``max_blocks`` blocks (restricted growth strings)."""
    labels = [0] * n

    def rec(i: int, used: int) -> Iterator[list[tuple[int, ...]]]:
        if i == n:
            blocks: list[list[int]] = [[] for _ in range(used)]
            for t, b in enumerate(labels):
                blocks[b].append(t)
            yield [tuple(b) for b in blocks]
            return
        for b in range(min(used + 1, max_blocks)):
            labels[i] = b
            yield from rec(i + 1, max(used, b + 1))

    if n == 0:
        return
    labels[0] = 0
    yield from rec(1, 1)


def _constant(combo: tuple[Any, ...]) -> Callable[[int], tuple[Any, ...]]:
    """``combos`` for :meth:`_Top.push_many` when every value has the same combination."""
    return lambda _i: combo


class _Top:
    """Keeps the m best (value, combination) pairs seen."""

    def __init__(self, m: int):
        self.m = m
        self.heap: list[tuple[float, int, tuple[Any, ...]]] = []
        self._n = 0

    def threshold(self) -> float:
        return self.heap[0][0] if len(self.heap) == self.m else -np.inf

    def push_many(self, values: np.ndarray, combos: Callable[[int], tuple[Any, ...]]) -> None:
        """``combos(i)`` gives the combination of ``values[i]``."""
        if values.size == 0:
            return
        th = self.threshold()
        idx = np.nonzero(values > th + _TOL if len(self.heap) == self.m else np.isfinite(values))[0]
        if idx.size > self.m:
            idx = idx[np.argpartition(-values[idx], self.m - 1)[: self.m]]
        for i in idx:
            item = (float(values[i]), -self._n, combos(int(i)))
            self._n += 1
            if len(self.heap) < self.m:
                heapq.heappush(self.heap, item)
            elif item[0] > self.heap[0][0] + _TOL:
                heapq.heapreplace(self.heap, item)

    def best(self) -> list[tuple[float, Sequence[Any]]]:
        return [(v, c) for v, _, c in sorted(self.heap, key=lambda x: (-x[0], -x[1]))]


@SOLVERS.decorator("brute")
class BruteForceSolver(GroupingSolver):
    """Exhaustive enumeration (TAG's network selection), vectorised; the reference for tests.

    Args:
        max_combinations: refuse problems with more combinations than this (n = 9, k = 3
            has about 2.2·10^7 and takes about a second).

    Raises (from :meth:`solve`):
        GroupingError: more combinations than ``max_combinations``.
    """

    name = "brute"

    def __init__(self, max_combinations: int = 100_000_000):
        if max_combinations < 1:
            raise GroupingError(f"BruteForceSolver: 'max_combinations' must be >= 1, got {max_combinations}")
        self.max_combinations = int(max_combinations)

    def solve(self, problem: GroupingProblem, *, top_m: int = 1) -> list[Grouping]:
        check_top_m(top_m)
        if problem.objective.variant == "partition":
            found = self._partition(problem, top_m)
        else:
            found = self._overlap(problem, top_m)
        if not found:
            raise GroupingError("brute force found no feasible grouping (check k, budget and singletons)")
        out = []
        for rank, (_, groups) in enumerate(found):
            out.append(Grouping.from_indices(problem, groups, solver=self.name, optimal=rank == 0,
                                             bound=found[0][0]))
        return out

    # -------------------------------------------------------- partition
    def _partition(self, problem: GroupingProblem, top_m: int) -> list[tuple[float, Sequence[Any]]]:
        n, o = problem.n, problem.objective
        # Stirling numbers bound the count; Bell(n) is a safe over-estimate
        bell = [1]
        for _ in range(n):
            row = [bell[-1]]
            for v in bell:
                row.append(row[-1] + v)
            bell = row
        if bell[0] > self.max_combinations:
            raise GroupingError(f"brute force: about {bell[0]:,} partitions of {n} tasks exceed "
                                f"max_combinations={self.max_combinations:,}; use the 'exact' solver")
        cache: dict[int, float] = {}

        def block_value(b: tuple[int, ...]) -> float:
            m = mask_of(b)
            if m not in cache:
                cache[m] = float(problem.score_matrix([b]).max(0)[list(b)].sum())
            return cache[m]

        top = _Top(top_m)
        for blocks in set_partitions(n, problem.k):
            if o.budget is not None and problem.cost(blocks) > o.budget + 1e-9:
                continue
            total = sum(block_value(b) for b in blocks)
            if np.isfinite(total):
                top.push_many(np.array([total]), _constant(tuple(blocks)))
        return top.best()

    # ---------------------------------------------------------- overlap
    def _overlap(self, problem: GroupingProblem, top_m: int) -> list[tuple[float, Sequence[Any]]]:
        o = problem.objective
        groups = candidate_groups(problem)
        G = len(groups)
        total = sum(comb(G, r) for r in range(1, problem.k + 1))
        if total > self.max_combinations:
            raise GroupingError(f"brute force: {total:,} combinations of <= {problem.k} groups out of {G} "
                                f"exceed max_combinations={self.max_combinations:,}; use the 'exact' solver")
        P = problem.score_matrix(groups)
        cost = np.array([o.cost(len(g)) for g in groups])
        budget = np.inf if o.budget is None else o.budget + 1e-9
        top = _Top(top_m)

        def finish(served: np.ndarray, used_ok: np.ndarray, costs: np.ndarray,
                   combos: Callable[[int], tuple[Any, ...]]) -> None:
            vals = served.sum(1)
            ok = used_ok & np.isfinite(vals)
            if budget < np.inf:
                ok &= costs <= budget
            top.push_many(np.where(ok, vals, -np.inf), combos)

        # one group
        finish(P, np.ones(G, bool), cost, lambda i: (i,))
        if problem.k >= 2:
            iu, ju = np.triu_indices(G, 1)
            P_i, P_j = P[iu], P[ju]
            pair_max = np.maximum(P_i, P_j)
            pair_cost = cost[iu] + cost[ju]
            first = np.searchsorted(iu, np.arange(G + 1))  # pairs with iu >= s start at first[s]
            check_idle = top_m > 1  # an idle group never changes the best score, only the ranking

            def serves(rows: np.ndarray, served: np.ndarray) -> np.ndarray:
                return np.asarray((rows >= served - _TOL).any(-1))

            def rec(prefix: tuple[int, ...], pmax: np.ndarray | None, pcost: float, start: int, r: int) -> None:
                if r == 2:
                    s = first[start]
                    if s >= len(iu):
                        return
                    served = np.maximum(pmax, pair_max[s:]) if pmax is not None else pair_max[s:]
                    if check_idle:
                        ok = serves(P_i[s:], served) & serves(P_j[s:], served)
                        for g in prefix:
                            ok &= serves(P[g], served)
                    else:
                        ok = np.ones(len(served), bool)

                    def combo(i: int, s: int = s) -> tuple[int, ...]:
                        return (*prefix, int(iu[s + i]), int(ju[s + i]))

                    finish(served, ok, pcost + pair_cost[s:], combo)
                    return
                for i in range(start, G - r + 1):
                    m = P[i] if pmax is None else np.maximum(pmax, P[i])
                    rec((*prefix, i), m, pcost + cost[i], i + 1, r - 1)

            for r in range(2, problem.k + 1):
                rec((), None, 0.0, 0, r)
        return [(v, [groups[i] for i in c]) for v, c in top.best()]
