"""TaskGraph: edges and their uncertainty, negative transfer, mutual help, symmetric view, export."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from taskgraph.affinity import AffinityMatrix
from taskgraph.exceptions import AffinityError
from taskgraph.graph import TaskGraph

NAMES = ("a", "b", "c", "d")
# a, b help each other; c hurts a and b and is hurt by them; d is noise around 0
MU = np.array([
    [0.30, 0.20, -0.10, 0.00],
    [0.15, 0.30, -0.12, 0.00],
    [-0.08, -0.09, 0.30, 0.00],
    [0.00, 0.00, 0.00, 0.30],
])


@pytest.fixture(scope="module")
def matrix():
    noise = np.random.default_rng(0).normal(0, 0.02, (20, 4, 4))
    return AffinityMatrix.from_samples(NAMES, MU + np.concatenate([noise, -noise]))  # sample mean == MU


def test_edges_carry_weight_and_ci(matrix):
    g = TaskGraph.from_affinity(matrix)
    assert isinstance(g.graph, nx.DiGraph)
    assert g.graph.number_of_nodes() == 4 and g.graph.number_of_edges() == 12  # no self loops
    e = g.graph.edges["a", "b"]
    i, j = 0, 1
    assert e["weight"] == pytest.approx(matrix.mean[i, j])
    assert e["ci_low"] == pytest.approx(matrix.ci_low[i, j]) and e["ci_high"] == pytest.approx(matrix.ci_high[i, j])
    assert e["n_samples"] == 40 and e["relation"] == "positive"
    assert g.graph.nodes["a"]["self_affinity"] == pytest.approx(matrix.mean[0, 0])
    for _, _, d in g.graph.edges(data=True):
        assert d["ci_low"] <= d["weight"] <= d["ci_high"]


def test_negative_edges_and_mutual_pairs(matrix):
    g = TaskGraph.from_affinity(matrix)
    assert sorted(g.negative_edges()) == [("a", "c"), ("b", "c"), ("c", "a"), ("c", "b")]
    for a, b in g.negative_edges():
        assert g.graph.edges[a, b]["ci_high"] < 0
    assert g.mutual_pairs() == [("a", "b")]
    assert ("a", "b") in g.positive_edges() and ("b", "a") in g.positive_edges()
    # d's edges are noise around zero: uncertain, never claimed either way
    assert all(g.graph.edges[e]["relation"] == "uncertain" for e in g.graph.edges if "d" in e)
    with pytest.raises(AffinityError, match="relation must be"):
        g.edges_with("bad")


def test_symmetric_view_for_clustering(matrix):
    g = TaskGraph.from_affinity(matrix)
    s = g.symmetric()
    np.testing.assert_allclose(s, s.T)
    assert (np.diag(s) == 0).all()
    assert s[0, 1] == pytest.approx((matrix.mean[0, 1] + matrix.mean[1, 0]) / 2)
    u = g.undirected()
    assert isinstance(u, nx.Graph) and u.number_of_edges() == 6
    assert u.edges["a", "b"]["weight"] == pytest.approx(s[0, 1])


def test_missing_entries_give_no_edge():
    samples = np.full((3, 2, 2), 0.1)
    samples[:, 0, 1] = np.nan
    g = TaskGraph.from_affinity(AffinityMatrix.from_samples(("x", "y"), samples))
    assert list(g.graph.edges) == [("y", "x")]
    assert g.symmetric()[0, 1] == pytest.approx(0.1)  # the measured direction stands in


def test_permutation_gives_the_same_graph(matrix):
    g1 = TaskGraph.from_affinity(matrix)
    g2 = TaskGraph.from_affinity(matrix.permuted(["d", "c", "b", "a"]))
    assert nx.utils.graphs_equal(g1.graph, g2.graph) or (
        set(g1.graph.edges) == set(g2.graph.edges)
        and all(g1.graph.edges[e]["weight"] == pytest.approx(g2.graph.edges[e]["weight"]) for e in g1.graph.edges))
    assert sorted(g1.negative_edges()) == sorted(g2.negative_edges())


def test_json_and_graphml_export(tmp_path, matrix):
    g = TaskGraph.from_affinity(matrix)
    p = g.save_json(tmp_path / "g.json")
    d = json.loads(p.read_text())
    assert {e["source"] + e["target"] for e in d["edges"]} >= {"ab", "ca"}
    assert d["mutual_pairs"] == [["a", "b"]]
    back = TaskGraph.load_json(p)
    assert sorted(back.negative_edges()) == sorted(g.negative_edges())
    gm = nx.read_graphml(g.save_graphml(tmp_path / "g.graphml"))
    assert gm.is_directed() and gm.number_of_edges() == 12
    assert float(gm.edges["a", "b"]["weight"]) == pytest.approx(g.graph.edges["a", "b"]["weight"])
    assert gm.edges["a", "c"]["relation"] == "negative"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(AffinityError, match="cannot read a task graph"):
        TaskGraph.load_json(tmp_path / "bad.json")


def test_draw_png(tmp_path, matrix):
    png = TaskGraph.from_affinity(matrix).draw(tmp_path / "g.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bad_input():
    with pytest.raises(AffinityError, match="needs an AffinityMatrix"):
        TaskGraph.from_affinity(np.zeros((2, 2)))


def test_pair_edges_keep_the_pairs_sure_of_their_sign_strongest_first(matrix):
    g = TaskGraph.from_affinity(matrix)
    pairs = g.pair_edges()
    assert [(a, b, rel) for a, b, _, rel in pairs] == [("a", "b", "positive"), ("b", "c", "negative"),
                                                       ("a", "c", "negative")]
    assert pairs[0][2] == pytest.approx((MU[0, 1] + MU[1, 0]) / 2)
    everything = g.pair_edges(uncertain=True)
    assert len(everything) == 6 and {rel for a, b, _, rel in everything if "d" in (a, b)} == {"uncertain"}
    assert [abs(w) for _, _, w, _ in everything] == sorted((abs(w) for _, _, w, _ in everything), reverse=True)


def test_group_layout_sets_groups_apart():
    from taskgraph.graph import _group_layout

    groups = [[f"g{g}t{t}" for t in range(size)] for g, size in enumerate([2, 3, 5, 1, 4, 10])]
    pos, centres, radii = _group_layout(groups)
    xy = {name: np.array(p) for name, p in pos.items()}
    between = min(np.linalg.norm(xy[a] - xy[b]) for i, g in enumerate(groups) for h in groups[i + 1:]
                  for a in g for b in h)
    assert between > 0.4 and all(np.linalg.norm(xy[t] - np.array(centres[i])) <= radii[i] + 1e-9
                                 for i, g in enumerate(groups) for t in g)
    # two neighbouring groups' discs never overlap
    for i in range(len(groups)):
        j = (i + 1) % len(groups)
        assert np.linalg.norm(np.subtract(centres[i], centres[j])) > radii[i] + radii[j] + 0.4


@pytest.mark.parametrize("kw", [{}, {"groups": [("a", "b"), ("c", "d")]}, {"max_edges": 0}, {"uncertain": True}])
def test_draw_options_write_a_png(tmp_path, matrix, kw):
    assert TaskGraph.from_affinity(matrix).draw(tmp_path / "g.png", **kw).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("kw", "message"), [({"groups": [("a", "zz")]}, r"unknown \['zz'\]"),
                                             ({"max_edges": -1}, "max_edges >= 0 must hold, got -1")])
def test_draw_refuses_bad_groups_and_edge_counts(tmp_path, matrix, kw, message):
    with pytest.raises(AffinityError, match=message):
        TaskGraph.from_affinity(matrix).draw(tmp_path / "g.png", **kw)


def test_each_task_keeps_its_strongest_pairs():
    from taskgraph.graph import _strongest_per_task

    pairs = [("a", "b", 0.9, "positive"), ("a", "c", 0.8, "positive"), ("b", "c", 0.7, "positive"),
             ("a", "d", 0.6, "positive"), ("c", "d", -0.1, "negative")]
    # a, b and c have two pairs each by the third; (a, d) still counts as d's first, (c, d) as d's second
    assert _strongest_per_task(pairs, per_task=2) == pairs
    assert _strongest_per_task(pairs, per_task=1) == [pairs[0], pairs[1], pairs[3]]
