"""The local runner on PostgreSQL, through the CLI: two drivers on one study, a killed driver resumed.

Each test gets a database of its own on the suite's PostgreSQL (the ``postgres`` fixture: the server
``.ci/run`` starts, else a private cluster on 127.0.0.1); skipped, with the reason, where there is none.
"""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from taskgraph.runners.storage import SKIPPED, interrupted_numbers, open_storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _space(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[params.weighting]\ntype = "categorical"\nchoices = ["equal", "uncertainty"]\n'
                     '[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nlog = true\n')
    return space


def _configs(trials):
    return [json.dumps(t.params, sort_keys=True) for t in trials]


def test_two_drivers_on_one_postgresql_study_keep_the_budget_exact(tmp_path, postgres, study_file, cli_environ,
                                                                   two_drivers):
    url, _ = postgres
    path = study_file("pgpair", space=_space(tmp_path), trials=4, epochs=2, early="none", n_samples=300,
                      check_seeds=0)
    env = {**cli_environ, "TASKGRAPH_STORAGE": url}
    runs = ["--runs-root", str(tmp_path / "runs")]
    two_drivers(["run", str(path), "--backend", "local", *runs],
                ["run", str(path), "--backend", "local", "--join", *runs], env=env, cwd=tmp_path, db=url,
                name="pgpair")
    study = optuna.load_study(study_name="pgpair", storage=url)
    trials = study.get_trials()
    table = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    ran = [t for t in trials if not str(t.user_attrs.get("fail_reason", "")).startswith(SKIPPED)]
    assert len(ran) == 4 and all(t.state == TrialState.COMPLETE for t in ran), table  # exact, nothing lost
    assert len(set(_configs(ran))) == 4, _configs(ran)  # no configuration twice
    assert not interrupted_numbers(trials)
    # a whole study on PostgreSQL: named objective, prepared once, each trial's artifacts, heartbeats recorded
    assert study.metric_names == ["val_loss"] and study.user_attrs["prepared"] is True
    assert [m.filename for m in get_all_artifact_meta(study)].count("groupings.json") == 1
    storage = open_storage(url)
    for t in ran:
        assert sorted(m.filename for m in get_all_artifact_meta(t, storage=storage)) == \
            [f"trial{t.number}_grouping.json", f"trial{t.number}_per_task.csv"]
        assert t.system_attrs["taskgraph:heartbeat"] == 1  # watched by its driver's heartbeat (every 1 s here)


def test_a_killed_driver_on_postgresql_is_resumed_with_nothing_lost(tmp_path, postgres, study_file, cli,
                                                                    cli_environ, kill_mid_study):
    url, _ = postgres
    path = study_file("pgkilled", space=_space(tmp_path), trials=5, epochs=3, early="none", n_samples=600,
                      check_seeds=0)
    env = {**cli_environ, "TASKGRAPH_STORAGE": url}
    argv = ["run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs")]
    kill_mid_study(argv, env=env, cwd=tmp_path, db=url, name="pgkilled")

    before = optuna.load_study(study_name="pgkilled", storage=url).get_trials()
    done_before = {t.number: (t.state, t.values, t.params) for t in before if t.state in FINISHED}
    running = sorted(t.number for t in before if t.state == TrialState.RUNNING)
    assert running and done_before

    r = cli(*argv, "--resume", env=env, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    after = optuna.load_study(study_name="pgkilled", storage=url).get_trials()
    by_number = {t.number: t for t in after}
    for n, (state, values, params) in done_before.items():  # kept, unchanged
        assert (by_number[n].state, by_number[n].values, by_number[n].params) == (state, values, params)
    assert not [t for t in after if t.state == TrialState.RUNNING]
    assert sorted(interrupted_numbers(after)) == running  # failed by the heartbeat, retried
    counted = [t for t in after if t.state in FINISHED and t.number not in running
               and not str(t.user_attrs.get("fail_reason", "")).startswith(SKIPPED)]
    assert len(counted) == 5, [(t.number, t.state.name) for t in after]
    assert len(set(_configs(counted))) == 5, _configs(counted)
    retries = {t.user_attrs["retry_of"]: t for t in after if "retry_of" in t.user_attrs}
    assert sorted(retries) == [n for n in running if by_number[n].params]
    for n, t in retries.items():
        assert t.params == by_number[n].params
