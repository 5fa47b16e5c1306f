"""Ctrl-C on a Ray driver, and per-trial resources above what the Ray cluster offers: CLI subprocesses on real Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

pytest.importorskip("ray.tune")

pytestmark = [pytest.mark.integration]


def _lr_space(tmp_path):
    space = tmp_path / "lr_space.toml"
    space.write_text('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nlog = true\n')
    return space


@pytest.mark.slow
def test_ctrl_c_on_a_ray_driver_exits_130_and_records_the_running_trials_fail_interrupted(tmp_path, study_file,
                                                                                         local_ray_env, trials_so_far):
    """SIGINT to `taskgraph run --backend ray` (a local Ray) while trials train: as the local runner does."""
    # trials of several seconds, so the signal arrives while they train
    path = study_file("raystop", space=_lr_space(tmp_path), trials=4, epochs=40, early="none", n_samples=600,
                      check_seeds=0, affinity_epochs=1)  # about the trials: a short prepare stage
    db = tmp_path / "runs" / "raystop" / "study.db"
    proc = subprocess.Popen([sys.executable, "-m", "taskgraph", "run", str(path), "--backend", "ray", "--runs-root",
                             str(tmp_path / "runs")], env=local_ray_env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            ts = trials_so_far(db, "raystop") or []
            if any(t.state == TrialState.RUNNING and t.params for t in ts):
                break
            time.sleep(0.2)
        else:
            pytest.fail("no trial started: " + (proc.stderr.read() if proc.poll() is not None else "timeout")[-3000:])
        time.sleep(1.0)  # inside its training
        t_sig = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
        stop_s = time.monotonic() - t_sig
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 130, (out + err)[-4000:]
    assert stop_s < 60, stop_s
    assert "Tuner.restore" not in out + err  # Tune's own handler, which keeps the trials for a restore, is off
    trials = optuna.load_study(study_name="raystop", storage=f"sqlite:///{db}").get_trials()
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], \
        [(t.number, t.state) for t in trials]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped, [(t.number, t.state) for t in trials]
    assert all(t.user_attrs["fail_reason"] == "interrupted: the driver was interrupted" for t in stopped), \
        [t.user_attrs.get("fail_reason") for t in stopped]
    assert len(trials) < 4  # it stopped before the budget


def _with_cpus(path, cpus: int):
    text = path.read_text()
    assert "\ncpus = 1\n" in text
    path.write_text(text.replace("\ncpus = 1\n", f"\ncpus = {cpus}\n"))
    return path


def _one_line_error(r, key: str) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    err = [line for line in lines if line.startswith("error:")]
    assert r.returncode != 0 and len(err) == 1, (r.stdout + r.stderr)[-3000:]
    assert "Traceback" not in r.stderr
    assert f"key '{key}'" in err[0], err[0]
    return err[0]


def test_cpus_above_this_machine_for_a_local_ray_are_refused_at_once_and_nothing_is_written(tmp_path, study_file,
                                                                                             cli, local_ray_env):
    here = len(os.sched_getaffinity(0))
    path = _with_cpus(study_file("toobig", trials=2), here + 1)  # a valid study value, one CPU above the machine
    t0 = time.monotonic()
    r = cli("run", str(path), "--backend", "ray", "--runs-root", str(tmp_path / "runs"), env=local_ray_env,
            cwd=tmp_path, timeout=120)
    took = time.monotonic() - t0
    line = _one_line_error(r, "resources.cpus")
    assert "'resources.cpus' must be at most the CPUs that one node of a local Ray (this machine) offers" in line
    assert f"offers ({here}); got {here + 1}" in line and str(path) in line
    assert took < 30, took
    assert not (tmp_path / "runs" / "toobig" / "study.db").exists()


@pytest.mark.slow
def test_cpus_above_every_node_of_a_connected_cluster_are_refused_within_seconds(tmp_path, study_file, cli,
                                                                                 ray_head):
    path = _with_cpus(study_file("toobig-cluster", trials=2), 3)  # the head offers 2
    t0 = time.monotonic()
    r = cli("run", str(path), "--backend", "ray", "--address", ray_head["gcs"], "--runs-root",
            str(tmp_path / "runs"), env=ray_head["env"], cwd=tmp_path, timeout=120)
    took = time.monotonic() - t0
    line = _one_line_error(r, "resources.cpus")
    assert f"one node of the Ray cluster at {ray_head['gcs']} offers (2); got 3" in line, line
    assert took < 30, took
    assert not (tmp_path / "runs" / "toobig-cluster" / "study.db").exists()
