"""The local runner end to end, through the CLI: storage, states, artifacts, failures, report, resume."""

from __future__ import annotations

import csv
import io

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from taskgraph.runners.storage import interrupted_numbers, open_storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _study(tmp_path, name):
    url = f"sqlite:///{tmp_path / 'runs' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=url), url


def test_local_run_records_every_trial_with_attrs_and_artifacts(tmp_path, study_file, cli):
    run_cli = cli
    path = study_file("loc", trials=4, epochs=2)
    r = run_cli("run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "best trial" in r.stdout and "taskgraph dashboard" in r.stdout and "[4/4]" in r.stderr  # progress: stderr

    study, url = _study(tmp_path, "loc")
    trials = study.get_trials()
    assert len(trials) == 4
    assert all(t.state in FINISHED for t in trials)
    assert any(t.state == TrialState.COMPLETE for t in trials)
    ua = study.user_attrs
    assert study.metric_names == ["val_loss"]  # the dashboard names the objective, not "Objective 0"
    assert ua["prepared"] is True and ua["task_names"] == ["t0", "t1", "t2", "t3"]
    decision = ua["grouping_decision"]
    assert "lower is better" in decision["statement"]
    # 3 paired seeds, or 5 where the default policy's second look ran, and then the statement says so
    assert decision["seeds"] == 3 or (decision["seeds"] == 5 and "second look" in decision["statement"]), decision
    assert set(ua["groupings"]) >= {"all-in-one", "single-task"}
    assert set(ua["baselines"]["single_task"]["test"]["metrics"]) == {"t0", "t1", "t2", "t3"}
    study_files = {m.filename for m in get_all_artifact_meta(study)}
    assert "groupings.json" in study_files
    if ua["affinity"] is not None:
        assert "affinity_heatmap.png" in study_files
    store = tmp_path / "runs" / "loc" / "artifacts"
    for t in trials:
        assert {"grouping", "topology", "weighting", "lr"} <= set(t.params)
        assert t.user_attrs["grouping"] == t.params["grouping"] and t.user_attrs["seed"] == 0
        assert "torch" in t.user_attrs["versions"] and "optuna" in t.user_attrs["versions"]
        assert t.intermediate_values, t.number
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [1, 2]
            metas = {m.filename: m for m in get_all_artifact_meta(t, storage=open_storage(url))}
            csv_name = f"trial{t.number}_per_task.csv"
            assert set(metas) == {csv_name, f"trial{t.number}_grouping.json"}
            rows = list(csv.DictReader(io.StringIO((store / metas[csv_name].artifact_id).read_text())))
            assert [row["task"] for row in rows] == ["t0", "t1", "t2", "t3"]
            assert abs(float(t.user_attrs["val_loss"]) - t.value) < 1e-9

    # the same command again does not silently duplicate the study
    again = run_cli("run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs"), cwd=tmp_path)
    assert again.returncode == 1 and "--resume" in again.stderr and again.stderr.strip().splitlines()[-1].startswith(
        "error: ")

    rep = run_cli("report", str(tmp_path / "runs" / "loc" / "study.db"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "runs" / "loc" / "report" / "report.md").read_text()
    assert "## Best configuration" in md and "## Per task" in md and "single-task" in md
    assert (tmp_path / "runs" / "loc" / "report" / "history.png").stat().st_size > 0
    # every table row keeps its column count although grouping labels contain '|'
    for table in md.split("\n\n"):
        rows = [r for r in table.splitlines() if r.startswith("|")]
        widths = {len(r.replace("\\|", "").split("|")) for r in rows}
        assert len(widths) <= 1, table


def test_failing_trials_are_recorded_fail_with_their_reason_and_the_study_goes_on(tmp_path, study_file, cli):
    run_cli = cli
    space = tmp_path / "failing_space.toml"
    space.write_text("""
[params.optimizer]
type = "categorical"
choices = ["sgd", "adam"]
[params.nesterov]                 # adam + nesterov raises a ConfigError inside the trial
type = "categorical"
choices = [true]
[params.lr]                       # sgd at lr 1e8 diverges: TrainingDiverged (NaN/inf loss)
type = "categorical"
choices = [0.01, 0.02, 1e8, 2e8]  # 8 configurations for 8 trials: the runner never runs one twice
""")
    path = study_file("failing", space=space, trials=8, epochs=2, sampler="random", early="none")
    r = run_cli("run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    study, _ = _study(tmp_path, "failing")
    # a configuration the sampler proposes again is closed unrun as "skipped:" and does not count
    trials = [t for t in study.get_trials() if not t.user_attrs.get("fail_reason", "").startswith("skipped:")]
    assert len(trials) == 8
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 8
    reasons = {}
    for t in trials:
        if t.state == TrialState.FAIL:
            reasons[t.number] = t.user_attrs["fail_reason"]
            assert "\n" not in reasons[t.number]
        kind = ("raise" if t.params["optimizer"] == "adam" else "nan" if t.params["lr"] > 1 else "ok")
        if kind == "raise":
            assert t.state == TrialState.FAIL and "nesterov needs optimizer 'sgd'" in reasons[t.number]
        elif kind == "nan":
            assert t.state == TrialState.FAIL and "TrainingDiverged" in reasons[t.number]
            assert "non-finite" in reasons[t.number]
        else:
            assert t.state == TrialState.COMPLETE
    kinds = {("raise" if t.params["optimizer"] == "adam" else "nan" if t.params["lr"] > 1 else "ok") for t in trials}
    assert kinds == {"raise", "nan", "ok"}, "the seeded sampler should draw all three kinds"


def test_sigkill_mid_run_then_resume_keeps_every_finished_trial_once(tmp_path, study_file, cli, cli_environ,
                                                                       kill_mid_study):
    run_cli = cli
    space = tmp_path / "lr_space.toml"
    space.write_text('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nlog = true\n')
    path = study_file("killed", space=space, trials=7, epochs=3, early="none", n_samples=600)
    url = f"sqlite:///{tmp_path / 'runs' / 'killed' / 'study.db'}"
    kill_mid_study(["run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs")],
                   env=cli_environ, cwd=tmp_path, db=tmp_path / "runs" / "killed" / "study.db", name="killed")

    before = optuna.load_study(study_name="killed", storage=url).get_trials()
    done_before = {t.number: (t.state, t.values, t.params) for t in before if t.state in FINISHED}
    running = [t.number for t in before if t.state == TrialState.RUNNING]
    drawn = sorted(t.number for t in before if t.state == TrialState.RUNNING and t.params)  # retried by --resume
    assert running and drawn and done_before

    r = run_cli("run", str(path), "--backend", "local", "--resume", "--runs-root", str(tmp_path / "runs"),
                cwd=tmp_path, env=cli_environ)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr  # logs go to stderr
    assert "resume:" in out
    assert "lost their driver (no heartbeat" in out or "left running by a driver that is gone" in out, out[-3000:]

    study = optuna.load_study(study_name="killed", storage=url)
    after = study.get_trials()
    by_number = {t.number: t for t in after}
    for n, (state, values, params) in done_before.items():  # kept, unchanged
        assert (by_number[n].state, by_number[n].values, by_number[n].params) == (state, values, params)
    assert not [t for t in after if t.state == TrialState.RUNNING]
    interrupted = [t for t in after if t.number in interrupted_numbers(after)]  # failed by the heartbeat
    assert sorted(t.number for t in interrupted) == running
    assert all(t.state == TrialState.FAIL for t in interrupted)
    counted = [t for t in after if t.state in FINISHED and t not in interrupted]
    assert len(counted) == 7, [(t.number, t.state) for t in after]
    retries = [t for t in after if "retry_of" in t.user_attrs]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == drawn
    for t in retries:
        assert t.params == by_number[t.user_attrs["retry_of"]].params
    # every complete trial uploaded its two artifacts exactly once
    for t in after:
        if t.state == TrialState.COMPLETE:
            names = sorted(m.filename for m in get_all_artifact_meta(t, storage=open_storage(url)))
            assert names == sorted([f"trial{t.number}_grouping.json", f"trial{t.number}_per_task.csv"])
    # prepare ran once: one set of study-level artifacts
    study_files = [m.filename for m in get_all_artifact_meta(study)]
    assert study_files.count("groupings.json") == 1
