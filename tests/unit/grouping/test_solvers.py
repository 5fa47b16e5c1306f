"""Solvers, the hierarchy, k selection and the Grouping value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskgraph.affinity import AffinityMatrix
from taskgraph.grouping import (
    SOLVERS,
    ExactSolver,
    Grouping,
    GroupingProblem,
    Objective,
    ScalableSolver,
    choose_k,
    group_tasks,
    hierarchy,
)
from taskgraph.grouping.exact import SolveStats


def planted(n: int, c: int, seed: int, noise: float = 0.2, within: float = 0.5, across: float = -0.3):
    """Block matrix: positive within planted clusters, negative across, plus noise."""
    rng = np.random.default_rng(seed)
    lab = np.arange(n) * c // n
    Z = np.where(lab[:, None] == lab[None, :], within, across) + noise * rng.normal(size=(n, n))
    return Z, lab


def test_registry_holds_every_solver():
    assert SOLVERS.names() == ["brute", "exact", "hierarchy", "scalable"]


def test_exact_on_twenty_tasks_recovers_planted_blocks_with_a_proof():
    Z, lab = planted(20, 4, seed=0)
    p = GroupingProblem.from_array(Z, k=4, objective=Objective(variant="partition"))
    groups, stats = ExactSolver().solve_with_stats(p)
    best = groups[0]
    assert isinstance(stats, SolveStats) and stats.lp_bound is not None and stats.cg_iterations >= 1
    assert best.optimal and best.score <= stats.lp_bound + 1e-9
    assert sorted(best.labels()) == sorted(lab.tolist()) and len(set(best.labels())) == 4
    assert {frozenset(np.nonzero(lab == c)[0]) for c in range(4)} == {frozenset(g) for g in best.index_groups()}


@pytest.mark.parametrize("variant", ["overlap", "partition"])
def test_scalable_recovers_planted_blocks_at_sixty_tasks(variant):
    from sklearn.metrics import adjusted_rand_score

    Z, lab = planted(60, 6, seed=1)
    g = group_tasks(Z, k=6, variant=variant, solver="scalable", seed=0)[0]
    assert adjusted_rand_score(lab, g.labels()) == 1.0
    assert g.bound >= g.score and 0 <= g.gap < 1


def test_scalable_is_deterministic_for_a_seed():
    Z = np.random.default_rng(3).normal(size=(30, 30))
    p = GroupingProblem.from_array(Z, k=4)
    assert ScalableSolver(seed=5).solve(p)[0] == ScalableSolver(seed=5).solve(p)[0]


def test_top_m_is_sorted_and_distinct_for_every_solver():
    Z, _ = planted(8, 2, seed=2, noise=0.4)
    for solver in SOLVERS.names():
        top = group_tasks(Z, k=3, solver=solver, top_m=4)
        scores = [g.score for g in top]
        assert scores == sorted(scores, reverse=True), solver
        assert len({g.key() for g in top}) == len(top), solver


def test_overlap_lets_a_helper_serve_two_groups():
    """Task h helps a and b, which hurt each other: the best 2 groups share h."""
    Z = np.array([
        # a     b     h
        [0.0, -1.0, 0.0],  # a → ...
        [-1.0, 0.0, 0.0],  # b → ...
        [0.8, 0.8, 0.0],  # h → a, h → b
    ])
    best = group_tasks(Z, names=("a", "b", "h"), k=2)[0]
    assert best.groups == (("a", "h"), ("b", "h"))
    assert best.serving_group("a") == ("a", "h") and best.serving_group("b") == ("b", "h")
    assert best.score == pytest.approx(1.6)
    part = group_tasks(Z, names=("a", "b", "h"), k=2, variant="partition", singletons="allow")[0]
    assert part.score < best.score


def test_singletons_and_budget_change_the_answer():
    Z = np.array([[0.0, 0.5, -0.9], [0.5, 0.0, -0.9], [-0.9, -0.9, 0.0]])
    names = ("a", "b", "c")
    # c hurts and is hurt: forbidden singletons force it into a group
    forbid = group_tasks(Z, names=names, k=2, variant="partition")[0]
    allow = group_tasks(Z, names=names, k=2, variant="partition", singletons="allow")[0]
    assert ("c",) in allow.groups and allow.score == pytest.approx(1.0)
    assert forbid.score < allow.score
    # a budget of one network leaves only the all-in-one model
    one = group_tasks(Z, names=names, k=2, variant="partition", singletons="allow", budget=1.0)[0]
    assert one.groups == (("a", "b", "c"),)
    # a half-price single-task network fits in 1.5
    cheap = group_tasks(Z, names=names, k=2, variant="partition", singletons="allow", budget=1.5,
                        singleton_cost=0.5)[0]
    assert cheap.groups == (("a", "b"), ("c",)) and cheap.cost == 1.5


def test_choose_k_finds_the_planted_number_of_clusters():
    Z, _ = planted(9, 3, seed=4, noise=0.1)
    choice = choose_k(Z, k_max=6, variant="partition")
    assert choice.k == 3
    assert list(choice.scores) == sorted(choice.scores)
    g = group_tasks(Z, variant="partition")[0]  # k=None chooses the same way
    assert g.n_groups == 3


def test_choose_k_uses_the_matrix_uncertainty():
    Z, _ = planted(8, 2, seed=5, noise=0.05)
    rng = np.random.default_rng(0)
    noisy = AffinityMatrix.from_samples(tuple(f"t{i}" for i in range(8)), Z + rng.normal(0, 3.0, (6, 8, 8)))
    precise = AffinityMatrix.from_samples(tuple(f"t{i}" for i in range(8)), Z + rng.normal(0, 0.01, (6, 8, 8)))
    assert choose_k(precise, k_max=4, gain_tolerance=0.0).k >= choose_k(noisy, k_max=4, gain_tolerance=0.0).k
    assert choose_k(noisy, k_max=4, gain_tolerance=0.0).stderrs[0] > 0


def test_hierarchy_cuts_and_tree():
    Z, lab = planted(9, 3, seed=6, noise=0.05)
    tree = hierarchy(Z)
    assert tree.cut(3).index_groups() == [tuple(np.nonzero(lab == c)[0]) for c in range(3)]
    levels = tree.levels()
    assert [g.n_groups for g in levels] == list(range(1, 10))
    g = tree.as_networkx()
    assert g.number_of_nodes() == 17 and len(g.nodes[16]["members"]) == 9
    nested = tree.nested()
    assert isinstance(nested, tuple) and len(nested) == 2
    assert json.loads(json.dumps(tree.to_dict()))["method"] == "average"


def test_grouping_json_round_trip(tmp_path):
    Z, _ = planted(7, 2, seed=7)
    for g in group_tasks(Z, k=3, top_m=3) + group_tasks(Z, k=3, variant="partition", singletons="allow"):
        again = Grouping.from_json(g.to_json())
        assert again == g and again.serving == g.serving and again.objective == g.objective
        assert Grouping.load(g.save(tmp_path / "g.json")) == g


def test_grouping_is_immutable_and_canonical():
    p = GroupingProblem.from_array(np.zeros((3, 3)), ("a", "b", "c"), k=2)
    g1 = Grouping.from_indices(p, [(2, 1), (0, 1)])
    g2 = Grouping.from_indices(p, [(0, 1), (1, 2)])
    assert g1 == g2 and g1.groups == (("a", "b"), ("b", "c"))
    with pytest.raises(AttributeError, match="cannot assign to field 'score'"):
        g1.score = 3.0  # type: ignore[misc]


def test_grouping_picture_is_a_png(tmp_path):
    Z, _ = planted(6, 2, seed=8)
    m = AffinityMatrix.from_samples(tuple(f"t{i}" for i in range(6)), np.stack([Z, Z + 0.01]))
    g = group_tasks(m, k=2)[0]
    path = tmp_path / "g.png"
    g.plot(m, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tree_png = tmp_path / "tree.png"
    hierarchy(m).plot(tree_png)
    assert tree_png.read_bytes()[:4] == b"\x89PNG"
