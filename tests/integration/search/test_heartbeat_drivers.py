"""Several drivers on one SQLite study, through the CLI: a resume never disturbs a live driver, and drivers
started at the same moment on a new study share it."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from taskgraph.runners.storage import SKIPPED, interrupted_numbers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _space(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[params.weighting]\ntype = "categorical"\nchoices = ["equal", "uncertainty"]\n'
                     '[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nlog = true\n')
    return space


def check_budget(trials, budget: int) -> None:
    """Exactly ``budget`` trials ran, all COMPLETE, none twice, none left RUNNING or failed by a heartbeat."""
    ran = [t for t in trials if not str(t.user_attrs.get("fail_reason", "")).startswith(SKIPPED)]
    table = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert interrupted_numbers(trials) == set(), table
    assert len(ran) == budget and all(t.state == TrialState.COMPLETE for t in ran), table
    configs = [json.dumps(t.params, sort_keys=True) for t in ran]
    assert len(set(configs)) == budget, configs


def test_a_resume_beside_a_live_driver_leaves_the_live_one_untouched(tmp_path, study_file, cli_environ, two_drivers):
    # trials of several seconds each (small batches: only the trials, not the prepare stage, take long), so the first
    # driver is still running when the second has started (3 epochs failed once under load: all 3 trials were done
    # before the second driver looked)
    space = _space(tmp_path)
    space.write_text(space.read_text() + '[params.batch_size]\ntype = "categorical"\nchoices = [4]\n')
    path = study_file("live", space=space, trials=3, epochs=10, early="none", n_samples=1000, check_seeds=0,
                      affinity_epochs=1)  # the second driver starts once trials run: the prepare stage can be short
    db = tmp_path / "runs" / "live" / "study.db"
    runs = ["--runs-root", str(tmp_path / "runs")]
    # the printed advice followed next to a live driver: its running trial used to be failed under it
    second, first_err = two_drivers(["run", str(path), "--backend", "local", *runs],
                                    ["run", str(path), "--backend", "local", "--resume", *runs], env=cli_environ,
                                    cwd=tmp_path, db=db, name="live")
    assert "Cannot tell" not in first_err and "closed as" not in first_err, first_err[-2000:]
    out = second.stdout + second.stderr
    assert "are running on a live driver" in out and "left to it" in out, out[-3000:]
    assert "marked FAIL" not in out, out[-3000:]  # nothing of the live driver was failed
    trials = optuna.load_study(study_name="live", storage=f"sqlite:///{db}").get_trials()
    check_budget(trials, 3)
    print("trial seconds:", [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials])


def test_two_drivers_started_together_on_a_new_study_share_it(tmp_path, study_file, cli_environ):
    path = study_file("twins", space=_space(tmp_path), trials=4, epochs=2, early="none", n_samples=300,
                      check_seeds=0)
    argv = [sys.executable, "-m", "taskgraph", "run", str(path), "--backend", "local", "--join", "--runs-root",
            str(tmp_path / "runs")]
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=cli_environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, (out + err)[-3000:]
    url = f"sqlite:///{tmp_path / 'runs' / 'twins' / 'study.db'}"
    assert optuna.get_all_study_names(storage=url) == ["twins"]
    study = optuna.load_study(study_name="twins", storage=url)
    check_budget(study.get_trials(), 4)
    assert [m.filename for m in get_all_artifact_meta(study)].count("groupings.json") == 1  # prepared once
    assert sum("waiting for the first driver" in err for _, err in outs) == 1  # the other one joined
