"""The exact solver's optimum equals TAG-style brute force on random matrices (n <= 9)."""

from __future__ import annotations

import numpy as np
import pytest

from taskgraph.grouping import BruteForceSolver, ExactSolver, GroupingProblem, Objective, ScalableSolver

TOL = 1e-9

# (n, k, objective) cases; each runs on several random matrices
CASES = [
    (5, 2, Objective()),
    (6, 3, Objective()),
    (7, 3, Objective()),
    (6, 3, Objective(singletons="allow", singleton_value=0.0)),
    (6, 2, Objective(variant="partition")),
    (7, 3, Objective(variant="partition")),
    (7, 4, Objective(variant="partition", singletons="allow", singleton_value=0.1)),
    (6, 3, Objective(budget=2.0)),
    (6, 3, Objective(singletons="allow", singleton_value=-0.2, budget=2.0, singleton_cost=0.5)),
    (7, 4, Objective(variant="partition", singletons="allow", budget=2.5, singleton_cost=0.5)),
    (6, 3, Objective(singletons="allow", singleton_value=0.5, budget=1.5, singleton_cost=0.5)),
]


def _problems(seed: int, n: int, k: int, objective: Objective, count: int = 4):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield GroupingProblem.from_array(rng.normal(size=(n, n)), k=k, objective=objective)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("cg", [False, True], ids=["full-milp", "column-generation"])
def test_exact_equals_brute_force(case, cg):
    n, k, objective = CASES[case]
    exact = ExactSolver(full_milp_tasks=0 if cg else 12)
    for p in _problems(case, n, k, objective):
        brute = BruteForceSolver().solve(p)[0]
        best = exact.solve(p)[0]
        assert best.score == pytest.approx(brute.score, abs=TOL)
        assert best.optimal and not p.violations(best.index_groups())
        assert best.bound >= best.score - TOL
        # a heuristic never beats the optimum
        assert ScalableSolver(restarts=2, kicks=1).solve(p)[0].score <= brute.score + TOL


@pytest.mark.parametrize("case", [4, 5, 6, 9])
def test_partition_top_m_equals_brute_force_ranking(case):
    """For partitions, distinct solutions are distinct groupings: the whole top-5 must match."""
    n, k, objective = CASES[case]
    for p in _problems(100 + case, n, k, objective, count=2):
        brute = [g.score for g in BruteForceSolver().solve(p, top_m=5)]
        for exact in (ExactSolver(), ExactSolver(full_milp_tasks=0)):
            assert [g.score for g in exact.solve(p, top_m=5)] == pytest.approx(brute, abs=TOL)


@pytest.mark.parametrize("case", [1, 3, 7])
def test_overlap_top_m_is_ranked_and_never_beats_brute_force(case):
    """Overlap top-m lists canonical groupings (served sets with their best helpers): sorted, distinct,
    feasible, the first optimal, and the i-th never above brute force's i-th."""
    n, k, objective = CASES[case]
    for p in _problems(200 + case, n, k, objective, count=2):
        brute = [g.score for g in BruteForceSolver().solve(p, top_m=4)]
        top = ExactSolver().solve(p, top_m=4)
        scores = [g.score for g in top]
        assert scores == sorted(scores, reverse=True)
        assert len({g.key() for g in top}) == len(top)
        assert scores[0] == pytest.approx(brute[0], abs=TOL)
        for mine, ref in zip(scores, brute):
            assert mine <= ref + TOL
        assert all(not p.violations(g.index_groups()) for g in top)


@pytest.mark.slow
def test_nine_tasks_three_groups_tag_setting():
    """TAG's setting: n = 9, k = 3 (about 2.2e7 combinations for brute force)."""
    rng = np.random.default_rng(9)
    p = GroupingProblem.from_array(rng.normal(size=(9, 9)), k=3)
    assert ExactSolver().solve(p)[0].score == pytest.approx(BruteForceSolver().solve(p)[0].score, abs=TOL)
