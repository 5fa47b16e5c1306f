"""Resume and join without replays, through the CLI on a SQLite study: no configuration runs twice, budgets exact."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from taskgraph.runners.storage import interrupted_numbers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _counted(trials):
    """The trials that hold the budget: finished, neither skipped nor interrupted (a driver that died)."""
    gone = interrupted_numbers(trials)
    return [t for t in trials if t.state in FINISHED and t.number not in gone
            and not str(t.user_attrs.get("fail_reason", "")).startswith("skipped:")]


def _configs(trials):
    return [json.dumps(t.params, sort_keys=True) for t in trials]


def _space(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[params.weighting]\ntype = "categorical"\nchoices = ["equal", "uncertainty"]\n'
                     '[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nlog = true\n')
    return space


def test_resume_to_a_larger_budget_repeats_no_configuration(tmp_path, study_file, cli):
    path = study_file("grow", space=_space(tmp_path), trials=4, epochs=2, early="none", n_samples=300)
    runs = ["--runs-root", str(tmp_path / "runs")]
    r = cli("run", str(path), "--backend", "local", *runs, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    url = f"sqlite:///{tmp_path / 'runs' / 'grow' / 'study.db'}"
    first = optuna.load_study(study_name="grow", storage=url).get_trials()

    r = cli("run", str(path), "--backend", "local", "--resume", "--trials", "8", *runs, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "the sampler's seed is" in r.stderr and "does not replay" in r.stderr, r.stderr  # logs: stderr

    trials = optuna.load_study(study_name="grow", storage=url).get_trials()
    counted = _counted(trials)
    assert len(counted) == 8
    configs = _configs(counted)
    assert len(set(configs)) == len(configs), configs  # nothing replayed
    for before in first:  # the first run's trials are kept as they were
        assert (trials[before.number].params, trials[before.number].values) == (before.params, before.values)


def test_an_exhausted_space_stops_without_running_a_configuration_twice(tmp_path, study_file, cli):
    space = tmp_path / "small_space.toml"  # 2 x 2 = 4 configurations for a budget of 6
    space.write_text('[params.weighting]\ntype = "categorical"\nchoices = ["equal", "uncertainty"]\n'
                     '[params.lr]\ntype = "categorical"\nchoices = [0.001, 0.01]\n')
    path = study_file("small", space=space, trials=6, epochs=1, early="none", sampler="random", n_samples=300)
    r = cli("run", str(path), "--backend", "local", "--runs-root", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "search space looks exhausted" in r.stderr, r.stderr
    assert "4 COMPLETE" in r.stdout and " SKIPPED in " in r.stdout  # the summary counts skipped rows apart
    trials = optuna.load_study(study_name="small", storage=f"sqlite:///{tmp_path / 'runs/small/study.db'}").get_trials()
    counted = _counted(trials)
    assert sorted(_configs(counted)) == sorted(set(_configs(counted))) and len(counted) == 4
    skipped = [t for t in trials if str(t.user_attrs.get("fail_reason", "")).startswith("skipped:")]
    assert skipped and all("configuration again" in t.user_attrs["fail_reason"] for t in skipped)
    assert not [t for t in skipped if t.user_attrs.get("topology")]  # never started: no start attrs


def test_two_joined_drivers_keep_the_budget_exact_and_repeat_nothing(tmp_path, study_file, cli_environ, two_drivers):
    path = study_file("pair", space=_space(tmp_path), trials=6, epochs=2, early="none", n_samples=300)
    runs = ["--runs-root", str(tmp_path / "runs")]
    two_drivers(["run", str(path), "--backend", "local", *runs],
                ["run", str(path), "--backend", "local", "--join", *runs], env=cli_environ, cwd=tmp_path,
                db=tmp_path / "runs" / "pair" / "study.db", name="pair")
    trials = optuna.load_study(study_name="pair", storage=f"sqlite:///{tmp_path / 'runs/pair/study.db'}").get_trials()
    counted = _counted(trials)
    assert len(counted) == 6, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in counted)
    assert len(set(_configs(counted))) == 6
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    study = optuna.load_study(study_name="pair", storage=f"sqlite:///{tmp_path / 'runs/pair/study.db'}")
    assert [m.filename for m in get_all_artifact_meta(study)].count("groupings.json") == 1  # prepared once


def test_a_resumed_ray_driver_repeats_no_configuration(tmp_path, study_file, cli, ray_head):
    # on the suite's Ray head (a local Ray started by `run` is tested in test_search_ray_local.py): the resume is
    # what this test is about, not two more Ray startups
    path = study_file("rgrow", space=_space(tmp_path), trials=2, epochs=2, early="none", n_samples=300)
    runs = ["--runs-root", str(tmp_path / "runs"), "--address", ray_head["gcs"]]
    r = cli("run", str(path), "--backend", "ray", *runs, env=ray_head["env"], cwd=tmp_path, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = cli("run", str(path), "--backend", "ray", "--resume", "--trials", "4", *runs, env=ray_head["env"],
            cwd=tmp_path, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    trials = optuna.load_study(study_name="rgrow", storage=f"sqlite:///{tmp_path / 'runs/rgrow/study.db'}").get_trials()
    counted = _counted(trials)
    assert len(counted) == 4 and len(set(_configs(counted))) == 4, _configs(trials)
