"""``taskgraph group`` as a real subprocess."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskgraph.affinity import AffinityMatrix

pytestmark = pytest.mark.integration


def test_group_from_a_saved_matrix(cli, tmp_path):
    names = ("t0", "t1", "t2", "t3")
    Z = np.array([[0, .9, -.5, -.5], [.9, 0, -.5, -.5], [-.5, -.5, 0, .8], [-.5, -.5, .8, 0]], dtype=float)
    path = AffinityMatrix.from_samples(names, np.stack([Z, Z + 0.01, Z - 0.01])).save(tmp_path / "m.json")
    out = tmp_path / "out"
    r = cli("group", "planted-clusters", "-o", "n_tasks=4", "-o", "n_clusters=2", "-o", "n_samples=300",
                "--matrix", str(path), "--no-check", "-k", "2", "--out-dir", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    g = json.loads((out / "grouping.json").read_text())
    assert g["groups"] == [["t0", "t1"], ["t2", "t3"]] and g["optimal"] is True
    assert (out / "grouping.png").read_bytes()[:4] == b"\x89PNG"
    assert "chosen: {t0, t1} | {t2, t3}" in r.stdout


def test_group_reports_bad_input_in_one_line(cli, tmp_path):
    path = AffinityMatrix.from_samples(("t0", "t1"), np.zeros((2, 2, 2))).save(tmp_path / "m.json")
    r = cli("group", "planted-clusters", "-o", "n_tasks=4", "-o", "n_clusters=2", "-o", "n_samples=300",
                "--matrix", str(path), "--no-check", "-k", "5", "--out-dir", str(tmp_path / "o"))
    assert r.returncode == 1 and r.stdout == ""  # a failed run, not a usage error
    assert r.stderr.splitlines()[-1].startswith("error: 1 <= k <= n must hold"), r.stderr


@pytest.mark.slow
def test_group_measures_and_checks(cli, tmp_path):
    out = tmp_path / "out"
    r = cli("group", "planted-clusters", "-o", "n_tasks=4", "-o", "n_clusters=2", "-o", "n_samples=800",
                "-k", "2", "--top-m", "1", "--steps", "60", "--epochs", "2", "--out-dir", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "auto_group.json").read_text())
    # the policy checks the affinity's first proposal and single-task against all-in-one
    assert {c["source"] for c in result["candidates"]} == {"all-in-one", "affinity #1", "single-task"}
    assert (out / "grouping.json").exists()
    # 3 paired seeds for every candidate; 5 for all-in-one and one alternative where the second look ran
    if result["decision"]["seeds"] == 3:
        assert all(len(c["val_totals"]) == 3 for c in result["candidates"])
    else:
        assert result["decision"]["seeds"] == 5 and "second look" in result["decision"]["statement"]
        assert sorted(len(c["val_totals"]) for c in result["candidates"]) in ([3, 5, 5], [3, 3, 5, 5])
    assert {"affinity", "grouping", "hierarchy"} <= set(result["pictures"])
