"""Bad study files and unreachable storage/cluster through the CLI: one line naming file, key, expectation;
nothing written. (Every kind of bad field is covered without subprocesses in tests/unit/search.)"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _one_line_error(r, code: int = 2) -> str:
    """The one error line. Exit 2 for a bad file or argument, 1 for a runtime failure (storage or cluster
    unreachable). stderr may hold before it only the run's header (``study 'x': ...``), which ``taskgraph run``
    logs once the study file has been read, before it opens the data and the storage."""
    assert r.returncode == code, r.stdout + r.stderr
    *before, err = r.stderr.strip().splitlines() or [""]
    assert err.startswith("error: "), r.stderr
    assert all(line.startswith("study ") for line in before) and len(before) <= 1, r.stderr
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
                              cwd=tmp_path), code=1)
    assert "postgresql://u:***@127.0.0.1:1/nodb" in err and "key 'storage.url'" in err and str(path) in err, err
    assert ":p@" not in err  # the password is masked


def test_unreachable_cluster_is_one_line(tmp_path, study_file, cli, port):
    path = study_file("nocluster")
    err = _one_line_error(cli("submit", str(path), "--address", f"http://127.0.0.1:{port}", timeout=120), code=1)
    assert f"http://127.0.0.1:{port}" in err and "must be reachable" in err, err


def test_dashboard_and_report_on_a_missing_storage_are_one_line(tmp_path, cli):
    err = _one_line_error(cli("report", str(tmp_path / "none.db")), code=1)
    assert "STORAGE must be" in err
    err = _one_line_error(cli("dashboard", str(tmp_path / "none.db")), code=1)
    assert "STORAGE must be" in err
