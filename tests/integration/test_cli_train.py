import json

import pytest

pytestmark = pytest.mark.integration


def test_help_lists_commands(cli):
    r = cli("--help")
    assert r.returncode == 0
    assert "train" in r.stdout and "datasets" in r.stdout


def test_train_prints_per_task_table_and_delta_m(cli, tmp_path):
    out = tmp_path / "r.json"
    r = cli("train", "planted-clusters", "-o", "n_tasks=4", "-o", "n_clusters=2", "-o", "n_samples=400",
            "--epochs", "2", "--quiet", "--json-out", str(out))
    assert r.returncode == 0, r.stderr
    for t in ("t0", "t1", "t2", "t3"):
        assert t in r.stdout
    assert "Δm%" in r.stdout
    res = json.loads(out.read_text())
    assert set(res["all_in_one"]["metrics"]) == {"t0", "t1", "t2", "t3"}
    assert isinstance(res["delta_m"], float)


def test_bad_dataset_is_a_usage_error(cli):
    r = cli("train", "mnist", "--quiet")
    assert r.returncode == 2 and r.stdout == ""
    assert "Error: Invalid value for 'DATASET': unknown dataset 'mnist'" in r.stderr and "yeast" in r.stderr
    assert "Usage: " in r.stderr and "Traceback" not in r.stderr
