"""A real Ray head on loopback: submit a study as a job, read it back, review it in optuna-dashboard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import requests
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from taskgraph.runners.storage import interrupted_numbers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _check_study(url: str, name: str, n: int, epochs: int, artifacts: Path) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials()
    assert len(trials) == n
    assert all(t.state in FINISHED for t in trials), [t.state for t in trials]
    assert any(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert t.user_attrs["grouping"] == t.params["grouping"]
        assert t.user_attrs["topology"] == t.params["topology"] and "versions" in t.user_attrs
        metas = get_all_artifact_meta(t, storage=study._storage)
        if t.state == TrialState.COMPLETE:
            if len(study.directions) == 1:
                assert sorted(t.intermediate_values) == list(range(1, epochs + 1)), t.intermediate_values
            assert {m.filename for m in metas} == {f"trial{t.number}_per_task.csv", f"trial{t.number}_grouping.json"}
            assert all((artifacts / m.artifact_id).is_file() for m in metas)
        elif t.state == TrialState.PRUNED:  # ASHA stopped it before its last epoch
            assert 1 <= len(t.intermediate_values) < epochs and not metas
        else:
            assert t.user_attrs["fail_reason"]
    assert "groupings.json" in {m.filename for m in get_all_artifact_meta(study)}
    return study


def test_submit_a_study_as_a_ray_job_then_review_it_in_the_dashboard(tmp_path, study_file, ray_head, cli, port,
                                                                    cli_environ):
    db = tmp_path / "cluster" / "study.db"
    url = f"sqlite:///{db}"
    # about the job and the dashboard, not the grouping decision: no paired checks, 1 affinity epoch in prepare
    path = study_file("submitted", trials=5, epochs=3, storage=url, check_seeds=0, affinity_epochs=1)
    r = cli("submit", str(path), "--address", ray_head["address"], env=ray_head["env"], timeout=420)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    job_id = next(line.split()[2] for line in r.stdout.splitlines() if line.startswith("submitted job"))
    assert f"job {job_id}: SUCCEEDED" in r.stdout
    assert "best trial" in r.stderr  # the job's logs were followed (on stderr)

    from ray.job_submission import JobStatus, JobSubmissionClient

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    assert JobSubmissionClient(ray_head["address"]).get_job_status(job_id) == JobStatus.SUCCEEDED

    study = _check_study(url, "submitted", 5, 3, db.parent / "artifacts")

    # optuna-dashboard on that storage, through `taskgraph dashboard` (stopped by its PID)
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "taskgraph", "dashboard", str(db), "--port", str(port)],
                            env=cli_environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if requests.get(f"{base}/api/meta", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"the dashboard exited: {proc.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                pytest.fail("the dashboard did not answer within 60 s")
            time.sleep(0.3)
        studies = requests.get(f"{base}/api/studies", timeout=10).json()["study_summaries"]
        sid = next(s["study_id"] for s in studies if s["study_name"] == "submitted")
        detail = requests.get(f"{base}/api/studies/{sid}", params={"after": 0}, timeout=30).json()
        trials = {t["number"]: t for t in detail["trials"]}
        assert set(trials) == {t.number for t in study.trials}
        downloaded = 0
        for t in study.trials:
            d = trials[t.number]
            assert {p["name"]: p["param_external_value"] for p in d["params"]}.keys() == t.params.keys()
            assert d["state"].lower() == t.state.name.lower()
            if t.state == TrialState.COMPLETE:
                assert d["values"] == pytest.approx(t.values)
                names = {a["filename"] for a in d["artifacts"]}
                assert names == {f"trial{t.number}_per_task.csv", f"trial{t.number}_grouping.json"}
                art = next(a for a in d["artifacts"] if a["filename"].endswith(".csv"))
                resp = requests.get(f"{base}/artifacts/{sid}/{d['trial_id']}/{art['artifact_id']}", timeout=10)
                assert resp.status_code == 200
                assert resp.content == (db.parent / "artifacts" / art["artifact_id"]).read_bytes()
                assert resp.content.startswith(b"task,")
                downloaded += 1
        assert downloaded >= 1
        assert "groupings.json" in {a["filename"] for a in detail.get("artifacts", [])}
        assert requests.get(f"{base}/static/bundle.js", timeout=10).status_code == 200  # requests sends gzip
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_run_with_the_ray_backend_on_a_cluster_multi_objective(tmp_path, study_file, ray_head, cli):
    """`taskgraph run --backend ray --address` drives Tune on the head; per-task objectives give a Pareto front."""
    path = study_file("pareto", trials=4, epochs=2, objective="per_task", early="none", check_seeds=0,
                      affinity_epochs=1)  # about the trials' objectives: a short prepare stage
    r = cli("run", str(path), "--backend", "ray", "--address", ray_head["gcs"], "--runs-root", str(tmp_path / "runs"),
            env=ray_head["env"], cwd=tmp_path, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    url = f"sqlite:///{tmp_path / 'runs' / 'pareto' / 'study.db'}"
    study = _check_study(url, "pareto", 4, 2, tmp_path / "runs" / "pareto" / "artifacts")
    if len(study.best_trials) > 1:  # one trial may dominate the other three: the CLI then names it alone
        assert f"Pareto front: {len(study.best_trials)} trial(s)" in r.stdout, r.stdout
    assert len(study.directions) == 4
    assert study.metric_names == ["val_loss[t0]", "val_loss[t1]", "val_loss[t2]", "val_loss[t3]"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(len(t.values) == 4 for t in complete)
    assert 1 <= len(study.best_trials) <= len(complete)
    rep = cli("report", str(tmp_path / "runs" / "pareto" / "study.db"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "runs" / "pareto" / "report" / "report.md").read_text()
    assert "## Pareto front" in md


def test_ray_driver_killed_mid_run_then_resumed_keeps_every_finished_trial_once(tmp_path, study_file, ray_head,
                                                                                 cli, kill_mid_study):
    """SIGKILL the driver of a Ray Tune study on a running head; `--resume` on the same head finishes it."""
    space = tmp_path / "lr_space.toml"
    space.write_text('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nlog = true\n')
    path = study_file("rayresume", space=space, trials=6, epochs=3, early="none", n_samples=600, affinity_epochs=1)
    db = tmp_path / "runs" / "rayresume" / "study.db"
    url = f"sqlite:///{db}"
    args = ["run", str(path), "--backend", "ray", "--address", ray_head["gcs"], "--runs-root", str(tmp_path / "runs")]
    kill_mid_study(args, env=ray_head["env"], cwd=tmp_path, db=db, name="rayresume")

    before = optuna.load_study(study_name="rayresume", storage=url).get_trials()
    done_before = {t.number: (t.state, t.values, t.params) for t in before if t.state in FINISHED}
    running = sorted(t.number for t in before if t.state == TrialState.RUNNING)
    drawn = sorted(t.number for t in before if t.state == TrialState.RUNNING and t.params)  # retried by --resume
    assert running and drawn and done_before

    r = cli(*args, "--resume", env=ray_head["env"], cwd=tmp_path, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "resume:" in r.stderr
    # the killed driver's trials carry heartbeats: failed once stale, by the resume or by its searcher
    assert "lost their driver (no heartbeat" in r.stderr or "left running by a driver that is gone" in r.stderr, \
        r.stderr[-3000:]
    after = optuna.load_study(study_name="rayresume", storage=url).get_trials()
    by_number = {t.number: t for t in after}
    for n, (state, values, params) in done_before.items():  # kept, unchanged
        assert (by_number[n].state, by_number[n].values, by_number[n].params) == (state, values, params)
    assert not [t for t in after if t.state == TrialState.RUNNING]
    interrupted = sorted(interrupted_numbers(after))
    assert interrupted == running
    assert all(by_number[n].state == TrialState.FAIL for n in interrupted)
    counted = [t for t in after if t.state in FINISHED and t.number not in interrupted]
    assert len(counted) == 6, [(t.number, t.state) for t in after]
    retries = [t for t in after if "retry_of" in t.user_attrs]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == drawn
    assert all(t.params == by_number[t.user_attrs["retry_of"]].params for t in retries)


def test_a_ray_driver_joins_a_local_driver_and_they_share_the_budget(tmp_path, study_file, ray_head, two_drivers):
    """`--backend ray --join` next to a running local driver: every trial once, the budget shared."""
    space = tmp_path / "lr_space.toml"
    space.write_text('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nlog = true\n'
                     '[params.batch_size]\ntype = "categorical"\nchoices = [4]\n')
    # trials long enough (small batches: about 0.4 s an epoch) that the local driver cannot run all six before the
    # Ray driver has connected and asks for its own (with 3 epochs it had finished them all, every time); the prepare
    # stage short: no checks, 1 affinity epoch
    path = study_file("rayjoin", space=space, trials=6, epochs=15, early="none", n_samples=600, check_seeds=0,
                      affinity_epochs=1)
    db = tmp_path / "runs" / "rayjoin" / "study.db"
    url = f"sqlite:///{db}"
    runs = ["--runs-root", str(tmp_path / "runs")]
    two_drivers(["run", str(path), "--backend", "local", *runs],
                ["run", str(path), "--backend", "ray", "--join", "--address", ray_head["gcs"], *runs],
                env=ray_head["env"], cwd=tmp_path, db=db, name="rayjoin")
    study = optuna.load_study(study_name="rayjoin", storage=url)
    # a trial holds its share of the budget from the moment it is asked for, so the budget is exact: a trial
    # asked for in the same instant as the one that filled it is closed unrun as "skipped:". (Counting only
    # finished trials, as before, let the drivers' in-flight trials overshoot: 9 for 6 without a shared budget,
    # up to 8 with one, measured)
    ran = [t for t in study.get_trials() if not t.user_attrs.get("fail_reason", "").startswith("skipped:")]
    assert all(t.state == TrialState.COMPLETE for t in ran), [t.state for t in ran]
    assert len(ran) == 6, len(ran)
    assert len({t.params["lr"] for t in ran}) == 6  # no configuration twice
    assert [m.filename for m in get_all_artifact_meta(study)].count("groupings.json") == 1
    # shared: each driver ran some of the six (a Ray trial records the node it ran on)
    on_ray = [t.number for t in ran if "ray_node" in t.user_attrs]
    assert 0 < len(on_ray) < 6, [(t.number, t.user_attrs.get("ray_node")) for t in ran]



def test_a_ray_trial_whose_worker_dies_is_recorded_fail_with_why_and_the_study_goes_on(tmp_path, study_file,
                                                                                       ray_head, kill_a_ray_trial):
    """SIGKILL the worker process of a running Ray trial (as the OOM killer would): that trial is FAIL with
    Ray's reason (the actor died), the others complete; the driver finishes the study and exits 1, as it does
    whenever Ray reported an errored trial."""
    space = tmp_path / "lr_space.toml"
    space.write_text('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nlog = true\n'
                     '[params.batch_size]\ntype = "categorical"\nchoices = [4]\n')
    # trials of several seconds: the victim is looked for while a trial is inside its train call. Small batches make
    # only the trials long (measured, plain: a trial of 10 epochs of 600 samples in batches of 4 took 4 s, one of 40
    # epochs of 3000 in batches of 64 3 s), not the prepare stage, whose single-task baselines train the study's
    # batch size for every epoch (4 s instead of 11 s); no checks and 1 affinity epoch, else it would eat the 240 s
    path = study_file("raycrash", space=space, trials=4, epochs=10, early="none", n_samples=600,
                      check_seeds=0, affinity_epochs=1)
    db = tmp_path / "runs" / "raycrash" / "study.db"
    args = ["run", str(path), "--backend", "ray", "--address", ray_head["gcs"], "--runs-root", str(tmp_path / "runs")]
    code, err = kill_a_ray_trial(args, env=ray_head["env"], cwd=tmp_path, db=db, name="raycrash",
                                 ray_tmpdir=ray_head["tmpdir"])
    assert code == 1, err[-4000:]
    trials = optuna.load_study(study_name="raycrash", storage=f"sqlite:///{db}").get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    reason = failed[0].user_attrs["fail_reason"]
    assert reason.startswith("RayTrialError: The actor died unexpectedly"), reason
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3, [(t.number, t.state) for t in trials]
