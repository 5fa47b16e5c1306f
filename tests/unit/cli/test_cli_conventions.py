"""CLI conventions, in-process: exit 1 vs 2, results on stdout and logs on stderr, 80-column tables, help."""

from __future__ import annotations

import re

import click
import numpy as np
import pytest

from taskgraph.affinity import ESTIMATORS, AffinityMatrix
from taskgraph.cli import COMMANDS, cli
from taskgraph.cli.affinity import ESTIMATOR_CHOICES, matrix_rows
from taskgraph.cli.grouping import SOLVER_CHOICES
from taskgraph.grouping.base import SOLVERS

PLANTED = ["planted-clusters", "-o", "n_tasks=4", "-o", "n_clusters=2", "-o", "n_samples=120"]


def _matrix(names, scale=0.01, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(0, scale, (len(names), len(names)))
    return AffinityMatrix.from_samples(tuple(names), np.stack([base + rng.normal(0, scale / 10, base.shape)
                                                               for _ in range(4)]))


def _every_command():
    for name in COMMANDS:
        yield name, cli.get_command(click.Context(cli), name)


def test_every_option_has_help_text():
    missing = [f"{name} {p.opts[0]}" for name, cmd in _every_command() for p in cmd.params
               if isinstance(p, click.Option) and not p.help]
    assert missing == []


def test_estimator_and_solver_choices_are_the_registries_names():
    assert sorted(ESTIMATOR_CHOICES) == ESTIMATORS.names()
    assert SOLVER_CHOICES[0] == "auto" and sorted(SOLVER_CHOICES[1:]) == SOLVERS.names()
    params = {p.name: p for p in cli.get_command(click.Context(cli), "affinity").params}
    assert list(params["estimator"].type.choices) == list(ESTIMATOR_CHOICES)
    params = {p.name: p for p in cli.get_command(click.Context(cli), "group").params}
    assert list(params["solver"].type.choices) == list(SOLVER_CHOICES)


def test_help_states_the_exit_status_and_streams(invoke):
    r = invoke("--help")
    assert r.exit_code == 0
    assert "Exit status: 0 done; 1 the run failed; 2 usage" in r.stdout
    assert "logs and progress to stderr" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80


@pytest.mark.parametrize("args, message", [
    (["affinity", *PLANTED, "--estimator", "tag"], "'tag' is not one of 'exact', 'first_order', 'cosine'"),
    (["group", *PLANTED, "--solver", "gurobi", "--no-check"], "'gurobi' is not one of 'auto', 'exact'"),
    (["train", "mnist"], "unknown dataset 'mnist'; valid: digits"),
    (["train", "planted-clusters", "-o", "n_tasks"], "--option must look like KEY=VALUE, got 'n_tasks'"),
    (["train", *PLANTED, "--hidden", "64,x"], "must be comma-separated ints like 256,128, got '64,x'"),
    (["run", "missing.toml", "--resume", "--join"], "--resume and --join exclude each other"),
])
def test_usage_errors_exit_2_and_print_nothing_on_stdout(invoke, args, message):
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.stderr.split()), r.stderr
    assert r.stdout == ""


def test_an_invalid_study_file_is_a_usage_error(invoke, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[budget]\ntrials = -1\n')
    r = invoke("run", str(path), "--runs-root", str(tmp_path / "runs"))
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and str(path) in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()


def test_a_failure_at_run_time_exits_1_in_one_line(invoke, tmp_path):
    path = _matrix(["t0", "t1"]).save(tmp_path / "m.json")  # 2 tasks, but -k 5
    r = invoke("group", *PLANTED, "--matrix", str(path), "--no-check", "-k", "5", "--out-dir", str(tmp_path / "o"))
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines()[-1].startswith("error: 1 <= k <= n must hold"), r.stderr
    assert "Traceback" not in r.output


def test_a_grouping_from_a_saved_matrix_prints_its_result_on_stdout_only(invoke, tmp_path):
    z = np.array([[0, .9, -.5, -.5], [.9, 0, -.5, -.5], [-.5, -.5, 0, .8], [-.5, -.5, .8, 0]])
    path = AffinityMatrix.from_samples(("t0", "t1", "t2", "t3"), np.stack([z, z + .01, z - .01])).save(
        tmp_path / "m.json")
    r = invoke("group", *PLANTED, "--matrix", str(path), "--no-check", "-k", "2", "--out-dir", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert "chosen: {t0, t1} | {t2, t3}" in r.stdout and "score ↑" in r.stdout
    assert "4 tasks, trunk" in r.stderr and "4 tasks, trunk" not in r.stdout  # the log line
    assert "" not in r.stderr.splitlines()  # no blank lines when stderr is not a terminal


@pytest.mark.parametrize("n", [9, 12, 20])
def test_the_affinity_table_fits_80_columns_without_cutting_a_cell(n, capsys, monkeypatch):
    from taskgraph.cli.common import print_table

    monkeypatch.setenv("COLUMNS", "80")
    names = [f"t{i}" for i in range(n)]
    m = _matrix(names, scale=0.004)
    exponent, rows = matrix_rows(m)
    top = float(np.abs(m.mean).max())
    assert 1 <= top * 10.0 ** exponent < 10  # the largest |mean| is shown in [1, 10)
    print_table(f"Z(i→j) ×10^-{exponent}", ["i \\ j", *names], rows, caption="* 95% CI excludes 0")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in out
    assert all(line == line.rstrip() for line in lines)  # piped: no trailing padding
    cells = [c for line in lines for c in line.split() if re.fullmatch(r"[+-]\d\.\d\*?", c)]
    if n <= 12:  # every cell whole on its row (12 tasks: without cell padding)
        assert len(cells) == n * n
        first = next(line for line in lines if line.split()[:1] == ["t0"]).split()[1:]
        assert first == rows[0][1:]


def test_affinity_command_table_at_80_columns(invoke, tmp_path):
    r = invoke("affinity", "planted-clusters", "-o", "n_tasks=9", "-o", "n_clusters=3", "-o", "n_samples=150",
               "--steps", "6", "--every", "2", "--hidden", "16", "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    table = lines[:next(i for i, line in enumerate(lines) if line.startswith("* 95% CI excludes 0")) + 1]
    assert max(len(line) for line in table) <= 80 and "…" not in r.stdout
    rows = [line.split() for line in lines if re.fullmatch(r"t\d", line.split()[0] if line.split() else "")]
    assert len(rows) == 9 and all(len(row) == 10 for row in rows), r.stdout
    assert all(re.fullmatch(r"[+-]\d\.\d\*?|–", c) for row in rows for c in row[1:]), r.stdout
    assert "estimator exact, 6 steps" in r.stderr and "estimator exact" not in r.stdout
    assert "" not in r.stderr.splitlines()
    saved = AffinityMatrix.load(tmp_path / "a" / "affinity.json")
    assert saved.n == 9 and int(saved.n_samples.max()) == 3


def test_train_says_lower_is_better_beside_delta_m(invoke, tmp_path):
    r = invoke("train", *PLANTED, "--epochs", "1", "--hidden", "8")
    assert r.exit_code == 0, r.output
    line = next(line for line in r.stdout.splitlines() if line.startswith("Δm% = "))
    assert "(lower is better" in line
    assert "Δ% ↓" in r.stdout and "mse ↓" in r.stdout
    assert "train / " in r.stderr and "train / " not in r.stdout
    assert "" not in r.stderr.splitlines()
