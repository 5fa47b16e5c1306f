"""A local Ray started by the runner: preloaded workers, every epoch's value recorded from batched reports."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

pytest.importorskip("ray.tune")

_PROBE = """
import json, sys
from taskgraph.runners.ray_tune import PRELOAD_MODULES, init_ray
assert init_ray(num_cpus=1)
import ray

@ray.remote
def loaded():  # runs in a worker Ray booted; it imports nothing itself
    import sys
    return list(sys.modules)

mods = set(ray.get(loaded.remote(), timeout=120))
missing = [m for m in PRELOAD_MODULES if m not in mods]
print(json.dumps({"cpus": ray.cluster_resources().get("CPU"), "missing": missing}))
ray.shutdown()
"""


def test_a_local_ray_started_here_has_its_workers_import_torch_and_tune_before_any_work(local_ray_env):
    r = subprocess.run([sys.executable, "-c", _PROBE], env=local_ray_env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"cpus": 1.0, "missing": []}


@pytest.mark.parametrize("early", ["none", "asha"])
def test_run_with_a_local_ray_records_every_epoch_though_trials_report_only_at_rungs(tmp_path, study_file, cli,
                                                                                      local_ray_env, early):
    # about the trials' reports: no paired checks and 1 affinity epoch in the prepare stage (measured, under coverage:
    # the prepare stage of this study took 9 s with the default checks and 5 affinity epochs)
    path = study_file(f"local-ray-{early}", trials=4, epochs=5, early=early, check_seeds=0, affinity_epochs=1)
    r = cli("run", str(path), "--backend", "ray", "--runs-root", str(tmp_path / "runs"), env=local_ray_env,
            timeout=420)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "tensorboard" not in (r.stdout + r.stderr).lower()  # Tune's TensorBoard logger (and its hint) is off
    assert "Configuration for experiment" not in r.stdout and "Started a local Ray" not in r.stdout  # Ray: stderr
    # what the trials sent Tune (its result.json per trial): reports only at rungs and at the end, each
    # carrying the epochs since the one before
    sent = [[json.loads(line) for line in f.read_text().splitlines()] for f in (tmp_path / "runs").rglob("result.json")]
    assert len(sent) == 4
    for rows in sent:
        epochs = [row["epoch"] for row in rows]
        assert set(epochs) <= ({5} if early == "none" else {1, 2, 4, 5}), epochs
        assert [e for row in rows for e, _ in row["curve"]] == list(range(1, epochs[-1] + 1))
    db = next((tmp_path / "runs").rglob("*.db"))
    trials = optuna.load_study(study_name=f"local-ray-{early}", storage=f"sqlite:///{db}").get_trials()
    assert len(trials) == 4 and any(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        if t.state == TrialState.COMPLETE:  # one report (none) or reports at epochs 1, 2, 4 and 5 (asha, rf 2)
            assert sorted(t.intermediate_values) == [1, 2, 3, 4, 5], t.intermediate_values
        else:  # ASHA stopped it at a rung: every epoch up to there
            assert t.state == TrialState.PRUNED and early == "asha", t.state
            assert sorted(t.intermediate_values) in ([1], [1, 2], [1, 2, 3, 4]), t.intermediate_values
