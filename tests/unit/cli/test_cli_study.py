"""``taskgraph run``, ``report`` and ``dashboard`` in-process on one real SQLite study (a few seconds)."""

from __future__ import annotations

import socket

import optuna
import pytest
from optuna.trial import TrialState


@pytest.fixture(scope="module")
def finished(tmp_path_factory, make_study):
    """One local run of a 2-trial study: ``(result, study file, runs folder)``."""
    from click.testing import CliRunner

    from taskgraph.cli import cli

    d = tmp_path_factory.mktemp("study")
    path = make_study(d)
    result = CliRunner().invoke(cli, ["run", str(path), "--backend", "local", "--runs-root", str(d / "runs")],
                                env={"COLUMNS": "80"})
    return result, path, d / "runs"


def test_run_prints_the_summary_on_stdout_and_its_logs_on_stderr(finished):
    r, _, runs = finished
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{runs / 'tiny' / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    out = r.stdout.splitlines()
    assert out[0].startswith("study 'tiny': 2 COMPLETE in ")
    best = next(line for line in out if line.startswith("best trial "))
    assert f"val_loss = {study.best_value:.4f} (lower is better)" in best
    assert "Δm% = " not in best or best.endswith("(lower is better)")
    assert any(line.startswith("review it: taskgraph dashboard ") for line in out)
    # logs and per-trial progress: stderr only
    for log in ("prepare: single-task baselines", "local runner: 2 trial(s) to run", "[1/2] trial 0 ",
                "[2/2] trial 1 "):
        assert log in r.stderr and log not in r.stdout, log
    assert "" not in out


def test_running_a_finished_study_again_fails_with_exit_1(finished):
    from click.testing import CliRunner

    from taskgraph.cli import cli

    _, path, runs = finished
    r = CliRunner().invoke(cli, ["run", str(path), "--backend", "local", "--runs-root", str(runs)])
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines()[-1].startswith("error: study 'tiny' already exists in ")
    assert "--resume" in r.stderr and r.stdout == ""


def test_report_of_the_study_says_which_way_is_better(finished, invoke, tmp_path):
    _, _, runs = finished
    r = invoke("report", str(runs / "tiny" / "study.db"), "--out", str(tmp_path / "rep"))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"report written: {tmp_path / 'rep' / 'report.md'}"
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "val_loss = " in text and "(lower is better)" in text and "test Δm% ↓" in text
    assert "## Grouping decision" not in text  # this study ran no checks


def test_report_shows_the_prepare_stages_decision(finished, invoke, tmp_path):
    import shutil

    _, _, runs = finished
    db = tmp_path / "copy.db"
    shutil.copy(runs / "tiny" / "study.db", db)
    statement = "chosen {t0} | {t1, t2} (affinity #1): validation total -0.0100 vs all-in-one (-5.00%, lower is better)"
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    study.set_user_attr("grouping_decision", {"groups": [["t0"], ["t1", "t2"]], "statement": statement})
    r = invoke("report", str(db), "--out", str(tmp_path / "rep"))
    assert r.exit_code == 0, r.output
    text = (tmp_path / "rep" / "report.md").read_text()
    assert f"## Grouping decision (the prepare stage's checks)\n\n{statement}\n" in text


def test_report_on_a_storage_without_the_study_fails_with_exit_1(finished, invoke):
    _, _, runs = finished
    r = invoke("report", str(runs / "tiny" / "study.db"), "--study", "nope")
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: ") and "nope" in r.stderr and r.stdout == ""


def test_dashboard_on_a_busy_port_fails_with_exit_1(finished, invoke):
    _, _, runs = finished
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = invoke("dashboard", str(runs / "tiny" / "study.db"), "--port", str(port))
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: ") and str(port) in r.stderr and r.stdout == ""
