"""Bad input gives a clear GroupingError (what must hold, what was found, where)."""

from __future__ import annotations

import numpy as np
import pytest

from taskgraph.affinity import AffinityMatrix
from taskgraph.exceptions import GroupingError, TaskGraphError, UnknownNameError
from taskgraph.grouping import Grouping, Objective, group_tasks, hierarchy, make_solver

Z3 = np.array([[0.0, 0.3, -0.2], [0.1, 0.0, -0.1], [-0.4, -0.3, 0.0]])
NAMES = ("a", "b", "c")


def test_non_square_matrix():
    with pytest.raises(GroupingError, match=r"must be square.*\(2, 3\)"):
        group_tasks(np.zeros((2, 3)), names=("a", "b"))


def test_names_count_mismatch():
    with pytest.raises(GroupingError, match="3 rows/columns but 2 names"):
        group_tasks(Z3, names=("a", "b"), k=2)


def test_names_mismatch_with_affinity_matrix():
    m = AffinityMatrix.from_samples(NAMES, np.stack([Z3, Z3]))
    with pytest.raises(GroupingError, match="names must match the affinity matrix"):
        group_tasks(m, names=("a", "b", "x"), k=2)


def test_duplicate_names():
    with pytest.raises(GroupingError, match=r"unique.*\['a'\]"):
        group_tasks(Z3, names=("a", "a", "c"), k=2)


def test_nan_entry_names_the_pair():
    Z = Z3.copy()
    Z[2, 0] = np.nan
    with pytest.raises(GroupingError, match=r"finite.*'c' -> 'a'"):
        group_tasks(Z, names=NAMES, k=2)


def test_nan_on_the_diagonal_is_ignored():
    Z = Z3.copy()
    np.fill_diagonal(Z, np.nan)
    assert group_tasks(Z, names=NAMES, k=2)[0].score == pytest.approx(
        group_tasks(Z3, names=NAMES, k=2)[0].score)


@pytest.mark.parametrize("k", [0, -1, 4])
def test_k_out_of_range(k):
    with pytest.raises(GroupingError, match=rf"1 <= k <= n must hold.*k={k} with n=3"):
        group_tasks(Z3, names=NAMES, k=k)


def test_k_not_an_int():
    with pytest.raises(GroupingError, match="must be an int"):
        group_tasks(Z3, names=NAMES, k=2.5)


def test_infeasible_budget():
    with pytest.raises(GroupingError, match=r"budget must be >= 1.*got budget=0.5"):
        group_tasks(Z3, names=NAMES, k=2, budget=0.5)


def test_budget_feasible_with_cheap_singletons():
    g = group_tasks(Z3, names=NAMES, k=3, budget=1.5, singletons="allow", singleton_cost=0.5)[0]
    assert g.cost <= 1.5


def test_single_task_with_forbidden_singletons():
    with pytest.raises(GroupingError, match="singletons='forbid'"):
        group_tasks(np.zeros((1, 1)), names=("a",))


@pytest.mark.parametrize("bad", [dict(variant="tree"), dict(singletons="maybe"), dict(group_cost=0),
                                 dict(budget=-1.0), dict(singleton_value=float("nan"))])
def test_objective_rejects_bad_values(bad):
    (key,) = bad
    with pytest.raises(GroupingError, match=f"Objective: '{key}' must be"):
        Objective(**bad)


def test_unknown_solver_lists_valid_ones():
    with pytest.raises(UnknownNameError, match="valid: brute, exact, hierarchy, scalable"):
        group_tasks(Z3, names=NAMES, k=2, solver="simplex")
    with pytest.raises(GroupingError, match="bad parameters"):
        make_solver("exact", colour="red")


def test_top_m_must_be_positive():
    with pytest.raises(GroupingError, match="top_m"):
        group_tasks(Z3, names=NAMES, k=2, top_m=0)


def test_exact_refuses_too_many_tasks():
    with pytest.raises(GroupingError, match="at most max_tasks=22.*scalable"):
        group_tasks(np.zeros((23, 23)), k=2, solver="exact")


def test_brute_refuses_huge_enumerations():
    with pytest.raises(GroupingError, match="max_combinations"):
        group_tasks(np.zeros((12, 12)), k=4, solver="brute")


@pytest.mark.parametrize("groups, match", [
    ([("a", "b")], "not served: \\['c'\\]"),
    ([("a", "b"), ("b", "c")], "partition variant needs disjoint"),
    ([("a", "x"), ("b", "c")], "unknown task"),
    ([("a",), ("b", "c")], "singletons='forbid'"),
    ([("a", "b"), ("a", "b"), ("c", "a")], "distinct"),
])
def test_invalid_groupings(groups, match):
    with pytest.raises(GroupingError, match=match):
        Grouping(names=NAMES, groups=groups, score=0.0, objective=Objective(variant="partition"))


def test_grouping_from_bad_json():
    with pytest.raises(GroupingError, match="missing key 'groups'"):
        Grouping.from_dict({"names": ["a"], "score": 0})
    with pytest.raises(GroupingError, match="cannot be parsed"):
        Grouping.from_json("{")


def test_errors_share_the_root():
    with pytest.raises(TaskGraphError, match="hierarchy: 'method' must be one of average, .*got 'ward-ish'"):
        hierarchy(Z3, names=NAMES, method="ward-ish")
    with pytest.raises(TaskGraphError, match="1 <= k <= n must hold to cut the tree, got k=5 with n=3"):
        hierarchy(Z3, names=NAMES).cut(5)
