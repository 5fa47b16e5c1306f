"""The exact solver's time limit: it falls back to the scalable solver with the bound it proved, or raises."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from taskgraph.exceptions import GroupingError
from taskgraph.grouping import ExactSolver, GroupingProblem, ScalableSolver, group_tasks
from taskgraph.grouping.api import resolve_solver
from taskgraph.grouping.exact import _TimeUp


def _problem(n: int, seed: int = 0, k: int = 3) -> GroupingProblem:
    return GroupingProblem.from_array(np.random.default_rng(seed).normal(size=(n, n)), k=k)


@pytest.mark.parametrize("n", [10, 14], ids=["full-milp", "column-generation"])
def test_a_spent_time_limit_returns_the_scalable_solvers_groupings(n, caplog):
    p = _problem(n)
    with caplog.at_level(logging.WARNING, logger="taskgraph.grouping.exact"):
        got, stats = ExactSolver(time_limit=1e-6).solve_with_stats(p, top_m=3)
    want = ScalableSolver(seed=0).solve(p, top_m=3)
    assert [g.groups for g in got] == [g.groups for g in want]
    assert [g.score for g in got] == pytest.approx([g.score for g in want])
    assert stats.timed_out and all(g.solver == "scalable (exact solver timed out)" for g in got)
    # nothing was proven in a microsecond: no bound, so nothing may claim optimality
    assert stats.bound is None and stats.gap is None
    assert not any(g.optimal for g in got) and all(g.bound is None for g in got)
    assert "hit its time limit (1e-06 s)" in caplog.text and "no bound known" in caplog.text


def test_the_fallback_carries_the_bound_it_proved_and_its_gap():
    """Cut short after column generation, the groupings carry the LP bound (when the cut falls between
    the LP and the proof depends on the machine's speed, so the cut is made by hand here)."""
    p = _problem(16)
    exact, full = ExactSolver(time_limit=None).solve_with_stats(p)
    assert full.lp_bound is not None and full.lp_bound >= exact[0].score - 1e-9
    solver = ExactSolver(time_limit=1.0)
    got, stats = solver._fall_back(p, 2, _TimeUp(full.lp_bound, []), time.perf_counter())
    best = got[0]
    assert stats.timed_out and stats.bound == pytest.approx(max(full.lp_bound, best.score))
    assert stats.gap == pytest.approx(stats.bound - best.score) and stats.gap >= 0
    assert all(g.bound == stats.bound for g in got) and best.score <= exact[0].score + 1e-9
    assert best.optimal == (stats.gap <= 1e-9 * (1 + abs(best.score)))
    assert not got[1].optimal


def test_an_unproven_milp_incumbent_joins_the_fallbacks_candidates():
    """A MILP solution found before the limit is kept when it beats the scalable solver's."""
    p = _problem(10)
    optimum = ExactSolver(time_limit=None).solve(p)[0]
    cols = [int(sum(1 << p.names.index(t) for t in served)) - 1 for served in _served_sets(optimum)]
    got, stats = ExactSolver()._fall_back(p, 1, _TimeUp(None, [(optimum.score, cols)]), time.perf_counter())
    assert got[0].groups == optimum.groups and got[0].solver == "exact" and not got[0].optimal


def _served_sets(g):
    """Each group's tasks it serves (the exact solver's columns)."""
    out: dict[int, list[str]] = {}
    for t, s in zip(g.names, g.serving):
        out.setdefault(s, []).append(t)
    return list(out.values())


def test_fallback_raise_keeps_the_old_error():
    with pytest.raises(GroupingError, match=r"hit its time limit \(1e-06 s\) without a proven optimum"):
        ExactSolver(time_limit=1e-6, fallback="raise").solve(_problem(10))


def test_without_a_time_limit_the_optimum_is_proven():
    got, stats = ExactSolver(time_limit=None).solve_with_stats(_problem(10))
    assert got[0].optimal and not stats.timed_out and stats.gap == 0.0


@pytest.mark.parametrize(("kw", "match"), [
    ({"time_limit": 0}, "'time_limit' must be a finite number of seconds > 0 or None, got 0"),
    ({"time_limit": float("nan")}, "'time_limit' must be a finite number"),
    ({"time_limit": True}, "'time_limit' must be a finite number"),
    ({"fallback": "retry"}, "'fallback' must be one of scalable, raise, got 'retry'"),
])
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(GroupingError, match=match):
        ExactSolver(**kw)


def test_auto_passes_each_solver_only_the_settings_it_takes():
    exact = resolve_solver("auto", 10, time_limit=3.0, fallback="raise")
    assert isinstance(exact, ExactSolver) and (exact.time_limit, exact.fallback) == (3.0, "raise")
    scalable = resolve_solver("auto", 30, time_limit=3.0, fallback="raise")
    assert isinstance(scalable, ScalableSolver) and scalable.time_limit == 3.0
    with pytest.raises(GroupingError, match="bad parameters"):
        resolve_solver("scalable", 30, fallback="raise")


def test_group_tasks_falls_back_instead_of_failing():
    Z = np.random.default_rng(3).normal(size=(14, 14))
    best = group_tasks(Z, names=[f"t{i}" for i in range(14)], k=3, solver="exact", time_limit=1e-6)[0]
    assert best.solver == "scalable (exact solver timed out)" and not best.optimal
