"""Bad study files and unreachable storage/cluster through the CLI: one line naming file, key, expectation;
nothing written. (Every kind of bad field is covered without subprocesses in tests/unit/search.)"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _one_line_error(r) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(("edit", "key", "expect"), [
    (lambda t: t.replace('name = "planted-clusters"', ""), "dataset.name", "is required"),
    (lambda t: t.replace("[trunk]", 'tasks = ["t0", "t9"]\n[trunk]'), "dataset.tasks", "must name tasks"),
], ids=["missing", "unknown-task"])
def test_bad_study_file_is_one_line_and_writes_nothing(tmp_path, study_file, cli, edit, key, expect):
    path = study_file("bad", trials=3)
    path.write_text(edit(path.read_text()))
    r = cli("run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs"), cwd=tmp_path)
    err = _one_line_error(r)
    assert expect in err and str(path) in err and f"key {key!r}" in err, err
    assert not (tmp_path / "runs").exists(), "nothing may be written before the file is valid"


def test_bad_search_space_names_the_space_file(tmp_path, study_file, cli):
    space = tmp_path / "inverted.toml"
    space.write_text('[params.lr]\ntype = "float"\nlow = 0.1\nhigh = 0.001\nlog = true\n')
    path = study_file("badspace", space=space)
    err = _one_line_error(cli("run", str(path), "--runs-root", str(tmp_path / "runs"), cwd=tmp_path))
    assert str(space) in err and "key 'params.lr.high'" in err and "'low < high' must hold" in err
    assert not (tmp_path / "runs").exists()


def test_unreachable_storage_is_one_line(tmp_path, study_file, cli):
    url = "postgresql://u:p@127.0.0.1:1/nodb"
    path = study_file("nostore", storage=url)
    err = _one_line_error(cli("run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs"),
                              cwd=tmp_path))
    assert "postgresql://u:***@127.0.0.1:1/nodb" in err and "key 'storage.url'" in err and str(path) in err, err
    assert ":p@" not in err  # the password is masked


def test_unreachable_cluster_is_one_line(tmp_path, study_file, cli, port):
    path = study_file("nocluster")
    err = _one_line_error(cli("submit", str(path), "--address", f"http://127.0.0.1:{port}", timeout=120))
    assert f"http://127.0.0.1:{port}" in err and "must be reachable" in err, err


def test_dashboard_and_report_on_a_missing_storage_are_one_line(tmp_path, cli):
    err = _one_line_error(cli("report", str(tmp_path / "none.db")))
    assert "STORAGE must be" in err
    err = _one_line_error(cli("dashboard", str(tmp_path / "none.db")))
    assert "STORAGE must be" in err
