"""No replays, exact budgets: driver seeds, duplicate detection and skipped trials on a real SQLite study."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from taskgraph.runners.storage import (
    budget_ahead,
    count_finished,
    driver_seed,
    find_duplicate,
    record_failure,
    record_skip,
    recover_interrupted,
    state_counts,
    trial_id,
)
from taskgraph.search import SearchSpace

ROOT = Path(__file__).resolve().parents[3]
X = optuna.distributions.FloatDistribution(0, 1)


def test_driver_seed_is_the_study_seed_only_for_the_first_driver_of_a_new_study():
    assert driver_seed(3, n_trials=0) == 3
    seeds = {driver_seed(3, n_trials=n) for n in range(1, 50)} | {driver_seed(3, n_trials=4, nonce=k)
                                                                  for k in range(50)}
    assert len(seeds) == 99 and 3 not in seeds  # every resume and every joining driver: a seed of its own
    assert all(0 <= s < 2**32 for s in seeds)
    assert driver_seed(3, n_trials=4) == driver_seed(3, n_trials=4)  # a resume of a given storage is reproducible


def _draw(study, space, n):
    out = []
    for _ in range(n):
        t = study.ask()
        out.append(space.suggest(t, tasks=("a", "b"), groupings=("all-in-one", "single-task")))
        study.tell(t, 0.0)
    return out


def test_a_resumed_sampler_with_the_study_seed_replays_and_a_derived_seed_does_not(storage):
    space = SearchSpace.load(ROOT / "search_spaces" / "default.toml")
    first = _draw(optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.TPESampler(seed=0)),
                  space, 4)
    # the bug the issue measured: the same seed on resume draws TPE's start-up trials again
    replay = _draw(optuna.load_study(study_name="s", storage=storage, sampler=optuna.samplers.TPESampler(seed=0)),
                   space, 4)
    assert replay == first
    resumed = _draw(optuna.load_study(study_name="s", storage=storage,
                                      sampler=optuna.samplers.TPESampler(seed=driver_seed(0, n_trials=8))), space, 4)
    assert not [p for p in resumed if p in first + replay]


def test_budget_and_duplicates_ignore_skipped_and_interrupted_trials(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    done = study.ask({"x": X})
    study.tell(done, 1.0)
    failed = study.ask({"x": X})
    record_failure(failed, "TrainingDiverged: nan")
    study.tell(failed, state=TrialState.FAIL)
    running = study.ask({"x": X})
    assert count_finished(study) == 2 and budget_ahead(study) == 3
    assert budget_ahead(study, running.number) == 2  # what the trials before it hold

    again = study.ask({"x": X})
    params = {"x": done.params["x"]}
    storage.set_trial_param(trial_id(storage, "s", again.number), "x", X.to_internal_repr(params["x"]), X)
    assert find_duplicate(study, params, number=again.number) == done.number
    assert find_duplicate(study, {"x": running.params["x"]}, number=again.number) == running.number  # in flight
    record_skip(again, f"the sampler proposed trial {done.number}'s configuration again")
    t = study.get_trials()[again.number]
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("skipped: the sampler proposed")
    assert count_finished(study) == 2 and budget_ahead(study) == 3  # a skipped trial holds nothing
    assert find_duplicate(study, params, number=999) == done.number  # not the skipped copy
    assert state_counts(study.get_trials()) == {"COMPLETE": 1, "FAIL": 1, "RUNNING": 1, "SKIPPED": 1}

    time.sleep(1.1)  # a heartbeat interval: an unwatched RUNNING trial this old is taken for dead by a resume
    assert recover_interrupted(study, storage) == [running.number]  # its driver died
    assert budget_ahead(study) == 2
    assert find_duplicate(study, {"x": running.params["x"]}, number=999) is None  # its retry may run it
    retry = study.ask()  # the queued copy of the interrupted trial
    assert retry.suggest_float("x", 0, 1) == running.params["x"]
    assert find_duplicate(study, retry.params, number=retry.number) is None
