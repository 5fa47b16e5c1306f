"""``taskgraph affinity`` as a real subprocess."""

from __future__ import annotations

import json

import pytest

from taskgraph.affinity import AffinityMatrix

pytestmark = pytest.mark.integration


def test_affinity_command_prints_matrix_and_writes_pictures(cli, tmp_path):
    out = tmp_path / "out"
    r = cli("affinity", "planted-clusters", "-o", "n_tasks=4", "-o", "n_clusters=2", "-o", "n_samples=600",
                "--steps", "20", "--every", "2", "--hidden", "32", "--optimizer", "sgd", "--lr", "0.05",
                "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "Z(i→j)" in r.stdout and "negative transfer" in r.stdout
    for name in ("t0", "t1", "t2", "t3"):
        assert name in r.stdout
    for f in ("heatmap.png", "graph.png", "affinity.json", "graph.json", "graph.graphml"):
        assert (out / f).stat().st_size > 0, f
    m = AffinityMatrix.load(out / "affinity.json")
    assert m.names == ("t0", "t1", "t2", "t3") and int(m.n_samples.max()) == 10
    assert m.schedule["every"] == 2
    assert json.loads((out / "graph.json").read_text())["matrix"]["names"] == list(m.names)
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_affinity_command_unknown_estimator(cli, tmp_path):
    r = cli("affinity", "planted-clusters", "--estimator", "tag", "--out", str(tmp_path))
    assert r.returncode == 2 and r.stdout == ""
    assert "Invalid value for '--estimator': 'tag' is not one of 'exact', 'first_order', 'cosine'" in r.stderr
