"""Property tests (hypothesis): every task served, no empty group, k and budget respected,
permuting the tasks permutes the answer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskgraph.exceptions import GroupingError
from taskgraph.grouping import ExactSolver, GroupingProblem, HierarchySolver, Objective, ScalableSolver

SOLVERS = {"exact": ExactSolver(), "scalable": ScalableSolver(restarts=2, kicks=1), "hierarchy": HierarchySolver()}


@st.composite
def problems(draw, max_n: int = 7):
    n = draw(st.integers(2, max_n))
    k = draw(st.integers(1, n))
    seed = draw(st.integers(0, 2**31 - 1))
    variant = draw(st.sampled_from(["overlap", "partition"]))
    singletons = draw(st.sampled_from(["forbid", "allow"]))
    budget = draw(st.one_of(st.none(), st.sampled_from([1.0, 1.5, 2.0, 3.0])))
    singleton_cost = draw(st.sampled_from([0.5, 1.0]))
    objective = Objective(variant=variant, singletons=singletons, budget=budget, singleton_cost=singleton_cost,
                          singleton_value=draw(st.sampled_from([0.0, -0.3, 0.3])))
    Z = np.random.default_rng(seed).normal(size=(n, n))
    try:
        return GroupingProblem.from_array(Z, [f"task{i}" for i in range(n)], k=k, objective=objective)
    except GroupingError:  # an infeasible budget: covered by the bad-input tests
        return GroupingProblem.from_array(Z, [f"task{i}" for i in range(n)], k=k)


def _check_feasible(p: GroupingProblem, g) -> None:
    o = p.objective
    assert g.groups and all(len(grp) >= 1 for grp in g.groups)  # no empty group
    assert set().union(*map(set, g.groups)) == set(p.names)  # every task served...
    for t in p.names:
        assert t in g.serving_group(t)  # ...by a group that holds it
    assert g.n_groups <= p.k
    if o.budget is not None:
        assert g.cost <= o.budget + 1e-9
    if o.variant == "partition":
        assert sum(map(len, g.groups)) == p.n
    if not o.allow_singletons:
        assert all(len(grp) >= 2 for grp in g.groups)
    assert g.score == pytest.approx(p.value(g.index_groups()), abs=1e-9)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems())
def test_every_solution_is_feasible(name, p):
    found = SOLVERS[name].solve(p, top_m=3)
    assert 1 <= len(found) <= 3  # a solver returns at least one grouping or raises
    for g in found:
        _check_feasible(p, g)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems(), perm_seed=st.integers(0, 2**31 - 1))
def test_permuting_tasks_permutes_the_answer(p, perm_seed):
    order = np.random.default_rng(perm_seed).permutation(p.n)
    q = p.permuted(order)
    a = ExactSolver().solve(p, top_m=2)
    b = ExactSolver().solve(q, top_m=2)
    assert a[0].score == pytest.approx(b[0].score, abs=1e-9)
    unique = len(a) == 1 or a[1].score < a[0].score - 1e-7
    if unique:  # the same groups, by name, whatever the task order
        assert a[0].key() == b[0].key()
        assert {t: set(a[0].serving_group(t)) for t in p.names} == {t: set(b[0].serving_group(t)) for t in p.names}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems(max_n=6))
def test_more_groups_never_hurt(p):
    """'At most k groups': the optimum is non-decreasing in k."""
    scores = []
    for k in range(1, p.n + 1):
        try:
            q = GroupingProblem.from_array(p.Z, p.names, k=k, objective=p.objective)
        except GroupingError:
            continue
        scores.append(ExactSolver().solve(q)[0].score)
    assert all(b >= a - 1e-9 for a, b in zip(scores, scores[1:]))


@settings(max_examples=20, deadline=None)
@given(p=problems(max_n=6))
def test_upper_bound_holds(p):
    g = ExactSolver().solve(p)[0]
    assert p.upper_bound() >= g.score - 1e-9
    assert g.bound >= g.score - 1e-9
