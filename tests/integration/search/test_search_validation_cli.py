"""`taskgraph run` refuses what the issue's fuzzing found accepted or crashing: one line, exit 2, nothing written."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _error_line(r) -> str:
    """Exit 2 and one error line on stderr: ``error: ...`` (after at most the run's ``study 'x': ...``
    header), or click's usage error for a bad option (its ``Usage:`` lines, then one ``Error: ...``)."""
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines() or [""]
    assert "Traceback" not in r.stderr, r.stderr
    if lines[-1].startswith("Error: "):  # click's usage error
        assert lines[0].startswith("Usage: "), r.stderr
        return lines[-1]
    assert lines[-1].startswith("error: ") and len(lines) <= 2 and all(x.startswith("study ") for x in lines[:-1]), \
        r.stderr
    return lines[-1]


@pytest.mark.parametrize(("edit", "expect", "key"), [
    (lambda t: t + '[affinity]\nestimator = "exactt"\n', "exactt", "affinity.estimator"),
    (lambda t: t.replace("n_samples = 400", "n_samples = -400"), "must be an int in", "dataset.options.n_samples"),
    (lambda t: t.replace("n_tasks = 4", f"n_tasks = {2**63 - 1}"), "must be an int in", "dataset.options.n_tasks"),
    (lambda t: t.replace("seed = 0", f"seed = {2**63}"), "must be <= 4294967295", "seed"),
    (lambda t: t + '[storage]\nurl = "sqlite://"\n', "in-memory SQLite", "storage.url"),
], ids=["estimator", "negative-samples", "huge-tasks", "huge-seed", "in-memory"])
def test_refused_in_one_line_before_anything_is_written(tmp_path, study_file, cli, edit, expect, key):
    path = study_file("refused")
    text = path.read_text().replace("[affinity]\nevery = 2\n", "")
    path.write_text(edit(text))
    r = cli("run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs"), cwd=tmp_path, timeout=60)
    err = _error_line(r)
    assert expect in err and f"key {key!r}" in err and str(path) in err, err
    assert not (tmp_path / "runs").exists(), "nothing may be written before the study file is valid"


def test_a_binary_study_file_is_one_line(tmp_path, cli):
    path = tmp_path / "study.toml"
    path.write_bytes(bytes(range(256)) * 4)
    r = cli("run", str(path), "--runs-root", str(tmp_path / "runs"), cwd=tmp_path, timeout=60)
    err = _error_line(r)
    assert "must be UTF-8 text" in err and str(path) in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("command", "option", "expect"), [
    ("affinity", "n_samples=-5", "'--option n_samples' must be an int in [10, 10000000]; got -5"),
    ("group", "seed=-1", "'--option seed' must be an int in [0, 4294967295]; got -1"),
    ("train", f"n_tasks={2**63 - 1}", "'--option n_tasks' must be an int in [1, 10000]"),
])
def test_dataset_options_of_the_other_commands_are_checked_before_any_data(cli, command, option, expect):
    r = cli(command, "planted-clusters", "-o", option, timeout=60)
    assert expect in _error_line(r), r.stderr


def test_a_topology_range_the_trunk_cannot_build_is_refused_before_the_storage(tmp_path, study_file, cli):
    space = tmp_path / "deep_space.toml"  # the tiny study's trunk has 2 stages: a split at depth 3 cannot be built
    space.write_text('[params.topology]\ntype = "categorical"\nchoices = ["hard", "branched"]\n'
                     '[params.depth]\ntype = "int"\nlow = 1\nhigh = 3\ntarget = "topology.branch_depths"\n'
                     'when = { topology = "branched" }\n')
    path = study_file("deep", space=space)
    r = cli("run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs"), cwd=tmp_path, timeout=60)
    err = _error_line(r)
    assert "key 'params.depth.high'" in err and str(space) in err, err
    assert "topology 'branched' accepts on the study's trunk (mlp [16, 8])" in err, err
    assert not (tmp_path / "runs").exists()
