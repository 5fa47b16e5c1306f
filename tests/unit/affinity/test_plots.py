"""The affinity pictures: task order, layout groups, errors, and the caller's matplotlib backend left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from taskgraph.affinity import AffinityMatrix
from taskgraph.affinity.plots import cluster_order, heatmap, linkage_groups
from taskgraph.exceptions import AffinityError


def planted(n: int = 9, c: int = 3, seed: int = 0, shuffle: bool = True) -> tuple[AffinityMatrix, list[set[str]]]:
    """Measured-looking samples: within-cluster +0.02, opposed pairs of clusters -0.01; names shuffled."""
    rng = np.random.default_rng(seed)
    lab = np.arange(n) * c // n
    same = lab[:, None] == lab[None, :]
    opposed = (lab[:, None] // 2 == lab[None, :] // 2) & ~same
    mu = 0.02 * same - 0.01 * opposed + 0.05 * np.eye(n)
    names = [f"t{i}" for i in range(n)]
    m = AffinityMatrix.from_samples(tuple(names), mu + rng.normal(0, 0.01, (30, n, n)))
    clusters = [{names[i] for i in range(n) if lab[i] == k} for k in range(c)]
    if shuffle:
        m = m.permuted([names[i] for i in rng.permutation(n)])
    return m, clusters


@pytest.mark.parametrize("seed", range(3))
def test_the_cluster_order_puts_each_planted_cluster_in_one_block(seed):
    m, clusters = planted(12, 4, seed=seed)
    order = cluster_order(m)
    assert sorted(order) == sorted(m.names)
    for cluster in clusters:
        where = sorted(order.index(t) for t in cluster)
        assert where == list(range(where[0], where[0] + len(cluster)))


@pytest.mark.parametrize("seed", range(3))
def test_linkage_groups_are_the_planted_clusters(seed):
    m, clusters = planted(12, 4, seed=seed)
    assert sorted(map(sorted, linkage_groups(m))) == sorted(map(sorted, clusters))


def test_tiny_matrices_have_one_group_per_task():
    m = AffinityMatrix.from_samples(("a", "b"), np.random.default_rng(0).normal(0, 1, (5, 2, 2)))
    assert linkage_groups(m) == (("a",), ("b",)) and cluster_order(m) == ("a", "b")


@pytest.mark.parametrize("kw", [{}, {"order": "given"}, {"order": ["t8", "t7", "t6", "t5", "t4", "t3", "t2", "t1",
                                                                   "t0"]},
                                {"groups": [("t0", "t1", "t2"), ("t3", "t4", "t5")]}, {"annotate": False}])
def test_heatmap_writes_a_png(tmp_path, kw):
    m, _ = planted()
    png = heatmap(m, tmp_path / "h.png", **kw)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_large_heatmap_is_drawn_without_annotations(tmp_path):
    m, clusters = planted(60, 6, seed=1)
    assert heatmap(m, tmp_path / "h.png", groups=[sorted(c) for c in clusters]).stat().st_size > 0


@pytest.mark.parametrize(("kw", "message"), [
    ({"order": "alphabetical"}, "order must be 'cluster', 'given' or a list of the task names, got 'alphabetical'"),
    ({"order": ["t0", "t1"]}, "order must list every task once"),
    ({"groups": [("t0", "zz")]}, r"groups must name tasks of the matrix.*unknown \['zz'\]"),
])
def test_heatmap_refuses_bad_orders_and_groups(tmp_path, kw, message):
    m, _ = planted()
    with pytest.raises(AffinityError, match=message):
        heatmap(m, tmp_path / "h.png", **kw)


def test_the_pictures_leave_the_callers_backend_and_pyplot_alone(tmp_path):
    """Library code must not call matplotlib.use(...) nor import pyplot (issue 15)."""
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import matplotlib
        from taskgraph.affinity import AffinityMatrix
        from taskgraph.graph import TaskGraph
        m = AffinityMatrix.from_samples(("a", "b", "c"), np.random.default_rng(0).normal(0, 1, (9, 3, 3)))
        m.heatmap({str(tmp_path / "h.png")!r})
        TaskGraph.from_affinity(m).draw({str(tmp_path / "g.png")!r})
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """)
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "False"]
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
